//! The cost–quality plot of `automix eval`: every method, the baselines, the oracle, the
//! default method's λ sweep and the frontier; and the cascade's frontier. PNG and SVG.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

use automix::cascade::CascadeReport;
use automix::evaluate::EvalReport;

/// What one plot shows: named points, the policy family's sweep and the frontier.
struct PlotData {
    title: String,
    /// (name, cost, quality, colour).
    points: Vec<(String, f64, f64, RGBColor)>,
    sweep: Vec<(f64, f64)>,
    frontier: Vec<(f64, f64)>,
}

/// Writes `<stem>.png` and `<stem>.svg` of the two-model evaluation.
pub fn cost_quality(report: &EvalReport, stem: &Path) -> Result<()> {
    cost_quality_labels(report, stem).map(drop)
}

/// [`cost_quality`], returning where the PNG's point labels went.
fn cost_quality_labels(report: &EvalReport, stem: &Path) -> Result<Vec<LabelBox>> {
    let points = report
        .lines
        .iter()
        .filter(|l| l.cost.is_finite() && l.quality.is_finite())
        .map(|l| {
            let colour = match l.name.as_str() {
                "always-small" | "always-large" => BLACK,
                "oracle" => GREEN,
                _ => RED,
            };
            (l.name.clone(), l.cost, l.quality, colour)
        })
        .collect();
    let data = PlotData {
        title: format!(
            "{} → {}: cost vs quality",
            report.small_model, report.large_model
        ),
        points,
        sweep: report.sweep.iter().map(|p| (p.cost, p.quality)).collect(),
        frontier: report
            .frontier
            .iter()
            .map(|p| (p.cost, p.quality))
            .collect(),
    };
    write_both(&data, stem)
}

/// Writes `<stem>.png` and `<stem>.svg` of the cascade: its λ sweep, every fixed model,
/// the threshold rule, the trained cascade, the oracle and the frontier.
pub fn cascade_frontier(report: &CascadeReport, stem: &Path) -> Result<()> {
    cascade_frontier_labels(report, stem).map(drop)
}

/// [`cascade_frontier`], returning where the PNG's point labels went.
fn cascade_frontier_labels(report: &CascadeReport, stem: &Path) -> Result<Vec<LabelBox>> {
    let points = report
        .lines
        .iter()
        .map(|l| {
            let colour = if l.name.starts_with("only ") {
                BLACK
            } else if l.name == "oracle" {
                GREEN
            } else {
                RED
            };
            (l.name.clone(), l.cost, l.quality, colour)
        })
        .collect();
    let data = PlotData {
        title: format!("cascade {}: cost vs quality", report.models.join(" → ")),
        points,
        sweep: report.sweep.iter().map(|p| (p.cost, p.quality)).collect(),
        frontier: report
            .frontier
            .iter()
            .map(|p| (p.cost, p.quality))
            .collect(),
    };
    write_both(&data, stem)
}

/// Registers the bundled DejaVu Sans as plotters' "sans-serif" (its font table is
/// process-wide by design); the PNG needs no system font.
fn bundled_font() -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow!("the bundled DejaVu Sans font did not load"))
}

/// Draws `data` as PNG and SVG; the PNG's label boxes.
fn write_both(data: &PlotData, stem: &Path) -> Result<Vec<LabelBox>> {
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    bundled_font()?;
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let labels = {
        let root = BitMapBackend::new(&png, (900, 600)).into_drawing_area();
        let labels = draw(data, &root)?;
        root.present()
            .map_err(|e| anyhow!("{}: {e}", png.display()))?;
        labels
    };
    let root = SVGBackend::new(&svg, (900, 600)).into_drawing_area();
    draw(data, &root)?;
    root.present()
        .map_err(|e| anyhow!("{}: {e}", svg.display()))?;
    Ok(labels)
}

