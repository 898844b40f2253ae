//! The report's plots on demo-like numbers (base / SFT / GRPO at ~1e12 FLOPs, a 1,368-step SFT loss,
//! a noisy 329-step GRPO reward): the PNGs carry text (title, axes, legend) drawn with the bundled
//! font, the compute axis reads `1.2e12`-style labels instead of `1200000000000.0`, and a compute
//! range spanning decades gets a log axis. Set `DISTILL_PLOTS_DIR` to keep the images to look at.

use std::path::{Path, PathBuf};

use distill::compare::bootstrap::Interval;
use distill::compare::plots::{accuracy_vs_compute, training_curves, Curve};
use distill::compare::report::RunReport;
use distill::compare::runs::TrainKind;

fn interval(mean: f64, low: f64, high: f64) -> Interval {
    Interval { mean, low, high }
}

fn run(label: &str, flops: f64, pass: Interval, cons: Interval) -> RunReport {
    RunReport {
        label: label.into(),
        eval_dirs: Vec::new(),
        problems: 128,
        k: 4,
        pass_at_1: pass,
        cons_at_k: cons,
        train_dirs: Vec::new(),
        update_flops: flops,
        forward_flops: 0.0,
        data_generation_flops: None,
        train_wall_seconds: 0.0,
        data: String::new(),
    }
}

/// The demo's report rows (README, "What the demo shows today").
fn demo_runs() -> Vec<RunReport> {
    vec![
        run(
            "base",
            4.4e11,
            interval(0.039, 0.023, 0.057),
            interval(0.023, 0.0, 0.055),
        ),
        run(
            "sft",
            1.433e12,
            interval(0.344, 0.281, 0.406),
            interval(0.375, 0.289, 0.461),
        ),
        run(
            "grpo",
            1.435e12,
            interval(0.035, 0.018, 0.059),
            interval(0.016, 0.0, 0.039),
        ),
    ]
}

/// A decreasing SFT loss and a noisy GRPO reward (a deterministic pseudo-random walk).
fn demo_curves() -> Vec<Curve> {
    let mut state = 7u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let sft = (1..=1368)
        .map(|s| {
            (
                s as f64,
                0.35 + 2.5 * (-(s as f64) / 200.0).exp() + 0.05 * noise(),
            )
        })
        .collect();
    let grpo = (1..=329)
        .map(|s| {
            (
                s as f64,
                0.035 + 0.006 * s as f64 / 329.0 + 0.06 * (noise() - 0.5),
            )
        })
        .collect();
    vec![
        Curve {
            label: "sft".into(),
            kind: TrainKind::Sft,
            points: sft,
        },
        Curve {
            label: "grpo".into(),
            kind: TrainKind::Grpo,
            points: grpo,
        },
    ]
}

/// Where to draw: `DISTILL_PLOTS_DIR/<name>` when set (to look at), else a temporary directory.
fn out_dir(name: &str, temp: &Path) -> PathBuf {
    let dir = std::env::var_os("DISTILL_PLOTS_DIR")
        .map_or_else(|| temp.join(name), |root| PathBuf::from(root).join(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An SVG's text with the line breaks plotters puts around each label removed.
fn svg_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().replace('\n', "")
}

/// Dark pixels in the band of rows `rows` of a PNG (text and lines are dark, the page white).
fn dark_pixels(png: &Path, rows: std::ops::Range<u32>) -> usize {
    let image = image::open(png).unwrap().to_rgb8();
    rows.flat_map(|y| (0..image.width()).map(move |x| (x, y)))
        .filter(|&(x, y)| image.get_pixel(x, y).0.iter().all(|&c| c < 100))
        .count()
}

#[test]
fn demo_plots_are_labelled_in_svg_and_png() {
    let temp = tempfile::tempdir().unwrap();
    let dir = out_dir("demo", temp.path());
    accuracy_vs_compute(&dir, &demo_runs()).unwrap();
    training_curves(&dir, &demo_curves()).unwrap();

    let svg = svg_text(&dir.join("accuracy_vs_compute.svg"));
    assert!(svg.contains("accuracy vs training compute"), "title");
    assert!(svg.contains(">1e12<"), "FLOPs labelled like 1e12");
    assert!(!svg.contains("00000000"), "no run-together FLOP counts");
    assert!(
        svg.contains("pass@1 (95% CI)") && svg.contains("cons@k (95% CI)"),
        "legend"
    );
    let curves = svg_text(&dir.join("training_curves.svg"));
    assert!(curves.contains("17-step mean"), "GRPO reward smoothed");

    // The title band (the top 40 rows) holds text only: blank before fonts were bundled.
    for plot in ["accuracy_vs_compute", "training_curves"] {
        let dark = dark_pixels(&dir.join(format!("{plot}.png")), 0..40);
        assert!(
            dark > 150,
            "{plot}.png has a drawn title ({dark} dark pixels)"
        );
    }
}

#[test]
fn compute_spanning_decades_gets_a_log_axis() {
    let temp = tempfile::tempdir().unwrap();
    let dir = out_dir("log-axis", temp.path());
    let mut runs = demo_runs();
    runs[0].update_flops = 2e9;
    accuracy_vs_compute(&dir, &runs).unwrap();
    let svg = svg_text(&dir.join("accuracy_vs_compute.svg"));
    assert!(svg.contains("training FLOPs (log scale)"), "log axis named");
    assert!(
        svg.contains(">1e10<") && svg.contains(">1e11<"),
        "decade labels"
    );
}
