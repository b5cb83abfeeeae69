//! How much one tenant may teach the shared belief: a rate limit on feedback requests and a
//! cap on the scores any one key folds into the belief per window.
//!
//! Why both: the rate limit stops a flood (and the store writes it causes); the cap bounds
//! what a patient tenant can steer. Without the cap, one key scoring all of its own
//! completions 0 at an allowed rate moves the table every other tenant routes with. The
//! state is per tenant id (bounded by the configured key list), never per raw token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use automix::sync::lock;

/// The limits, as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedbackLimitSettings {
    /// Feedback requests per minute per key (a token bucket of this size refilled
    /// continuously); 0 turns feedback off for client keys.
    pub per_minute: u32,
    /// Scores one key may fold into the belief per [`Self::window`]; past it, 429.
    pub weight_per_window: u32,
    /// The window of [`Self::weight_per_window`].
    pub window: Duration,
}

impl Default for FeedbackLimitSettings {
    fn default() -> Self {
        Self {
            per_minute: 60,
            weight_per_window: 100,
            window: Duration::from_secs(3600),
        }
    }
}

/// A refusal: which limit, and how long until it clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many feedback requests.
    Rate {
        /// Until a request is allowed again.
        retry_after: Duration,
    },
    /// This key's scores for the window are used up.
    Weight {
        /// Until the window resets.
        retry_after: Duration,
    },
}

#[derive(Debug)]
struct TenantBudget {
    tokens: f64,
    refilled: Instant,
    window_start: Instant,
    counted: u32,
}

/// Per-tenant feedback budgets.
#[derive(Debug, Default)]
pub struct FeedbackLimits {
    settings: FeedbackLimitSettings,
    tenants: Mutex<HashMap<String, TenantBudget>>,
}

impl FeedbackLimits {
    /// Budgets under `settings`.
    pub fn new(settings: FeedbackLimitSettings) -> Self {
        Self {
            settings,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, tenant: &str, now: Instant, f: impl FnOnce(&mut TenantBudget) -> T) -> T {
        let mut map = lock(&self.tenants);
        let budget = map
            .entry(tenant.to_owned())
            .or_insert_with(|| TenantBudget {
                tokens: f64::from(self.settings.per_minute),
                refilled: now,
                window_start: now,
                counted: 0,
            });
        f(budget)
    }

    /// Takes one feedback request from `tenant`'s bucket.
    pub fn request(&self, tenant: &str, now: Instant) -> Result<(), Refusal> {
        let capacity = f64::from(self.settings.per_minute);
        let per_second = capacity / 60.0;
        self.with(tenant, now, |b| {
            let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
            b.tokens = (b.tokens + elapsed * per_second).min(capacity);
            b.refilled = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return Ok(());
            }
            let wait = if per_second > 0.0 {
                Duration::from_secs_f64((1.0 - b.tokens) / per_second)
            } else {
                self.settings.window
            };
            Err(Refusal::Rate { retry_after: wait })
        })
    }

    /// Counts one score of `tenant` into its window, or refuses it past the cap.
    pub fn weigh(&self, tenant: &str, now: Instant) -> Result<(), Refusal> {
        let window = self.settings.window;
        self.with(tenant, now, |b| {
            if now.saturating_duration_since(b.window_start) >= window {
                b.window_start = now;
                b.counted = 0;
            }
            if b.counted >= self.settings.weight_per_window {
                let reset = b.window_start + window;
                return Err(Refusal::Weight {
                    retry_after: reset.saturating_duration_since(now),
                });
            }
            b.counted += 1;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_and_says_how_long_to_wait() {
        let limits = FeedbackLimits::new(FeedbackLimitSettings {
            per_minute: 2,
            ..FeedbackLimitSettings::default()
        });
        let t0 = Instant::now();
        assert!(limits.request("a", t0).is_ok());
        assert!(limits.request("a", t0).is_ok());
        let Err(Refusal::Rate { retry_after }) = limits.request("a", t0) else {
            panic!("a third request in the same instant passed")
        };
        assert!(
            (29..=30).contains(&retry_after.as_secs()),
            "{retry_after:?}"
        );
        assert!(
            limits.request("b", t0).is_ok(),
            "tenants have their own buckets"
        );
        assert!(limits.request("a", t0 + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn the_weight_cap_holds_for_its_window_then_resets() {
        let limits = FeedbackLimits::new(FeedbackLimitSettings {
            weight_per_window: 3,
            window: Duration::from_secs(60),
            ..FeedbackLimitSettings::default()
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limits.weigh("a", t0).is_ok());
        }
        assert_eq!(
            limits.weigh("a", t0 + Duration::from_secs(20)),
            Err(Refusal::Weight {
                retry_after: Duration::from_secs(40)
            })
        );
        assert!(limits.weigh("a", t0 + Duration::from_secs(60)).is_ok());
    }
}
