//! The report's plots, `accuracy_vs_compute` and `training_curves`, each as SVG and PNG with the
//! same titles, axis labels and legends, drawn with the bundled font of [`crate::plot_font`] (no
//! system font needed).
//!
//! The compute axis labels FLOPs as `2e11`, `1.5e12` and turns logarithmic when the runs' compute
//! spans more than a decade; the legend of the accuracy plot sits in its own panel so no point or
//! label hides under it; GRPO reward is drawn as a moving average over the faint raw per-step line.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::bootstrap::Interval;
use super::report::RunReport;
use super::runs::TrainKind;
use crate::plot_font::FONT;

const SIZE: (u32, u32) = (900, 520);
const COLORS: [RGBColor; 5] = [BLUE, RED, GREEN, MAGENTA, BLACK];
/// Compute spanning more than this ratio gets a logarithmic axis.
const LOG_AXIS_SPAN: f64 = 10.0;

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

/// Draws `stem.svg` and `stem.png` in `dir`, the same drawing on each backend.
fn svg_and_png(
    dir: &Path,
    stem: &str,
    draw_svg: impl Fn(&DrawingArea<SVGBackend, Shift>) -> Drawn,
    draw_png: impl Fn(&DrawingArea<BitMapBackend, Shift>) -> Drawn,
) -> anyhow::Result<()> {
    crate::plot_font::register();
    let finish = |path: &Path, result: Drawn| {
        result.map_err(|e| anyhow::anyhow!("{}: cannot draw the plot: {e}", path.display()))
    };
    let svg = dir.join(format!("{stem}.svg"));
    finish(&svg, {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw_svg(&root).and_then(|()| root.present().map_err(err))
    })?;
    let png = dir.join(format!("{stem}.png"));
    finish(&png, {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw_png(&root).and_then(|()| root.present().map_err(err))
    })
}

/// FLOPs as `0`, `2e11`, `1.5e12`.
pub fn flops_label(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return "0".into();
    }
    let exponent = value.abs().log10().floor();
    let mantissa = value / 10f64.powf(exponent);
    let mantissa = format!("{mantissa:.2}");
    let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
    format!("{mantissa}e{exponent}")
}

/// The compute axis: linear, or log10 when the positive values span more than a decade.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ComputeAxis {
    log: bool,
    low: f64,
    high: f64,
}

impl ComputeAxis {
    fn of(values: &[f64]) -> Self {
        let max = values.iter().copied().fold(0.0, f64::max).max(1.0);
        let min_positive = values
            .iter()
            .copied()
            .filter(|v| *v > 0.0)
            .fold(f64::MAX, f64::min);
        let all_positive = values.iter().all(|v| *v > 0.0);
        if all_positive && max / min_positive > LOG_AXIS_SPAN {
            ComputeAxis {
                log: true,
                low: min_positive.log10() - 0.3,
                high: max.log10() + 0.3,
            }
        } else {
            ComputeAxis {
                log: false,
                low: -max * 0.05,
                high: max * 1.12,
            }
        }
    }

    /// The plotted coordinate of `flops`.
    fn x(&self, flops: f64) -> f64 {
        if self.log {
            flops.max(f64::MIN_POSITIVE).log10()
        } else {
            flops
        }
    }

    /// The tick label at plotted coordinate `x`.
    fn label(&self, x: f64) -> String {
        flops_label(if self.log { 10f64.powf(x) } else { x })
    }

    /// How many tick labels: one per decade on a log axis (so ticks fall on powers of ten), else 6.
    fn labels(&self) -> usize {
        if self.log {
            self.span().floor() as usize + 1
        } else {
            6
        }
    }

    fn span(&self) -> f64 {
        self.high - self.low
    }
}

/// Accuracy (pass@1 and cons@k with 95% interval bars) against training FLOPs, one point per run.
pub fn accuracy_vs_compute(dir: &Path, runs: &[RunReport]) -> anyhow::Result<()> {
    svg_and_png(
        dir,
        "accuracy_vs_compute",
        |root| draw_accuracy(root, runs),
        |root| draw_accuracy(root, runs),
    )
}