fn draw<DB: DrawingBackend>(data: &PlotData, root: &DrawingArea<DB, Shift>) -> Result<Vec<LabelBox>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let points: Vec<(f64, f64)> = data
        .points
        .iter()
        .map(|p| (p.1, p.2))
        .chain(data.sweep.iter().copied())
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in &points {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if points.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad_x = ((x1 - x0) * 0.08).max(1e-9);
    let pad_y = ((y1 - y0) * 0.1).max(0.01);
    let mut builder = ChartBuilder::on(root);
    builder
        .margin(20)
        .caption(data.title.clone(), ("sans-serif", 22))
        .x_label_area_size(40)
        .y_label_area_size(60);
    let mut chart = builder
        .build_cartesian_2d((x0 - pad_x)..(x1 + pad_x), (y0 - pad_y)..(y1 + pad_y))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("mean cost per query")
        .y_desc("mean quality")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(LineSeries::new(data.frontier.clone(), BLUE.stroke_width(2)))
        .map_err(|e| anyhow!("{e}"))?
        .label("frontier (upper convex hull)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(
            data.sweep
                .iter()
                .map(|&p| Circle::new(p, 3, BLUE.mix(0.4).filled())),
        )
        .map_err(|e| anyhow!("{e}"))?
        .label("λ sweep of the trained family")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, BLUE.mix(0.4).filled()));
    for (legend, colour) in [
        ("methods, rules, the trained policy", RED),
        ("fixed models", BLACK),
        ("oracle", GREEN),
    ] {
        let points: Vec<(f64, f64)> = data
            .points
            .iter()
            .filter(|p| p.3 == colour)
            .map(|p| (p.1, p.2))
            .collect();
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Cross::new(p, 6, colour.stroke_width(2))),
            )
            .map_err(|e| anyhow!("{e}"))?
            .label(legend)
            .legend(move |(x, y)| Cross::new((x + 10, y), 5, colour.stroke_width(2)));
    }
    let labels = draw_labels(data, &chart, root)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(labels)
}

