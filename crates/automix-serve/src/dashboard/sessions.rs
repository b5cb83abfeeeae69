//! Dashboard login sessions: random 128-bit tokens (never a key) with a fixed lifetime, at
//! most [`MAX_SESSIONS`] at once (a new login evicts the oldest).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use automix::sync::lock;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "automix_dashboard";

/// How long a session lasts.
pub(crate) const TTL: Duration = Duration::from_secs(8 * 3600);

/// Most sessions at once.
const MAX_SESSIONS: usize = 64;

/// Open sessions: token → when it was opened.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// Opens a session and returns its token.
    pub(crate) fn open(&self) -> String {
        let token = format!("{:032x}", rand::random::<u128>());
        let mut open = lock(&self.open);
        open.retain(|_, at| at.elapsed() < TTL);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, _)| t.clone())
        {
            open.remove(&oldest);
        }
        open.insert(token.clone(), Instant::now());
        token
    }

    /// Whether `token` names a live session.
    pub(crate) fn valid(&self, token: Option<&str>) -> bool {
        let Some(token) = token else { return false };
        lock(&self.open)
            .get(token)
            .is_some_and(|at| at.elapsed() < TTL)
    }

    /// Ends the session `token`.
    pub(crate) fn close(&self, token: &str) {
        lock(&self.open).remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_bounded_and_closable() {
        let s = Sessions::default();
        let a = s.open();
        let b = s.open();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(s.valid(Some(&a)));
        assert!(!s.valid(Some("nope")));
        assert!(!s.valid(None));
        s.close(&a);
        assert!(!s.valid(Some(&a)));
        for _ in 0..MAX_SESSIONS + 5 {
            s.open();
        }
        assert_eq!(lock(&s.open).len(), MAX_SESSIONS);
    }
}
