//! Trained decision rules: what a policy evaluates at inference. Each is a few
//! comparisons or one table lookup.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compat::py_nearest_index;
use crate::confidence::{Bins, Confidence};
use crate::error::{CoreError, Result};

/// How a confidence picks a slot of a per-bin decision table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TableLookup {
    /// [`Bins::index`]: nearest grid point, exact for k votes.
    Nearest {
        /// `num_bins`.
        num_bins: usize,
    },
    /// The paper code's `get_neearest_prob_idx`, whose `int(g // gap)` maps some grid
    /// points to the slot below (e.g. `1.0 → 9` for 10 bins). Kept so paper-method
    /// policies decide exactly as the Python code does.
    PaperNearest {
        /// `num_bins`.
        num_bins: usize,
    },
}

impl TableLookup {
    #[inline]
    fn slot(self, p: Confidence) -> Option<usize> {
        match self {
            Self::Nearest { num_bins } => Bins::new(num_bins).ok().map(|b| b.index(p)),
            Self::PaperNearest { num_bins } => py_nearest_index(p.get(), num_bins),
        }
    }
}

/// The trained parameters of a meta-verifier, in a form that decides directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum DecisionRule {
    /// Escalate when `p <= threshold` (Threshold, SelfConsistency).
    Threshold {
        /// The threshold.
        threshold: f64,
    },
    /// Escalate when `low <= p <= high` (DoubleThreshold).
    Band {
        /// Lower edge, inclusive.
        low: f64,
        /// Upper edge, inclusive.
        high: f64,
    },
    /// Escalate when `p <= first` or `second <= p <= third` (TripleThreshold).
    TwoBands {
        /// Upper edge of `[0, first]`.
        first: f64,
        /// Lower edge of the second band.
        second: f64,
        /// Upper edge of the second band.
        third: f64,
    },
    /// A per-bin table (POMDPSimple, GreedyPOMDP, exact POMDP).
    Table {
        /// `true` = escalate, one entry per bin.
        escalate: Vec<bool>,
        /// How confidence selects an entry.
        lookup: TableLookup,
    },
    /// Per-task tables (exact POMDP with task priors); tasks not seen in training use `default`.
    TaskTables {
        /// Table for unseen or missing tasks (global prior).
        default: Vec<bool>,
        /// Table per task name.
        tasks: BTreeMap<String, Vec<bool>>,
        /// How confidence selects an entry.
        lookup: TableLookup,
    },
    /// A confidence cut per task (Calibrated): escalate when `p < cut`. A cut of 0 never
    /// escalates; a cut above 1 escalates every known confidence.
    TaskCuts {
        /// Cut for unseen or missing tasks (the pooled curve).
        default: f64,
        /// Cut per task name.
        #[serde(default)]
        tasks: BTreeMap<String, f64>,
    },
}

/// Steps of the grid [`DecisionRule::switch_points`] scans.
pub const SWITCH_GRID: usize = 1000;

/// Most bins a table lookup may have: a hand-edited policy with more is refused at load.
pub const MAX_TABLE_BINS: usize = 1024;

impl TableLookup {
    fn num_bins(self) -> usize {
        match self {
            Self::Nearest { num_bins } | Self::PaperNearest { num_bins } => num_bins,
        }
    }
}

