//! Training metrics: one JSON object per line beside the outputs, and the loss-curve plot (SVG).

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

use crate::model::{ModelError, Result};

/// An append-only JSONL log of per-step metrics.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

fn io_error(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}

impl MetricsLog {
    /// Opens `path` for appending, first dropping lines whose `step` is after `keep_through_step`
    /// (what a resumed run will log again), so a resumed log equals an uninterrupted one.
    pub fn open(path: &Path, keep_through_step: u64) -> Result<Self> {
        let kept: Vec<String> = match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<Value>(line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(Value::as_u64))
                        .is_some_and(|step| step <= keep_through_step)
                })
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        crate::model::save::write_atomic(path, body.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one record.
    pub fn log(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(|e| io_error(&self.path, e))
    }

    /// Every record of a metrics file, in order.
    pub fn read(path: &Path) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

/// Plots metrics of the run in `out` against the step into `out/file`: one curve per
/// `(label, metrics.jsonl key)`.
pub fn plot_metrics(out: &Path, file: &str, title: &str, curves: &[(&str, &str)]) -> Result<()> {
    let records = MetricsLog::read(&out.join("metrics.jsonl"))?;
    let series: Vec<(&str, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|&(label, key)| {
            let points = records
                .iter()
                .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
                .collect();
            (label, points)
        })
        .collect();
    plot_curves(&out.join(file), title, "step", &series)
}

/// Plots the named series (each a list of (x, value) points) against x, labelled `x_label`, as SVG.
pub fn plot_curves(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<()> {
    crate::plot_font::register();
    let points: Vec<&(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter()).collect();
    if points.is_empty() {
        return Ok(());
    }
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let y_min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min).min(0.0);
    let plot_error =
        |e: String| ModelError::Invalid(format!("{}: cannot draw the plot: {e}", path.display()));
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, y_min..(y_max * 1.05).max(y_min + 1e-6))
        .map_err(|e| plot_error(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .draw()
        .map_err(|e| plot_error(e.to_string()))?;
    let colors = [BLUE, RED, GREEN, MAGENTA, BLACK];
    for (i, (name, data)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
            .map_err(|e| plot_error(e.to_string()))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| plot_error(e.to_string()))?;
    root.present().map_err(|e| plot_error(e.to_string()))
}
