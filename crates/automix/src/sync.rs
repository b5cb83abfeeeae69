//! Locks that survive a panic elsewhere.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m` even when a panic in another request poisoned it. Everything behind our locks is
/// plain data (counters, a histogram, the client slots, the online belief) that a panic cannot
/// leave half-updated in a way that matters; skipping the update instead (`lock().ok()`)
/// would silently stop metrics or freeze the belief on the offline table.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
