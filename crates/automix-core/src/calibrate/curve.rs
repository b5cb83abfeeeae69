//! Isotonic gain curves: rows grouped into confidence levels, pooled-adjacent-violators
//! fits, and per-task curves shrunk toward the pooled one.

use super::*;

/// Cells reduced to what the fit reads: a confidence level, a task id, in sorted orders.
pub(crate) struct GainCells {
    /// Known-confidence cells, sorted by (task, confidence).
    pub(crate) by_task: Vec<usize>,
    /// Known-confidence cells, sorted by confidence.
    pub(crate) by_level: Vec<usize>,
    /// Confidence per cell (NaN for an unknown one): where a curve is looked up for it.
    pub(crate) x: Vec<f64>,
    /// Level and raw confidence range per cell (`lo = hi = x` for a cell of raw rows).
    pub(crate) range: Vec<LevelRange>,
    pub(crate) task: Vec<u32>,
}

impl GainCells {
    /// The cells of `stats`; `ranges` are theirs when they are [`LevelGroups`], else every
    /// distinct confidence is its own level.
    pub(crate) fn new(stats: &Stats<'_>, ranges: Option<&[LevelRange]>) -> Self {
        let x: Vec<f64> = stats
            .keys
            .iter()
            .map(|k| k.known().unwrap_or(f64::NAN))
            .collect();
        let task: Vec<u32> = stats.keys.iter().map(|k| k.task).collect();
        let mut by_level: Vec<usize> = (0..x.len()).filter(|&c| !x[c].is_nan()).collect();
        by_level.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
        let range = match ranges {
            Some(r) => r.to_vec(),
            None => distinct_levels(&x, &by_level),
        };
        let mut by_task = by_level.clone();
        // Stable: within a task the cells stay in confidence order.
        by_task.sort_by_key(|&c| task[c]);
        Self {
            by_task,
            by_level,
            x,
            range,
            task,
        }
    }

    /// Rows with a known confidence in `sums`.
    pub(crate) fn known_rows(&self, sums: &[CellGain]) -> u64 {
        self.by_level.iter().map(|&c| sums[c].rows).sum()
    }

    /// Fits the model on the rows summed in `sums` (one entry per cell).
    pub(crate) fn fit(
        &self,
        sums: &[CellGain],
        names: &[String],
        kappa: Option<f64>,
    ) -> Option<GainModel> {
        let pooled = fit_curve(&aggregate(self.by_level.iter().copied(), self, sums))?;
        let mut tasks = BTreeMap::new();
        if let Some(kappa) = kappa {
            let mut start = 0;
            while start < self.by_task.len() {
                let t = self.task[self.by_task[start]];
                let end = start + self.by_task[start..].partition_point(|&c| self.task[c] == t);
                if let Some(name) = names.get(t as usize) {
                    let levels = aggregate(self.by_task[start..end].iter().copied(), self, sums);
                    if let Some(curve) = shrunk_curve(&levels, &pooled, kappa) {
                        tasks.insert(name.clone(), curve);
                    }
                }
                start = end;
            }
        }
        Some(GainModel { pooled, tasks })
    }

    pub(crate) fn predict(&self, model: &GainModel, names: &[String], cell: usize) -> f64 {
        let task = names.get(self.task[cell] as usize).map(String::as_str);
        model.gain(self.x[cell], task)
    }

    /// Each task id's curve in `model` (the pooled one where the task has none): what
    /// [`GainCells::predict`] looks up by name, looked up once per model.
    pub(crate) fn curves_by_task<'m>(
        &self,
        model: &'m GainModel,
        names: &[String],
    ) -> Vec<&'m GainCurve> {
        names
            .iter()
            .map(|name| model.tasks.get(name).unwrap_or(&model.pooled))
            .collect()
    }

    /// [`GainCells::predict`] with the curves of [`GainCells::curves_by_task`].
    pub(crate) fn predict_on(&self, curves: &[&GainCurve], pooled: &GainCurve, cell: usize) -> f64 {
        let curve = curves
            .get(self.task[cell] as usize)
            .copied()
            .unwrap_or(pooled);
        curve.at(self.x[cell])
    }
}

/// Each cell its own distinct confidence's level (`by_level`: the known cells in
/// confidence order); unknown cells get an empty NaN range.
fn distinct_levels(x: &[f64], by_level: &[usize]) -> Vec<LevelRange> {
    let mut range: Vec<LevelRange> = (x.iter())
        .map(|&x| LevelRange {
            level: u32::MAX,
            lo: x,
            hi: x,
        })
        .collect();
    let mut level = 0u32;
    for (i, &c) in by_level.iter().enumerate() {
        if i > 0 && x[c] != x[by_level[i - 1]] {
            level += 1;
        }
        range[c].level = level;
    }
    range
}

