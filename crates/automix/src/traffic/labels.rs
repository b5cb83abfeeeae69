//! How a client's feedback reaches the shadow's rows. The shadow remembers its recent
//! routes (bounded, expiring like the router's route memory): a score that arrives while
//! the route is still being shadowed is applied before the row is written; one that
//! arrives after is appended as a correction that replaces the row when rows are read
//! ([`crate::dataset::settle_feedback`]).
//!
//! Precedence: the client's score beats the shadow's label (agreement or judge) for the
//! answer the client got. When that answer was the most expensive model's (the reference
//! the others were scored against), every score is scaled by it: agreeing with a reference
//! the client scored 0 is worth 0.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::dataset::{LabelSource, TrainingRow};
use crate::feedback::{FEEDBACK_WINDOW, REMEMBERED_ROUTES};

/// `row` with the client's `score` for `model`'s answer (see the module's precedence);
/// `None` when `model` has no answer in the row.
pub fn with_feedback(mut row: TrainingRow, model: &str, score: f64) -> Option<TrainingRow> {
    let at = row.models.iter().position(|m| m.model == model)?;
    if at + 1 == row.models.len() {
        for m in &mut row.models {
            m.score *= score;
        }
    } else {
        row.models[at].score = score;
    }
    row.label_source = LabelSource::Feedback;
    Some(row)
}

/// A shadowed route: still answering (with feedback that came early), or written.
#[derive(Debug)]
enum Entry {
    Pending(Option<(String, f64)>),
    Written(Box<TrainingRow>),
}

/// Recent shadowed routes by route id, bounded and expiring.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    by_route: HashMap<String, Entry>,
    order: VecDeque<(String, Instant)>,
}

impl Ledger {
    /// Route `route` is being shadowed.
    pub(crate) fn start(&mut self, route: &str, now: Instant) {
        self.forget_old(now);
        self.by_route.insert(route.to_owned(), Entry::Pending(None));
        self.order.push_back((route.to_owned(), now));
    }

    /// The shadow of `route` failed: a later score has no row to correct.
    pub(crate) fn abandon(&mut self, route: &str) {
        self.by_route.remove(route);
    }

    /// Route `route`'s row is ready: the row to write (with early feedback applied), which
    /// is remembered for a later correction.
    pub(crate) fn finish(&mut self, route: &str, row: TrainingRow) -> TrainingRow {
        let early = match self.by_route.get(route) {
            Some(Entry::Pending(f)) => f.clone(),
            _ => None,
        };
        let row = match early {
            Some((model, score)) => with_feedback(row.clone(), &model, score).unwrap_or(row),
            None => row,
        };
        if self.by_route.contains_key(route) {
            self.by_route
                .insert(route.to_owned(), Entry::Written(Box::new(row.clone())));
        }
        row
    }

    /// A client scored `model`'s answer of `route` (once; the router checked who): the
    /// correction row to append when the row was written already, else `None` (kept for
    /// the row, or no shadow of that route).
    pub(crate) fn feedback(&mut self, route: &str, model: &str, score: f64) -> Option<TrainingRow> {
        match self.by_route.get_mut(route)? {
            Entry::Pending(f) => {
                *f = Some((model.to_owned(), score));
                None
            }
            Entry::Written(row) => {
                let corrected = with_feedback((**row).clone(), model, score)?;
                **row = corrected.clone();
                Some(corrected)
            }
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((route, at)) = self.order.front() {
            let full = self.order.len() >= REMEMBERED_ROUTES;
            if !full && now.duration_since(*at) <= FEEDBACK_WINDOW {
                break;
            }
            self.by_route.remove(route);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ModelRun;

    fn row(scores: &[f64]) -> TrainingRow {
        let models = scores
            .iter()
            .enumerate()
            .map(|(i, s)| ModelRun {
                model: format!("m{i}"),
                score: *s,
                ..ModelRun::default()
            })
            .collect();
        TrainingRow {
            id: "q".into(),
            label_source: LabelSource::Agreement,
            models,
            ..TrainingRow::default()
        }
    }

    fn scores(r: &TrainingRow) -> Vec<f64> {
        r.models.iter().map(|m| m.score).collect()
    }

    #[test]
    fn feedback_on_a_small_answer_replaces_its_label_and_on_the_reference_scales_all() {
        let small = with_feedback(row(&[1.0, 0.0, 1.0]), "m0", 0.0).unwrap();
        assert_eq!(scores(&small), [0.0, 0.0, 1.0]);
        assert_eq!(small.label_source, LabelSource::Feedback);
        let reference = with_feedback(row(&[1.0, 0.0, 1.0]), "m2", 0.0).unwrap();
        assert_eq!(scores(&reference), [0.0, 0.0, 0.0]);
        let half = with_feedback(row(&[1.0, 0.5, 1.0]), "m2", 0.5).unwrap();
        assert_eq!(scores(&half), [0.5, 0.25, 0.5]);
        assert!(with_feedback(row(&[1.0, 1.0]), "other", 1.0).is_none());
    }

    #[test]
    fn early_feedback_is_applied_before_writing_and_late_feedback_is_a_correction() {
        let now = Instant::now();
        let mut ledger = Ledger::default();
        ledger.start("early", now);
        assert_eq!(ledger.feedback("early", "m0", 0.0), None);
        let written = ledger.finish("early", row(&[1.0, 1.0]));
        assert_eq!(scores(&written), [0.0, 1.0]);
        assert_eq!(written.label_source, LabelSource::Feedback);

        ledger.start("late", now);
        let written = ledger.finish("late", row(&[1.0, 1.0]));
        assert_eq!(written.label_source, LabelSource::Agreement);
        let fix = ledger.feedback("late", "m0", 0.0).unwrap();
        assert_eq!(scores(&fix), [0.0, 1.0]);

        ledger.start("failed", now);
        ledger.abandon("failed");
        assert_eq!(ledger.feedback("failed", "m0", 0.0), None);
        assert_eq!(ledger.feedback("never", "m0", 0.0), None);
    }

    #[test]
    fn old_routes_are_forgotten() {
        let now = Instant::now();
        let mut ledger = Ledger::default();
        ledger.start("old", now);
        ledger.finish("old", row(&[1.0, 1.0]));
        ledger.start(
            "new",
            now + FEEDBACK_WINDOW + std::time::Duration::from_secs(1),
        );
        assert_eq!(ledger.feedback("old", "m0", 0.0), None);
    }
}
