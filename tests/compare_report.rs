//! The comparison report on hand-made run directories: table columns, intervals, compute, plots,
//! and the finding sentence present only when the intervals (and compute) support it.

use std::path::{Path, PathBuf};
use std::process::Command;

use distill::compare::report::TABLE_COLUMNS;
use distill::compare::{run_compare, CompareConfig, RunSpec};
use distill::eval::samples::{write_samples, SampleRow};
use distill::eval::{EvalConfig, EvalSummary};

const K: usize = 2;

/// An eval directory where problem `p` has `correct(p)` of its K samples correct.
fn eval_dir(root: &Path, name: &str, model: &str, correct: impl Fn(usize) -> usize) -> PathBuf {
    eval_dir_of(root, name, model, "q", correct)
}

/// Like [`eval_dir`], with problem ids `<prefix><p>`.
fn eval_dir_of(
    root: &Path,
    name: &str,
    model: &str,
    prefix: &str,
    correct: impl Fn(usize) -> usize,
) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let problems = 30;
    let mut rows = Vec::new();
    for p in 0..problems {
        for s in 0..K {
            let ok = s < correct(p);
            rows.push(SampleRow {
                id: format!("{prefix}{p}"),
                source: "hand".into(),
                sample_index: s as u32,
                completion: String::new(),
                answer: Some(if ok { "1".into() } else { format!("{}", 2 + s) }),
                correct: ok,
                tokens: 5,
                finish_reason: "stop".into(),
            });
        }
    }
    write_samples(&dir.join("samples.parquet"), &rows).unwrap();
    let summary = EvalSummary {
        model: model.into(),
        problems,
        k: K,
        pass_at_1: 0.0,
        cons_at_k: 0.0,
        per_source: Default::default(),
        generated_tokens: 0,
        truncated_samples: 0,
        wall_seconds: 1.0,
        settings: EvalConfig::new(model, dir.clone()),
    };
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec(&summary).unwrap(),
    )
    .unwrap();
    dir
}

fn sft_run(root: &Path, tokens: u64) -> PathBuf {
    let dir = root.join("sft_train");
    std::fs::create_dir_all(dir.join("final")).unwrap();
    let summary = serde_json::json!({"steps": 3, "examples": {"kept": 40, "dropped": 0, "truncated": 0},
        "eval_examples": 0, "tokens_seen": tokens, "final_loss": 1.0, "final_eval_loss": null,
        "wall_seconds": 12.5, "parameters": 1000, "model_dir": dir.join("final")});
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    let metrics: String = (1..=3)
        .map(|s| format!("{{\"step\":{s},\"loss\":{}}}\n", 3.0 - s as f64 * 0.5))
        .collect();
    std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    dir
}

fn grpo_run(root: &Path) -> PathBuf {
    let dir = root.join("grpo_train");
    std::fs::create_dir_all(&dir).unwrap();
    let summary = serde_json::json!({"steps": 2, "first_reward": 0.1, "last_reward": 0.2,
        "rollout_tokens": 5000, "reference_tokens": 1000, "update_tokens": 5000, "parameters": 1000,
        "wall_seconds": 20.0, "model_dir": dir.join("final")});
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    std::fs::write(
        dir.join("metrics.jsonl"),
        "{\"step\":1,\"reward\":0.1,\"accuracy\":0.1}\n{\"step\":2,\"reward\":0.2,\"accuracy\":0.2}\n",
    )
    .unwrap();
    dir
}

fn spec(label: &str, eval: Vec<PathBuf>, train: Vec<PathBuf>) -> RunSpec {
    RunSpec {
        label: label.into(),
        eval,
        train,
        data_generation: None,
    }
}