fn draw_accuracy<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[RunReport]) -> Drawn {
    root.fill(&WHITE).map_err(err)?;
    let axis = ComputeAxis::of(&runs.iter().map(RunReport::train_flops).collect::<Vec<_>>());
    let (plot, legend) = root.split_horizontally((SIZE.0 - 150) as i32);
    let mut chart = ChartBuilder::on(&plot)
        .margin(16)
        .caption("accuracy vs training compute", (FONT, 22))
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(axis.low..axis.high, 0.0..1.0)
        .map_err(err)?;
    let x_desc = if axis.log {
        "training FLOPs (log scale)"
    } else {
        "training FLOPs"
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("accuracy")
        .x_labels(axis.labels())
        .x_label_formatter(&|x| axis.label(*x))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(err)?;
    let metrics: [Metric; 2] = [
        ("pass@1", |r| r.pass_at_1, 0.0),
        ("cons@k", |r| r.cons_at_k, 0.012),
    ];
    for (m, (_, get, offset)) in metrics.into_iter().enumerate() {
        let color = COLORS[m];
        let shift = offset * axis.span();
        let cap = 0.006 * axis.span();
        chart
            .draw_series(runs.iter().map(|r| {
                let (i, x) = (get(r), axis.x(r.train_flops()) + shift);
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
        chart
            .draw_series(runs.iter().map(|r| {
                Circle::new(
                    (axis.x(r.train_flops()) + shift, get(r).mean),
                    4,
                    color.filled(),
                )
            }))
            .map_err(err)?;
    }
    chart
        .draw_series(runs.iter().map(|r| {
            let top = r.pass_at_1.high.max(r.cons_at_k.high);
            Text::new(
                r.label.clone(),
                (
                    axis.x(r.train_flops()) + 0.02 * axis.span(),
                    (top + 0.05).min(0.97),
                ),
                (FONT, 15),
            )
        }))
        .map_err(err)?;
    let entries: Vec<(String, RGBColor)> = metrics
        .iter()
        .enumerate()
        .map(|(m, (name, _, _))| (format!("{name} (95% CI)"), COLORS[m]))
        .collect();
    draw_side_legend(&legend, &entries)
}

/// A legend in its own panel, beside the chart so it never hides a point: a dot and the name for
/// each entry.
fn draw_side_legend<DB: DrawingBackend>(
    panel: &DrawingArea<DB, Shift>,
    entries: &[(String, RGBColor)],
) -> Drawn {
    let top = 70;
    for (i, (name, color)) in entries.iter().enumerate() {
        let y = top + 26 * i as i32;
        panel
            .draw(&Circle::new((14, y), 5, color.filled()))
            .map_err(err)?;
        panel
            .draw(&Text::new(
                name.clone(),
                (30, y - 8),
                (FONT, 15).into_font().color(&BLACK),
            ))
            .map_err(err)?;
    }
    Ok(())
}

/// The moving average of `points` over `window` points (centred, shorter at the ends).
pub fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let half = window.max(1) / 2;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, _))| {
            let span = &points[i.saturating_sub(half)..(i + half + 1).min(points.len())];
            (x, span.iter().map(|p| p.1).sum::<f64>() / span.len() as f64)
        })
        .collect()
}

/// The smoothing window of a curve of `n` points: about 1/20 of it, at least 5.
fn smoothing_window(n: usize) -> usize {
    (n / 20).max(5) | 1
}

/// The training curves: SFT loss (left) and GRPO reward (right) against the step, one line per
/// run; GRPO reward smoothed over a faint raw line.
pub fn training_curves(dir: &Path, curves: &[Curve]) -> anyhow::Result<()> {
    svg_and_png(
        dir,
        "training_curves",
        |root| draw_curves(root, curves),
        |root| draw_curves(root, curves),
    )
}

fn draw_curves<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curves: &[Curve]) -> Drawn {
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    for (panel, (kind, title, y_desc)) in panels.iter().zip([
        (TrainKind::Sft, "SFT loss", "loss"),
        (TrainKind::Grpo, "GRPO reward", "mean reward"),
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
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .caption(title, (FONT, 20))
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad * 6.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(y_desc)
            .x_labels(6)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(err)?;
        for (i, (label, data)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let smooth = kind == TrainKind::Grpo && data.len() > 5;
            let line = if smooth {
                chart
                    .draw_series(LineSeries::new(
                        data.iter().copied(),
                        color.mix(0.25).stroke_width(1),
                    ))
                    .map_err(err)?;
                let window = smoothing_window(data.len());
                chart
                    .draw_series(LineSeries::new(
                        moving_average(data, window),
                        color.stroke_width(2),
                    ))
                    .map_err(err)?
                    .label(format!("{label}: {window}-step mean (faint: per step)"))
            } else {
                chart
                    .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
                    .map_err(err)?
                    .label(*label)
            };
            line.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 13))
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .draw()
                .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_labels_are_short_and_exact() {
        assert_eq!(flops_label(0.0), "0");
        assert_eq!(flops_label(2e11), "2e11");
        assert_eq!(flops_label(1.433e12), "1.43e12");
        assert_eq!(flops_label(4.4e11), "4.4e11");
    }

    #[test]
    fn the_axis_turns_logarithmic_when_compute_spans_decades() {
        assert!(!ComputeAxis::of(&[4.4e11, 1.43e12, 1.44e12]).log);
        let axis = ComputeAxis::of(&[1e9, 1.43e12]);
        assert!(axis.log);
        assert_eq!(axis.label(axis.x(1e9)), "1e9");
        assert!(!ComputeAxis::of(&[0.0, 1e12]).log, "zero has no logarithm");
    }

    #[test]
    fn the_moving_average_smooths_and_keeps_the_steps() {
        let points: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, (i % 2) as f64)).collect();
        let smooth = moving_average(&points, 5);
        assert_eq!(smooth.len(), 10);
        assert_eq!(smooth[4], (4.0, 0.4));
        assert_eq!(smooth[0].0, 0.0);
        assert_eq!(smoothing_window(329), 17);
    }
}
