//! The report of `distill bench memory`: peak memory of one SFT step against the row's length, with
//! and without activation checkpointing, as a table, a plot and a least-squares fit per mode. The
//! fit's slope gives the activation bytes per token per layer; its quadratic term shows whether
//! anything grows with the square of the length.

use std::path::Path;

use serde::Serialize;

use crate::bench::{BenchShape, StepMemory};

/// A least-squares fit of peak memory (MiB) against tokens T: `a + b·T + c·T²`.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryFit {
    /// `plain` or `checkpointed`.
    pub mode: &'static str,
    /// Lengths measured.
    pub points: usize,
    /// The linear fit's intercept, MiB (weights, gradients, optimiser state, buffers).
    pub fixed_mib: f64,
    /// The linear fit's slope in bytes per token per decoder layer.
    pub bytes_per_token_per_layer: f64,
    /// The quadratic fit's `c·T²` at the longest length measured, MiB: near zero when memory is linear.
    pub quadratic_mib_at_longest: f64,
    /// The largest residual of the linear fit, as a fraction of that point's peak.
    pub worst_linear_residual: f64,
}

/// Every measurement with the fits.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// The shape measured.
    pub shape: BenchShape,
    /// Its decoder layers.
    pub layers: usize,
    /// Its parameters.
    pub parameters: usize,
    /// One step per (length, mode), each in its own process.
    pub steps: Vec<StepMemory>,
    /// One fit per mode with at least three lengths.
    pub fits: Vec<MemoryFit>,
}

impl MemoryReport {
    /// The report of `steps`, measured on `shape`.
    pub fn new(shape: BenchShape, steps: Vec<StepMemory>) -> Self {
        let config = shape.config();
        let layers = config.num_hidden_layers;
        let fits = [("plain", false), ("checkpointed", true)]
            .into_iter()
            .filter_map(|(mode, recompute)| {
                let points: Vec<(f64, f64)> = steps
                    .iter()
                    .filter(|s| s.recompute_layers == recompute)
                    .map(|s| (s.seq as f64, s.peak_rss_mib))
                    .collect();
                fit(mode, &points, layers)
            })
            .collect();
        MemoryReport {
            shape,
            layers,
            parameters: config.parameter_count(),
            steps,
            fits,
        }
    }

    /// The table and the fits as Markdown.
    pub fn markdown(&self) -> String {
        let mut lengths: Vec<usize> = self.steps.iter().map(|s| s.seq).collect();
        lengths.sort_unstable();
        lengths.dedup();
        let peak = |seq: usize, recompute: bool| {
            self.steps
                .iter()
                .find(|s| s.seq == seq && s.recompute_layers == recompute)
                .map(|s| s.peak_rss_mib / 1024.0)
        };
        let cell = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
        let mut out = String::from(
            "| tokens | peak GiB, plain | peak GiB, checkpointed | checkpointed / plain |\n\
             | ---: | ---: | ---: | ---: |\n",
        );
        for seq in lengths {
            let (plain, checkpointed) = (peak(seq, false), peak(seq, true));
            let ratio = plain.zip(checkpointed).map(|(p, c)| c / p);
            out.push_str(&format!(
                "| {seq} | {} | {} | {} |\n",
                cell(plain),
                cell(checkpointed),
                cell(ratio)
            ));
        }
        out.push('\n');
        for f in &self.fits {
            out.push_str(&format!(
                "- {}: {:.0} MiB + {:.0} bytes per token per layer ({} lengths; largest residual {:.1}%); \
                 a quadratic fit's T² term at the longest length: {:.0} MiB\n",
                f.mode,
                f.fixed_mib,
                f.bytes_per_token_per_layer,
                f.points,
                100.0 * f.worst_linear_residual,
                f.quadratic_mib_at_longest
            ));
        }
        out
    }

    /// Peak GiB against tokens, one line per mode, as SVG.
    pub fn plot(&self, path: &Path) -> crate::model::Result<()> {
        let series: Vec<(&str, Vec<(f64, f64)>)> = [("plain", false), ("checkpointed", true)]
            .into_iter()
            .map(|(label, recompute)| {
                let mut points: Vec<(f64, f64)> = self
                    .steps
                    .iter()
                    .filter(|s| s.recompute_layers == recompute)
                    .map(|s| (s.seq as f64, s.peak_rss_mib / 1024.0))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                (label, points)
            })
            .collect();
        crate::train::metrics::plot_curves(
            path,
            "peak memory of one SFT step (GiB)",
            "tokens in the row",
            &series,
        )
    }
}

/// The linear and quadratic least-squares fits of `points` (tokens, MiB); `None` under 3 points.
fn fit(mode: &'static str, points: &[(f64, f64)], layers: usize) -> Option<MemoryFit> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let worst = points
        .iter()
        .map(|p| (p.1 - (intercept + slope * p.0)).abs() / p.1)
        .fold(0.0, f64::max);
    let longest = points.iter().map(|p| p.0).fold(0.0, f64::max);
    Some(MemoryFit {
        mode,
        points: points.len(),
        fixed_mib: intercept,
        bytes_per_token_per_layer: slope * 1024.0 * 1024.0 / layers as f64,
        quadratic_mib_at_longest: quadratic_coefficient(points) * longest * longest,
        worst_linear_residual: worst,
    })
}

/// The `c` of the least-squares fit `a + b·x + c·x²` (normal equations, solved by Cramer's rule on
/// x scaled to the longest length so the system stays well conditioned).
fn quadratic_coefficient(points: &[(f64, f64)]) -> f64 {
    let scale = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let mut s = [0.0f64; 5];
    let mut t = [0.0f64; 3];
    for &(x, y) in points {
        let x = x / scale;
        for (k, sk) in s.iter_mut().enumerate() {
            *sk += x.powi(k as i32);
        }
        for (k, tk) in t.iter_mut().enumerate() {
            *tk += y * x.powi(k as i32);
        }
    }
    let det3 = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let a = [[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]];
    let mut c = a;
    for (row, value) in c.iter_mut().zip(t) {
        row[2] = value;
    }
    let det = det3(a);
    if det.abs() < 1e-12 {
        return 0.0;
    }
    det3(c) / det / (scale * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(seq: usize, recompute: bool, mib: f64) -> StepMemory {
        StepMemory {
            seq,
            recompute_layers: recompute,
            rss_before_mib: 0.0,
            peak_rss_mib: mib,
            seconds: 0.0,
        }
    }

    #[test]
    fn the_fits_recover_a_line_and_a_square() {
        let layers = BenchShape::LongContext.config().num_hidden_layers as f64;
        // 1000 MiB + 1 MiB per 1024 tokens, plain; the same plus 1 MiB per (1024 tokens)², checkpointed.
        let steps: Vec<StepMemory> = [1024usize, 2048, 4096, 8192]
            .iter()
            .flat_map(|&t| {
                let k = t as f64 / 1024.0;
                [
                    step(t, false, 1000.0 + k),
                    step(t, true, 1000.0 + k + k * k),
                ]
            })
            .collect();
        let report = MemoryReport::new(BenchShape::LongContext, steps);
        let plain = &report.fits[0];
        assert!((plain.bytes_per_token_per_layer - 1024.0 / layers).abs() < 1e-6);
        assert!((plain.fixed_mib - 1000.0).abs() < 1e-6);
        assert!(plain.quadratic_mib_at_longest.abs() < 1e-6);
        let square = &report.fits[1];
        assert!((square.quadratic_mib_at_longest - 64.0).abs() < 1e-6);
        assert!(report.markdown().contains("| 8192 |"));
    }
}
