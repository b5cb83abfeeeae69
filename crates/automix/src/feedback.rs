//! Feedback on routed answers: the router remembers its recent routes (bounded, expiring) so
//! a client's score for an answer can be credited to the model that gave it, once.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use automix_core::belief::StepObservation;

/// Routes remembered at most (the oldest are forgotten first).
pub const REMEMBERED_ROUTES: usize = 10_000;

/// How long a route accepts feedback.
pub const FEEDBACK_WINDOW: Duration = Duration::from_secs(3600);

/// Why feedback was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedbackError {
    /// This router has no online belief to learn from.
    #[error("this server has no online belief to learn from (automix.online_belief is off)")]
    NoBelief,
    /// No such route, or it is older than the feedback window or was forgotten.
    #[error("no recent route has id {0:?} (unknown, or older than an hour)")]
    Unknown(String),
    /// The route was scored already.
    #[error("route {0:?} was scored already")]
    AlreadyScored(String),
    /// The score is not in [0, 1].
    #[error("score {0} is not in [0, 1]")]
    BadScore(f64),
}

/// One remembered route: the model whose answer the client got, and its verdict.
#[derive(Debug, Clone, Copy)]
struct Remembered {
    answered: StepObservation,
    at: Instant,
    scored: bool,
}

/// Recent routes by id, bounded and expiring.
#[derive(Debug, Default)]
pub struct RecentRoutes {
    by_id: HashMap<String, Remembered>,
    order: VecDeque<String>,
}

impl RecentRoutes {
    /// Remembers that route `id` kept the answer of `answered.model`, whose verdict was
    /// `answered.verdict`.
    pub fn remember(&mut self, id: String, answered: StepObservation, now: Instant) {
        while self.order.len() >= REMEMBERED_ROUTES {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        self.order.push_back(id.clone());
        self.by_id.insert(
            id,
            Remembered {
                answered,
                at: now,
                scored: false,
            },
        );
    }

    /// The observation a score of route `id` makes (its model's correctness), marking the
    /// route scored.
    pub fn score(
        &mut self,
        id: &str,
        score: f64,
        now: Instant,
    ) -> Result<StepObservation, FeedbackError> {
        if !(0.0..=1.0).contains(&score) {
            return Err(FeedbackError::BadScore(score));
        }
        let unknown = || FeedbackError::Unknown(id.to_owned());
        let route = self.by_id.get_mut(id).ok_or_else(unknown)?;
        if now.duration_since(route.at) > FEEDBACK_WINDOW {
            return Err(unknown());
        }
        if route.scored {
            return Err(FeedbackError::AlreadyScored(id.to_owned()));
        }
        route.scored = true;
        Ok(StepObservation {
            correct: Some(score >= automix_core::VERDICT_CUT),
            ..route.answered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_takes_one_score_within_the_window() {
        let mut recent = RecentRoutes::default();
        let t0 = Instant::now();
        let seen = StepObservation {
            model: 1,
            verdict: Some(true),
            correct: None,
        };
        recent.remember("a".into(), seen, t0);
        let o = recent.score("a", 0.0, t0).unwrap();
        assert_eq!(
            (o.model, o.verdict, o.correct),
            (1, Some(true), Some(false))
        );
        assert_eq!(
            recent.score("a", 1.0, t0),
            Err(FeedbackError::AlreadyScored("a".into()))
        );
        assert!(matches!(
            recent.score("b", 1.0, t0),
            Err(FeedbackError::Unknown(_))
        ));
        recent.remember("c".into(), seen, t0);
        let late = t0 + FEEDBACK_WINDOW + Duration::from_secs(1);
        assert!(matches!(
            recent.score("c", 1.0, late),
            Err(FeedbackError::Unknown(_))
        ));
        assert_eq!(
            recent.score("c", 1.5, t0),
            Err(FeedbackError::BadScore(1.5))
        );
    }

    #[test]
    fn the_oldest_routes_are_forgotten_first() {
        let mut recent = RecentRoutes::default();
        let t0 = Instant::now();
        let seen = StepObservation {
            model: 0,
            verdict: None,
            correct: None,
        };
        for i in 0..=REMEMBERED_ROUTES {
            recent.remember(i.to_string(), seen, t0);
        }
        assert!(matches!(
            recent.score("0", 1.0, t0),
            Err(FeedbackError::Unknown(_))
        ));
        assert!(recent.score("1", 1.0, t0).is_ok());
    }
}
