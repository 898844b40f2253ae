//! The report's plots, `accuracy_vs_compute` and `training_curves`, each as SVG (titles, axis
//! labels, legends) and as PNG with the same marks and grid but no text: plotters' bitmap backend
//! needs a system font to draw text, which distill does not require, so no label areas, captions
//! or legends are drawn there.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::bootstrap::Interval;
use super::report::RunReport;
use super::runs::TrainKind;

const SIZE: (u32, u32) = (800, 480);
const COLORS: [RGBColor; 5] = [BLUE, RED, GREEN, MAGENTA, BLACK];

type Drawn = Result<(), String>;

/// One training curve: the run's label, its trainer and `(step, value)` points (SFT loss or GRPO
/// reward).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The run's label.
    pub label: String,
    /// SFT (loss) or GRPO (reward).
    pub kind: TrainKind,
    /// `(step, value)` points.
    pub points: Vec<(f64, f64)>,
}

/// A plotted accuracy: its name, how to read it from a row, and a horizontal offset (fraction of
/// the x range) so the two metrics' bars do not hide each other.
type Metric = (&'static str, fn(&RunReport) -> Interval, f64);

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn finish(path: &Path, result: Drawn) -> anyhow::Result<()> {
    result.map_err(|e| anyhow::anyhow!("{}: cannot draw the plot: {e}", path.display()))
}

/// Accuracy (pass@1 and cons@k with 95% interval bars) against training FLOPs, one point per run.
pub fn accuracy_vs_compute(dir: &Path, runs: &[RunReport]) -> anyhow::Result<()> {
    let svg = dir.join("accuracy_vs_compute.svg");
    finish(&svg, {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw_accuracy(&root, runs, true).and_then(|()| root.present().map_err(err))
    })?;
    let png = dir.join("accuracy_vs_compute.png");
    finish(&png, {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw_accuracy(&root, runs, false).and_then(|()| root.present().map_err(err))
    })
}

fn draw_accuracy<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    runs: &[RunReport],
    text: bool,
) -> Drawn {
    root.fill(&WHITE).map_err(err)?;
    let x_max = runs.iter().map(RunReport::train_flops).fold(1.0, f64::max) * 1.1;
    let mut builder = ChartBuilder::on(root);
    builder.margin(16);
    if text {
        builder
            .caption("accuracy vs training compute", ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(56);
    }
    let mut chart = builder
        .build_cartesian_2d(-x_max * 0.05..x_max, 0.0..1.0)
        .map_err(err)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("training FLOPs").y_desc("accuracy");
    }
    mesh.draw().map_err(err)?;
    let metrics: [Metric; 2] = [
        ("pass@1", |r| r.pass_at_1, 0.0),
        ("cons@k", |r| r.cons_at_k, 0.01),
    ];
    for (m, (name, get, offset)) in metrics.into_iter().enumerate() {
        let color = COLORS[m];
        let shift = offset * x_max;
        let cap = 0.006 * x_max;
        chart
            .draw_series(runs.iter().map(|r| {
                let (i, x) = (get(r), r.train_flops() + shift);
                PathElement::new(
                    vec![
                        (x - cap, i.low),
                        (x + cap, i.low),
                        (x, i.low),
                        (x, i.high),
                        (x - cap, i.high),
                        (x + cap, i.high),
                    ],
                    color.stroke_width(2),
                )
            }))
            .map_err(err)?;
        let series =
            chart
                .draw_series(runs.iter().map(|r| {
                    Circle::new((r.train_flops() + shift, get(r).mean), 4, color.filled())
                }))
                .map_err(err)?;
        if text {
            series
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
    }
    if text {
        chart
            .draw_series(runs.iter().map(|r| {
                Text::new(
                    r.label.clone(),
                    (r.train_flops(), (r.pass_at_1.high + 0.04).min(0.97)),
                    ("sans-serif", 14),
                )
            }))
            .map_err(err)?;
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// The training curves: SFT loss (left) and GRPO reward (right) against the step, one line per run.
pub fn training_curves(dir: &Path, curves: &[Curve]) -> anyhow::Result<()> {
    let svg = dir.join("training_curves.svg");
    finish(&svg, {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw_curves(&root, curves, true).and_then(|()| root.present().map_err(err))
    })?;
    let png = dir.join("training_curves.png");
    finish(&png, {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw_curves(&root, curves, false).and_then(|()| root.present().map_err(err))
    })
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    curves: &[Curve],
    text: bool,
) -> Drawn {
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    for (panel, (kind, title)) in panels.iter().zip([
        (TrainKind::Sft, "SFT loss"),
        (TrainKind::Grpo, "GRPO reward"),
    ]) {
        let series: Vec<(&str, &[(f64, f64)])> = curves
            .iter()
            .filter(|c| c.kind == kind && !c.points.is_empty())
            .map(|c| (c.label.as_str(), c.points.as_slice()))
            .collect();
        let points = series.iter().flat_map(|(_, p)| p.iter());
        let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::MAX, f64::MIN);
        for &(x, y) in points {
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
        if y_min > y_max {
            (y_min, y_max) = (0.0, 1.0);
        }
        let pad = ((y_max - y_min) * 0.05).max(1e-6);
        let mut builder = ChartBuilder::on(panel);
        builder.margin(12);
        if text {
            builder
                .caption(title, ("sans-serif", 18))
                .x_label_area_size(36)
                .y_label_area_size(52);
        }
        let mut chart = builder
            .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))
            .map_err(err)?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("step");
        }
        mesh.draw().map_err(err)?;
        for (i, (label, data)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let drawn = chart
                .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
                .map_err(err)?;
            if text {
                drawn
                    .label(*label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
        }
        if text && !series.is_empty() {
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(err)?;
        }
    }
    Ok(())
}