#[test]
fn a_clear_win_at_matched_compute_is_stated() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let sft_train = sft_run(root, 10_000);
    let grpo_train = grpo_run(root);
    // The SFT model is <run>/final, so its training run is found without --train.
    let sft_model = sft_train.join("final").display().to_string();
    let base = eval_dir(root, "base", "base", |_| 0);
    let sft_a = eval_dir(
        root,
        "sft_a",
        &sft_model,
        |p| if p % 10 == 0 { 1 } else { 2 },
    );
    let sft_b = eval_dir(
        root,
        "sft_b",
        &sft_model,
        |p| if p % 10 == 1 { 1 } else { 2 },
    );
    let grpo = eval_dir(root, "grpo", "elsewhere", |p| usize::from(p % 3 == 0));
    let gen = root.join("gen.json");
    std::fs::write(
        &gen,
        r#"{"teacher_parameters": 5000, "generated_tokens": 100}"#,
    )
    .unwrap();
    let out = root.join("report");
    let mut sft = spec("sft", vec![sft_a, sft_b], Vec::new());
    sft.data_generation = Some(gen);
    let config = CompareConfig {
        runs: vec![
            spec("base", vec![base], Vec::new()),
            sft,
            spec("grpo", vec![grpo], vec![grpo_train]),
        ],
        out: out.clone(),
        seed: 7,
        bootstrap: 400,
    };
    let report = run_compare(&config).unwrap();

    assert!(report.finding.supported, "{}", report.finding.sentence);
    assert_eq!(report.finding.winner.as_deref(), Some("sft"));
    assert!(report
        .finding
        .sentence
        .starts_with("Distillation (SFT) beats RL (GRPO) at matched compute"));
    let sft = &report.runs[1];
    assert_eq!(sft.eval_dirs.len(), 2);
    // 27 problems 2/2 and 3 problems 1/2 in each seed.
    assert!((sft.pass_at_1.mean - (27.0 + 1.5) / 30.0).abs() < 1e-12);
    assert_eq!(sft.update_flops, 6.0 * 1000.0 * 10_000.0);
    assert_eq!(sft.forward_flops, 0.0);
    assert_eq!(sft.data_generation_flops, Some(2.0 * 5000.0 * 100.0));
    let grpo = &report.runs[2];
    assert_eq!(
        grpo.train_flops(),
        6.0 * 1000.0 * 5000.0 + 2.0 * 1000.0 * (5000.0 + 1000.0),
        "updates, plus rollouts and the reference's scoring run forward only"
    );
    assert_eq!(report.runs[0].train_flops(), 0.0);
    assert!(report
        .runs
        .iter()
        .all(|r| r.pass_at_1.low <= r.pass_at_1.mean && r.pass_at_1.mean <= r.pass_at_1.high));

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let header = md.lines().find(|l| l.starts_with("| run")).unwrap();
    let columns: Vec<&str> = header.trim_matches('|').split('|').map(str::trim).collect();
    assert_eq!(columns, TABLE_COLUMNS);
    let table = md.split("## Finding").next().unwrap();
    assert_eq!(table.lines().filter(|l| l.starts_with("| ")).count(), 4);
    // base and grpo against sft, each a row of the paired-difference table.
    assert_eq!(report.against_sft.len(), 2);
    assert!(md.contains("| grpo | "), "{md}");
    assert!(md.contains(&report.finding.sentence));
    let json: distill::compare::report::CompareReport =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json.finding.sentence, report.finding.sentence);
    assert_eq!(json.finding.winner, report.finding.winner);
    let labels: Vec<&str> = json.runs.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["base", "sft", "grpo"]);
    for (read, made) in json.runs.iter().zip(&report.runs) {
        assert!((read.pass_at_1.high - made.pass_at_1.high).abs() < 1e-12);
        assert_eq!(read.train_flops(), made.train_flops());
    }
    assert!(
        md.contains("| base | 1 | 30 × 2 | 0.000 [0.000, 0.000] |"),
        "{md}"
    );
    for plot in ["accuracy_vs_compute", "training_curves"] {
        let svg = std::fs::read_to_string(out.join(format!("{plot}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{plot}");
        let png = std::fs::read(out.join(format!("{plot}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{plot}");
    }

    // Same seed, same intervals; another seed, other intervals.
    let again = run_compare(&config).unwrap();
    assert_eq!(again, report);
    let other = run_compare(&CompareConfig {
        seed: 8,
        ..config.clone()
    })
    .unwrap();
    assert_ne!(other.runs[2].pass_at_1, report.runs[2].pass_at_1);
}

#[test]
fn overlapping_results_are_inconclusive() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let sft_train = sft_run(root, 10_000);
    let grpo_train = grpo_run(root);
    // Each gets half the problems right, different halves: no paired difference either way.
    let sft = eval_dir(root, "sft", "m", |p| 2 * (p % 2));
    let grpo = eval_dir(root, "grpo", "m", |p| 2 * ((p + 1) % 2));
    let out = root.join("report");
    let report = run_compare(&CompareConfig {
        runs: vec![
            spec("sft", vec![sft], vec![sft_train]),
            spec("grpo", vec![grpo], vec![grpo_train]),
        ],
        out: out.clone(),
        seed: 1,
        bootstrap: 400,
    })
    .unwrap();
    assert!(!report.finding.supported);
    assert!(report.finding.winner.is_none());
    assert!(report.finding.sentence.starts_with("Inconclusive:"));
    assert!(report.finding.difference.unwrap().low < 0.0);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("Inconclusive:"));
    assert!(!md.contains(" beats "));
}

#[test]
fn a_win_with_much_more_compute_is_inconclusive_and_the_cli_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let sft_train = sft_run(root, 1_000_000);
    let grpo_train = grpo_run(root);
    let sft = eval_dir(root, "sft", "m", |_| 2);
    let grpo = eval_dir(root, "grpo", "m", |_| 0);
    let out = root.join("report");
    let arg = |label: &str, dir: &Path| format!("{label}={}", dir.display());
    let output = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args([
            "compare",
            "--run",
            &arg("sft", &sft),
            "--run",
            &arg("grpo", &grpo),
        ])
        .args([
            "--train",
            &arg("sft", &sft_train),
            "--train",
            &arg("grpo", &grpo_train),
        ])
        .args(["--out", &out.display().to_string(), "--bootstrap", "200"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("Inconclusive:"), "{stdout}");
    assert!(stdout.contains("compute is not matched"), "{stdout}");

    let bad = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args([
            "compare",
            "--run",
            &arg("sft", &sft),
            "--train",
            &arg("rl", &grpo_train),
        ])
        .args(["--out", &out.display().to_string()])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no --run rl=DIR"));
}

#[test]
fn a_missing_training_field_names_the_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let train = root.join("t");
    std::fs::create_dir_all(&train).unwrap();
    std::fs::write(
        train.join("summary.json"),
        r#"{"tokens_seen": 5, "steps": 1}"#,
    )
    .unwrap();
    let sft = eval_dir(root, "sft", "m", |_| 1);
    let error = run_compare(&CompareConfig {
        runs: vec![spec("sft", vec![sft], vec![train.clone()])],
        out: root.join("out"),
        seed: 0,
        bootstrap: 10,
    })
    .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("t/summary.json") && message.contains("`parameters`"),
        "{message}"
    );
}

