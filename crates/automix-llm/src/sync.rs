//! Locks that survive a panic elsewhere.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m` even when a panic in another request poisoned it. Everything behind our locks is
/// plain data (counters, a histogram, the client slots, the online belief) that a panic cannot
/// leave half-updated in a way that matters; skipping the update instead (`lock().ok()`)
/// would silently stop metrics or freeze the belief on the offline table.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `l` even when a panic elsewhere poisoned it (what is behind our `RwLock`s is only
/// ever replaced whole, so a poisoned one still holds a whole value).
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `l` even when a panic elsewhere poisoned it (see [`read`]).
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