/// Rows pooled at one confidence level: `x` where the pooled curve is looked up for it,
/// `lo..=hi` the raw confidences it spans.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Level {
    pub(crate) x: f64,
    pub(crate) lo: f64,
    pub(crate) hi: f64,
    pub(crate) n: f64,
    pub(crate) gain_sum: f64,
}

/// Sums the gain per level of `cells` (given in confidence order); cells of other tasks or
/// answers at the same level pool into one.
pub(crate) fn aggregate(
    cells: impl Iterator<Item = usize>,
    g: &GainCells,
    sums: &[CellGain],
) -> Vec<Level> {
    let mut out: Vec<(u32, Level, u64, Sum)> = Vec::new();
    for c in cells.filter(|&c| sums[c].rows > 0) {
        let r = g.range[c];
        match out.last_mut() {
            Some((level, l, n, gain)) if *level == r.level => {
                l.lo = l.lo.min(r.lo);
                l.hi = l.hi.max(r.hi);
                *n += sums[c].rows;
                gain.merge(sums[c].gain());
            }
            _ => {
                let l = Level {
                    x: g.x[c],
                    lo: r.lo,
                    hi: r.hi,
                    n: 0.0,
                    gain_sum: 0.0,
                };
                out.push((r.level, l, sums[c].rows, sums[c].gain()));
            }
        }
    }
    out.into_iter()
        .map(|(_, l, n, gain)| Level {
            n: n as f64,
            gain_sum: gain.value(),
            ..l
        })
        .collect()
}

/// A block of pooled adjacent levels: weight, weighted sum, and the levels it spans.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pub(crate) weight: f64,
    pub(crate) sum: f64,
    pub(crate) first: usize,
    pub(crate) last: usize,
}

impl Block {
    pub(crate) fn mean(&self) -> f64 {
        self.sum / self.weight
    }
}

/// Pool-adjacent-violators for a non-increasing fit of `(weight, sum)` points in order.
pub(crate) fn pav(points: impl Iterator<Item = (f64, f64)>) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for (i, (weight, sum)) in points.enumerate() {
        blocks.push(Block {
            weight,
            sum,
            first: i,
            last: i,
        });
        while blocks.len() >= 2 {
            let (b, a) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
            if a.mean() >= b.mean() {
                break;
            }
            blocks.pop();
            let merged = blocks.last_mut().expect("two blocks were present");
            merged.weight += b.weight;
            merged.sum += b.sum;
            merged.last = b.last;
        }
    }
    blocks
}

/// The curve of `blocks` over `levels`, keeping only each block's lowest and highest raw
/// confidence: a confidence between them has the block's gain either way, and a continuous
/// signal would otherwise put every training row's confidence in the policy file. Raw ends
/// (not a pooled level's representative) keep a cut between two training confidences.
pub(crate) fn expand(blocks: &[Block], levels: &[Level]) -> GainCurve {
    let mut curve = GainCurve {
        levels: Vec::with_capacity(2 * blocks.len()),
        gains: Vec::with_capacity(2 * blocks.len()),
    };
    for b in blocks {
        let (lo, hi) = (levels[b.first].lo, levels[b.last].hi);
        let ends: &[f64] = if lo == hi { &[lo] } else { &[lo, hi] };
        for &x in ends {
            curve.levels.push(x);
            curve.gains.push(b.mean());
        }
    }
    curve
}

pub(crate) fn fit_curve(levels: &[Level]) -> Option<GainCurve> {
    if levels.is_empty() {
        return None;
    }
    let blocks = pav(levels.iter().map(|l| (l.n, l.gain_sum)));
    Some(expand(&blocks, levels))
}

/// A task's monotone fit with each block pulled toward the pooled curve by `kappa`
/// pseudo-rows, then made monotone again.
pub(crate) fn shrunk_curve(levels: &[Level], pooled: &GainCurve, kappa: f64) -> Option<GainCurve> {
    if levels.is_empty() {
        return None;
    }
    let blocks = pav(levels.iter().map(|l| (l.n, l.gain_sum)));
    let shrunk = blocks.iter().map(|b| {
        let span = &levels[b.first..=b.last];
        let reference = span.iter().map(|l| l.n * pooled.at(l.x)).sum::<f64>() / b.weight;
        (b.weight + kappa, b.sum + kappa * reference)
    });
    let merged = pav(shrunk);
    // Blocks of blocks: map back to level indices.
    let blocks: Vec<Block> = merged
        .iter()
        .map(|m| Block {
            first: blocks[m.first].first,
            last: blocks[m.last].last,
            ..*m
        })
        .collect();
    Some(expand(&blocks, levels))
}