#[test]
fn runs_on_different_problems_are_compared_by_interval_overlap() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let sft_train = sft_run(root, 10_000);
    let grpo_train = grpo_run(root);
    let config = |sft: PathBuf, grpo: PathBuf| CompareConfig {
        runs: vec![
            spec("sft", vec![sft], vec![sft_train.clone()]),
            spec("grpo", vec![grpo], vec![grpo_train.clone()]),
        ],
        out: root.join("out"),
        seed: 3,
        bootstrap: 400,
    };
    // Disjoint intervals: 1.0 vs ~0.17 on different problem sets.
    let sft = eval_dir_of(root, "sft", "m", "a", |_| 2);
    let grpo = eval_dir_of(root, "grpo", "m", "b", |p| usize::from(p % 3 == 0));
    let report = run_compare(&config(sft, grpo)).unwrap();
    assert!(report.finding.difference.is_none());
    assert!(report.finding.supported, "{}", report.finding.sentence);
    assert!(report.finding.sentence.contains("pass@1 95% CIs"));
    // Overlapping intervals: 0.5 vs ~0.47.
    let sft = eval_dir_of(root, "sft2", "m", "a", |p| 2 * (p % 2));
    let grpo = eval_dir_of(root, "grpo2", "m", "b", |p| {
        usize::from(p % 3 != 0) * 2 * (p % 2)
    });
    let report = run_compare(&config(sft, grpo)).unwrap();
    assert!(report.finding.difference.is_none());
    assert!(!report.finding.supported);
    assert!(
        report.finding.sentence.ends_with("overlap."),
        "{}",
        report.finding.sentence
    );
}