impl DecisionRule {
    /// Checks that the rule can decide every confidence: tables as long as their lookup's
    /// bins (1..=[`MAX_TABLE_BINS`]), thresholds and cuts finite. A policy file failing this
    /// is refused at load instead of deciding on a silently short table.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(CoreError::InvalidParameter {
                name: "rule",
                reason,
            })
        };
        let finite = |what: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                bad(format!("{what} is {v}, expected a finite number"))
            }
        };
        let table = |what: &str, t: &[bool], lookup: TableLookup| {
            let n = lookup.num_bins();
            if !(1..=MAX_TABLE_BINS).contains(&n) {
                return bad(format!(
                    "lookup num_bins {n} is outside 1..={MAX_TABLE_BINS}"
                ));
            }
            if t.len() != n + 1 {
                return bad(format!(
                    "{what} has {} entries, num_bins {n} needs {}",
                    t.len(),
                    n + 1
                ));
            }
            Ok(())
        };
        match self {
            Self::Threshold { threshold } => finite("threshold", *threshold),
            Self::Band { low, high } => finite("low", *low).and(finite("high", *high)),
            Self::TwoBands {
                first,
                second,
                third,
            } => finite("first", *first)
                .and(finite("second", *second))
                .and(finite("third", *third)),
            Self::Table { escalate, lookup } => table("table", escalate, *lookup),
            Self::TaskTables {
                default,
                tasks,
                lookup,
            } => {
                table("default table", default, *lookup)?;
                tasks
                    .iter()
                    .try_for_each(|(t, v)| table(&format!("table of task {t:?}"), v, *lookup))
            }
            Self::TaskCuts { default, tasks } => {
                finite("default cut", *default)?;
                tasks
                    .iter()
                    .try_for_each(|(t, c)| finite(&format!("cut of task {t:?}"), *c))
            }
        }
    }

    /// Whether to escalate at confidence `p` for `task`.
    #[inline]
    pub fn escalates(&self, p: Confidence, task: Option<&str>) -> bool {
        let x = p.get();
        match self {
            Self::Threshold { threshold } => x <= *threshold,
            Self::Band { low, high } => *low <= x && x <= *high,
            Self::TwoBands {
                first,
                second,
                third,
            } => x <= *first || (*second <= x && x <= *third),
            Self::Table { escalate, lookup } => table_escalates(escalate, *lookup, p),
            Self::TaskTables {
                default,
                tasks,
                lookup,
            } => {
                let table = task.and_then(|t| tasks.get(t)).unwrap_or(default);
                table_escalates(table, *lookup, p)
            }
            Self::TaskCuts { default, tasks } => {
                x < *task.and_then(|t| tasks.get(t)).unwrap_or(default)
            }
        }
    }

    /// The tasks with a rule of their own (per-task cuts or tables), in name order.
    pub fn tasks(&self) -> Vec<&str> {
        match self {
            Self::TaskTables { tasks, .. } => tasks.keys().map(String::as_str).collect(),
            Self::TaskCuts { tasks, .. } => tasks.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The confidences in [0, 1] where the decision for `task` flips between keep and
    /// escalate, found on a grid of [`SWITCH_GRID`] steps (so exact to 1/`SWITCH_GRID`):
    /// what a chart of verifier scores marks as the policy's cuts. One scan serves every
    /// rule kind, so no rule's geometry is written out twice.
    pub fn switch_points(&self, task: Option<&str>) -> Vec<f64> {
        let at = |i: usize| {
            let p = i as f64 / SWITCH_GRID as f64;
            Confidence::new(p).map(|c| self.escalates(c, task))
        };
        let mut points = Vec::new();
        let mut previous = at(0);
        for i in 1..=SWITCH_GRID {
            let now = at(i);
            if let (Ok(a), Ok(b)) = (&previous, &now)
                && a != b
            {
                points.push(i as f64 / SWITCH_GRID as f64);
            }
            previous = now;
        }
        points
    }

    /// A short human-readable form, for tables and logs.
    pub fn describe(&self) -> String {
        let bits = |t: &[bool]| {
            t.iter()
                .map(|&e| if e { '1' } else { '0' })
                .collect::<String>()
        };
        match self {
            Self::Threshold { threshold } => format!("escalate if p <= {threshold}"),
            Self::Band { low, high } => format!("escalate if {low} <= p <= {high}"),
            Self::TwoBands {
                first,
                second,
                third,
            } => {
                format!("escalate if p <= {first} or {second} <= p <= {third}")
            }
            Self::Table { escalate, .. } => format!("table {}", bits(escalate)),
            Self::TaskTables { default, tasks, .. } => {
                format!("table {} (+{} task tables)", bits(default), tasks.len())
            }
            Self::TaskCuts { default, tasks } if tasks.is_empty() => {
                format!("escalate if p < {default:.4}")
            }
            Self::TaskCuts { default, tasks } => {
                let per: Vec<String> = tasks.iter().map(|(t, c)| format!("{t} {c:.3}")).collect();
                format!(
                    "escalate if p < {default:.4} (per task: {})",
                    per.join(", ")
                )
            }
        }
    }
}

#[inline]
fn table_escalates(table: &[bool], lookup: TableLookup, p: Confidence) -> bool {
    // A validated confidence always has a slot; a table shorter than the bins (a
    // hand-edited policy) escalates rather than guessing: escalating is the safe side.
    lookup
        .slot(p)
        .and_then(|i| table.get(i).copied())
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_points_mark_where_each_rule_flips() {
        let threshold = DecisionRule::Threshold { threshold: 0.25 };
        // Escalates at p <= 0.25: the first grid point that keeps is 0.251.
        assert_eq!(threshold.switch_points(None), vec![0.251]);
        let band = DecisionRule::Band {
            low: 0.3,
            high: 0.6,
        };
        assert_eq!(band.switch_points(None), vec![0.3, 0.601]);
        let cuts = DecisionRule::TaskCuts {
            default: 0.5,
            tasks: BTreeMap::from([("qa".to_owned(), 0.8)]),
        };
        assert_eq!(cuts.tasks(), vec!["qa"]);
        assert_eq!(cuts.switch_points(None), vec![0.5]);
        assert_eq!(cuts.switch_points(Some("qa")), vec![0.8]);
        let never = DecisionRule::TaskCuts {
            default: 0.0,
            tasks: BTreeMap::new(),
        };
        assert!(never.switch_points(None).is_empty());
    }
}
