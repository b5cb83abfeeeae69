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

fn write_both(data: &PlotData, stem: &Path) -> Result<()> {
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    bundled_font()?;
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, (900, 600)).into_drawing_area();
        draw(data, &root)?;
        root.present()
            .map_err(|e| anyhow!("{}: {e}", png.display()))?;
    }
    let root = SVGBackend::new(&svg, (900, 600)).into_drawing_area();
    draw(data, &root)?;
    root.present()
        .map_err(|e| anyhow!("{}: {e}", svg.display()))?;
    Ok(())
}

fn draw<DB: DrawingBackend>(data: &PlotData, root: &DrawingArea<DB, Shift>) -> Result<()>
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
    // Points at the same place get one label naming them all.
    for ((cost, quality), names) in coincident_labels(&data.points) {
        chart
            .draw_series(std::iter::once(Text::new(
                names,
                (cost, quality),
                ("sans-serif", 12),
            )))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// The points' names joined per location (within 0.1% of the axes' ranges), in order.
fn coincident_labels(points: &[(String, f64, f64, RGBColor)]) -> Vec<((f64, f64), String)> {
    let span = |f: fn(&(String, f64, f64, RGBColor)) -> f64| {
        let (lo, hi) = points
            .iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        (hi - lo).max(1e-12)
    };
    let (dx, dy) = (span(|p| p.1) * 1e-3, span(|p| p.2) * 1e-3);
    let mut out: Vec<((f64, f64), String)> = Vec::new();
    for (name, cost, quality, _) in points {
        match out
            .iter_mut()
            .find(|((c, q), _)| (c - cost).abs() <= dx && (q - quality).abs() <= dy)
        {
            Some((_, names)) => {
                names.push_str(", ");
                names.push_str(name);
            }
            None => out.push(((*cost, *quality), name.clone())),
        }
    }
    out
}