fn dpo_run(root: &Path) -> PathBuf {
    let dir = root.join("dpo_train");
    std::fs::create_dir_all(&dir).unwrap();
    let summary = serde_json::json!({"preference_loss": "sigmoid", "steps": 4,
        "examples": {"kept": 16, "dropped": 0, "truncated": 0}, "eval_pairs": 2,
        "tokens_seen": 3000, "reference_tokens": 2000, "final_loss": 0.5, "final_eval": null,
        "wall_seconds": 3.0, "parameters": 1000, "flops": 2.2e7, "compute_dtype": "F32",
        "model_dir": dir.join("final")});
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    std::fs::write(
        dir.join("metrics.jsonl"),
        "{\"step\":1,\"loss\":0.69}\n{\"step\":4,\"loss\":0.5}\n",
    )
    .unwrap();
    dir
}

/// An SFT → DPO row charges both runs' compute (DPO's reference scoring as forward-only FLOPs),
/// and every other run gets its paired difference against `sft`, called higher or lower only when
/// the interval excludes 0.
#[test]
fn a_dpo_run_is_charged_and_every_run_is_compared_with_sft() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let sft_train = sft_run(root, 10_000);
    let dpo_train = dpo_run(root);
    let sft = eval_dir(root, "sft", "s", |p| usize::from(p % 2 == 0));
    // DPO: every problem SFT got right, and a third of the others.
    let dpo = eval_dir(root, "dpo", "d", |p| {
        if p % 2 == 0 || p % 3 == 0 {
            K
        } else {
            0
        }
    });
    let same = eval_dir(root, "same", "x", |p| usize::from(p % 2 == 0));
    let config = CompareConfig {
        runs: vec![
            spec("sft", vec![sft], vec![sft_train.clone()]),
            spec("sft→dpo", vec![dpo], vec![sft_train, dpo_train]),
            spec("same", vec![same], Vec::new()),
        ],
        out: root.join("report"),
        seed: 1,
        bootstrap: 500,
    };
    let report = run_compare(&config).unwrap();
    let row = report.runs.iter().find(|r| r.label == "sft→dpo").unwrap();
    assert_eq!(row.update_flops, 6.0 * 1000.0 * (10_000.0 + 3000.0));
    assert_eq!(row.forward_flops, 2.0 * 1000.0 * 2000.0);
    assert!(row.data.contains("DPO: 16 pairs, 4 steps"), "{}", row.data);
    let against: Vec<(&str, &str)> = report
        .against_sft
        .iter()
        .map(|a| (a.label.as_str(), a.verdict()))
        .collect();
    assert_eq!(
        against,
        vec![
            ("sft→dpo", "higher than sft"),
            ("same", "no difference shown (the interval includes 0)")
        ]
    );
    let markdown = std::fs::read_to_string(root.join("report/report.md")).unwrap();
    assert!(markdown.contains("## Against `sft`"), "{markdown}");
    assert!(markdown.contains("| sft→dpo |"), "{markdown}");
}
