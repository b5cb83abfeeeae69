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
    /// This router learns from no feedback: no online belief, no shadow rows.
    #[error(
        "this server learns from no feedback (automix.online_belief and automix.shadow are off)"
    )]
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

/// Who sends a score: the tenant that made the completion may score it; an operator
/// (admin key) may score any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scorer<'a> {
    /// A client, by its tenant id (what [`crate::RouteOptions::tenant`] was for the route).
    Tenant(Option<&'a str>),
    /// An operator: may score any route.
    Admin,
}

/// Why [`crate::Router::feedback`] did not credit a score: the route memory's reason, or the
/// caller's own admission check (a quota) refusing it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedbackRefused<E> {
    /// The route memory refused it.
    #[error(transparent)]
    Route(#[from] FeedbackError),
    /// The caller's admission check refused it; the route keeps its one score.
    #[error("feedback not admitted")]
    Admission(E),
}

/// A score [`crate::Router::feedback`] took: the model whose answer it scored, the score,
/// and whether the online belief learnt from it (the shadow's rows may too).
#[derive(Debug, Clone, PartialEq)]
pub struct Credit {
    /// The model whose answer the client got (`None`: not among the router's models).
    pub model: Option<String>,
    /// The client's score, in [0, 1].
    pub score: f64,
    /// Whether an online belief folded it in.
    pub belief: bool,
}

/// One remembered route: the model whose answer the client got, its verdict, and the
/// tenant that made it.
#[derive(Debug, Clone)]
struct Remembered {
    answered: StepObservation,
    tenant: Option<String>,
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
    /// Remembers that route `id`, made by `tenant`, kept the answer of `answered.model`,
    /// whose verdict was `answered.verdict`.
    pub fn remember(
        &mut self,
        id: String,
        tenant: Option<String>,
        answered: StepObservation,
        now: Instant,
    ) {
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
                tenant,
                at: now,
                scored: false,
            },
        );
    }

    /// The observation a score of route `id` by `by` makes (its model's correctness),
    /// marking the route scored. Another tenant's route is [`FeedbackError::Unknown`], the
    /// same answer as an id that never existed: the reply is no oracle for others' ids.
    pub fn score(
        &mut self,
        id: &str,
        score: f64,
        by: Scorer<'_>,
        now: Instant,
    ) -> Result<StepObservation, FeedbackError> {
        if !(0.0..=1.0).contains(&score) {
            return Err(FeedbackError::BadScore(score));
        }
        let unknown = || FeedbackError::Unknown(id.to_owned());
        let route = self.by_id.get_mut(id).ok_or_else(unknown)?;
        let allowed = match by {
            Scorer::Admin => true,
            Scorer::Tenant(t) => t == route.tenant.as_deref(),
        };
        if !allowed || now.duration_since(route.at) > FEEDBACK_WINDOW {
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

    /// Un-marks route `id` as scored: a score refused after the lookup (a quota) must not
    /// use up the route's one score.
    pub fn unscore(&mut self, id: &str) {
        if let Some(route) = self.by_id.get_mut(id) {
            route.scored = false;
        }
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
        let me = Scorer::Tenant(Some("k1"));
        recent.remember("a".into(), Some("k1".into()), seen, t0);
        assert!(matches!(
            recent.score("a", 0.0, Scorer::Tenant(Some("k2")), t0),
            Err(FeedbackError::Unknown(_))
        ));
        let o = recent.score("a", 0.0, me, t0).unwrap();
        assert_eq!(
            (o.model, o.verdict, o.correct),
            (1, Some(true), Some(false))
        );
        assert_eq!(
            recent.score("a", 1.0, me, t0),
            Err(FeedbackError::AlreadyScored("a".into()))
        );
        assert!(matches!(
            recent.score("b", 1.0, me, t0),
            Err(FeedbackError::Unknown(_))
        ));
        recent.remember("c".into(), Some("k1".into()), seen, t0);
        let late = t0 + FEEDBACK_WINDOW + Duration::from_secs(1);
        assert!(matches!(
            recent.score("c", 1.0, Scorer::Admin, late),
            Err(FeedbackError::Unknown(_))
        ));
        assert_eq!(
            recent.score("c", 1.5, me, t0),
            Err(FeedbackError::BadScore(1.5))
        );
        assert!(recent.score("c", 1.0, Scorer::Admin, t0).is_ok());
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
            recent.remember(i.to_string(), None, seen, t0);
        }
        let anyone = Scorer::Tenant(None);
        assert!(matches!(
            recent.score("0", 1.0, anyone, t0),
            Err(FeedbackError::Unknown(_))
        ));
        assert!(recent.score("1", 1.0, anyone, t0).is_ok());
    }
}