/// The point labels in pixels: points that coincide on the picture share one label, and
/// each label goes where it overlaps no other label nor marker (nor leaves the picture).
fn draw_labels<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    data: &PlotData,
    chart: &ChartContext<'_, DB, CT>,
    root: &DrawingArea<DB, Shift>,
) -> Result<Vec<LabelBox>>
where
    DB::ErrorType: 'static,
{
    let anchors: Vec<((i32, i32), String)> =
        coincident_labels(&data.points, |p| chart.plotting_area().map_coordinate(&p));
    let font: TextStyle<'_> = ("sans-serif", 12).into();
    let sized: Vec<Anchor> = anchors
        .into_iter()
        .map(|(at, text)| {
            let (w, h) = root
                .estimate_text_size(&text, &font)
                .unwrap_or((text.len() as u32 * 7, 12));
            Anchor {
                at,
                size: (w as i32, h as i32),
                text,
            }
        })
        .collect();
    let (width, height) = root.dim_in_pixel();
    let labels = place_labels(&sized, (width as i32, height as i32));
    for label in &labels {
        root.draw(&Text::new(
            label.text.clone(),
            (label.x, label.y),
            font.clone(),
        ))
        .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(labels)
}

/// Points closer than this on the picture (pixels) share one label.
const SAME_PLACE_PX: i32 = 4;

/// The points' names joined per place on the picture (`to_px` maps a point to pixels),
/// in order: points within [`SAME_PLACE_PX`] of each other get one label naming them all.
fn coincident_labels(
    points: &[(String, f64, f64, RGBColor)],
    to_px: impl Fn((f64, f64)) -> (i32, i32),
) -> Vec<((i32, i32), String)> {
    let mut out: Vec<((i32, i32), String)> = Vec::new();
    for (name, cost, quality, _) in points {
        let (x, y) = to_px((*cost, *quality));
        match out
            .iter_mut()
            .find(|((a, b), _)| (a - x).abs() <= SAME_PLACE_PX && (b - y).abs() <= SAME_PLACE_PX)
        {
            Some((_, names)) => {
                names.push_str(", ");
                names.push_str(name);
            }
            None => out.push(((x, y), name.clone())),
        }
    }
    out
}

/// A label to place: the point it names (pixels), its text's size and the text.
#[derive(Debug, Clone)]
struct Anchor {
    at: (i32, i32),
    size: (i32, i32),
    text: String,
}

/// A placed label: its top-left corner and size in pixels.
#[derive(Debug, Clone, PartialEq)]
struct LabelBox {
    x: i32,
    y: i32,
    w: i32,
    h: i32,
    text: String,
}

impl LabelBox {
    fn overlaps(&self, o: &LabelBox) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

/// Places each label next to its point, clear of every point's marker: the first of a ring of positions (right, left,
/// above, below, then the same further out) that overlaps no label already placed and
/// stays inside `area`; a label with no free place goes below every other one at its x,
/// so that no two labels ever overlap.
fn place_labels(anchors: &[Anchor], area: (i32, i32)) -> Vec<LabelBox> {
    const GAP: i32 = 6;
    // Every point's marker is an obstacle too (a label never covers a cross).
    let markers: Vec<LabelBox> = anchors
        .iter()
        .map(|a| LabelBox {
            x: a.at.0 - 7,
            y: a.at.1 - 7,
            w: 14,
            h: 14,
            text: String::new(),
        })
        .collect();
    let mut placed: Vec<LabelBox> = Vec::new();
    for a in anchors {
        let ((px, py), (w, h)) = (a.at, a.size);
        let candidates = (1..=6).flat_map(|ring| {
            let d = GAP + (ring - 1) * (h + 2);
            [
                (px + GAP, py - h - d + GAP),
                (px + GAP, py + d - GAP),
                (px - w - GAP, py - h - d + GAP),
                (px - w - GAP, py + d - GAP),
                (px - w / 2, py - h - d),
                (px - w / 2, py + d),
            ]
        });
        let fits = |b: &LabelBox| {
            b.x >= 0
                && b.y >= 0
                && b.x + b.w <= area.0
                && b.y + b.h <= area.1
                && placed.iter().chain(&markers).all(|p| !p.overlaps(b))
        };
        let boxed = |(x, y): (i32, i32)| LabelBox {
            x,
            y,
            w,
            h,
            text: a.text.clone(),
        };
        let chosen = candidates.map(boxed).find(|b| fits(b)).unwrap_or_else(|| {
            let x = px.clamp(0, (area.0 - w).max(0));
            let y = placed
                .iter()
                .filter(|p| p.x < x + w && x < p.x + p.w)
                .map(|p| p.y + p.h + 2)
                .max()
                .unwrap_or(py);
            boxed((x, y))
        });
        placed.push(chosen);
    }
    placed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn anchor(x: i32, y: i32, text: &str) -> Anchor {
        Anchor {
            at: (x, y),
            size: (7 * text.len() as i32, 14),
            text: text.into(),
        }
    }

    fn no_two_overlap(boxes: &[LabelBox]) {
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn labels_of_a_dense_cluster_do_not_overlap() {
        // Ten methods within a few pixels of each other, as at the cheap end of a plot.
        let anchors: Vec<Anchor> = (0..10)
            .map(|i| anchor(100 + i * 5, 500 - i * 3, &format!("method number {i}")))
            .collect();
        let boxes = place_labels(&anchors, (900, 600));
        assert_eq!(boxes.len(), 10);
        no_two_overlap(&boxes);
        assert!(boxes.iter().all(|b| b.x >= 0 && b.x + b.w <= 900));
    }

    #[test]
    fn coincident_points_share_one_label() {
        let points = vec![
            ("always-large".to_owned(), 50.0, 0.52, BLACK),
            ("verify, always escalate".to_owned(), 50.5, 0.521, RED),
            ("Threshold".to_owned(), 20.0, 0.46, RED),
        ];
        // 10 px per cost unit: the first two are 5 px apart... too far; 2 px per unit: 1 px.
        let labels = coincident_labels(&points, |(c, q)| {
            ((c * 2.0) as i32, (600.0 - q * 100.0) as i32)
        });
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[0].1, "always-large, verify, always escalate");
    }

    /// The README's pictures: `eval --plot` on the bundled local rows and on the strong set.
    #[test]
    fn the_bundled_plots_have_no_overlapping_labels() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::env::temp_dir().join(format!("automix-plot-{:x}", std::process::id()));
        for config in ["configs/local.yaml", "configs/anlp.yaml"] {
            let config = automix::Config::load(&root.join(config)).unwrap();
            let path = config.data_path.routing_data_train.clone().unwrap();
            let rows = automix::dataset::read_training_rows(&path).unwrap();
            let part = |name| -> Vec<_> {
                automix::training::split(&rows, name)
                    .into_iter()
                    .cloned()
                    .collect()
            };
            let (small, large) = (
                config.model_path.engine_small.clone().unwrap(),
                config
                    .model_path
                    .engine_large
                    .clone()
                    .unwrap_or_else(|| "large".into()),
            );
            let small = if config.model_path.engine_large.is_none() {
                "small".into()
            } else {
                small
            };
            let report =
                automix::evaluate::evaluate(&config, &part("train"), &part("test"), &small, &large)
                    .unwrap();
            let labels = cost_quality_labels(&report, &out.join("frontier")).unwrap();
            assert!(labels.len() >= 5, "{labels:?}");
            no_two_overlap(&labels);
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}
