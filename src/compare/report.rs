//! The comparison report: one row per labelled run, as JSON (`report.json`) and as a Markdown
//! table with the finding (`report.md`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::bootstrap::Interval;
use super::finding::Finding;
use super::runs::{EvalRun, TrainKind, TrainRun};

/// One labelled run of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The label (`base`, `sft`, `grpo`, …).
    pub label: String,
    /// Its evaluation directories (one per eval seed).
    pub eval_dirs: Vec<PathBuf>,
    /// Problems evaluated.
    pub problems: usize,
    /// Samples per problem.
    pub k: usize,
    /// pass@1 with its 95% bootstrap interval.
    pub pass_at_1: Interval,
    /// cons@k with its 95% bootstrap interval.
    pub cons_at_k: Interval,
    /// Its training run directories (none for the base model).
    pub train_dirs: Vec<PathBuf>,
    /// 6 · parameters · update tokens, summed over training runs.
    pub update_flops: f64,
    /// 2 · parameters · forward-only tokens (rollouts, reference scoring), summed over training runs.
    pub forward_flops: f64,
    /// Teacher data-generation FLOPs, when a generation summary was given.
    pub data_generation_flops: Option<f64>,
    /// Training wall time, seconds.
    pub train_wall_seconds: f64,
    /// What the training consumed, in words.
    pub data: String,
}

impl RunReport {
    /// The row of `label` from its eval runs, intervals, training runs and data-generation FLOPs.
    pub fn new(
        label: &str,
        evals: &[EvalRun],
        pass_at_1: Interval,
        cons_at_k: Interval,
        trains: &[TrainRun],
        data_generation_flops: Option<f64>,
    ) -> Self {
        let data: Vec<String> = trains
            .iter()
            .map(|t| match t.kind {
                TrainKind::Sft => format!(
                    "SFT: {} examples, {} steps, {:.3e} tokens",
                    t.examples.map_or("?".to_string(), |e| e.to_string()),
                    t.steps,
                    t.update_tokens
                ),
                TrainKind::Grpo => format!(
                    "GRPO: {} steps, {:.3e} forward-only tokens",
                    t.steps, t.forward_tokens
                ),
                TrainKind::Dpo => format!(
                    "DPO: {} pairs, {} steps, {:.3e} tokens",
                    t.examples.map_or("?".to_string(), |e| e.to_string()),
                    t.steps,
                    t.update_tokens
                ),
            })
            .collect();
        RunReport {
            label: label.to_string(),
            eval_dirs: evals.iter().map(|e| e.dir.clone()).collect(),
            problems: evals.first().map_or(0, |e| e.ids.len()),
            k: evals.first().map_or(0, |e| e.summary.k),
            pass_at_1,
            cons_at_k,
            train_dirs: trains.iter().map(|t| t.dir.clone()).collect(),
            update_flops: trains
                .iter()
                .map(TrainRun::update_flops)
                .fold(0.0, |a, b| a + b),
            forward_flops: trains
                .iter()
                .map(TrainRun::forward_flops)
                .fold(0.0, |a, b| a + b),
            data_generation_flops,
            train_wall_seconds: trains
                .iter()
                .map(|t| t.wall_seconds)
                .fold(0.0, |a, b| a + b),
            data: if data.is_empty() {
                "none (not trained here)".into()
            } else {
                data.join("; ")
            },
        }
    }

    /// Training FLOPs: updates plus forward-only passes (teacher data generation excluded).
    pub fn train_flops(&self) -> f64 {
        self.update_flops + self.forward_flops
    }

    /// Whether the row has training runs.
    pub fn trained(&self) -> bool {
        !self.train_dirs.is_empty()
    }
}

/// The whole report (also `report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// One row per label, in the order given.
    pub runs: Vec<RunReport>,
    /// The SFT-vs-GRPO finding, or why there is none.
    pub finding: Finding,
    /// Every other run's pass@1 against `sft`'s on the same problems (absent in older reports).
    #[serde(default)]
    pub against_sft: Vec<AgainstSft>,
    /// Seed of the bootstrap.
    pub seed: u64,
    /// Bootstrap replicates.
    pub bootstrap: usize,
}

/// One run's pass@1 minus `sft`'s, problem by problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgainstSft {
    /// The run.
    pub label: String,
    /// The paired-bootstrap 95% interval of pass@1(run) − pass@1(sft).
    pub difference: Interval,
}

impl AgainstSft {
    /// What the interval supports: higher, lower, or no difference shown.
    pub fn verdict(&self) -> &'static str {
        if !self.difference.excludes_zero() {
            "no difference shown (the interval includes 0)"
        } else if self.difference.mean > 0.0 {
            "higher than sft"
        } else {
            "lower than sft"
        }
    }
}

/// The columns of the report table, in order.
pub const TABLE_COLUMNS: [&str; 9] = [
    "run",
    "eval seeds",
    "problems × k",
    "pass@1 [95% CI]",
    "cons@k [95% CI]",
    "train FLOPs (updates + forward-only)",
    "teacher data FLOPs",
    "train wall time (s)",
    "data",
];

fn interval(i: &Interval) -> String {
    format!("{:.3} [{:.3}, {:.3}]", i.mean, i.low, i.high)
}

impl CompareReport {
    /// The report as Markdown: the table, the finding, how intervals and compute were computed.
    pub fn markdown(&self) -> String {
        let mut md = String::from("# Distillation vs RL\n\n");
        md.push_str(&format!("| {} |\n", TABLE_COLUMNS.join(" | ")));
        md.push_str(&format!("|{}\n", "---|".repeat(TABLE_COLUMNS.len())));
        for run in &self.runs {
            let train = if run.trained() {
                format!(
                    "{:.3e} ({:.3e} + {:.3e})",
                    run.train_flops(),
                    run.update_flops,
                    run.forward_flops
                )
            } else {
                "0".into()
            };
            let cells = [
                run.label.clone(),
                run.eval_dirs.len().to_string(),
                format!("{} × {}", run.problems, run.k),
                interval(&run.pass_at_1),
                interval(&run.cons_at_k),
                train,
                run.data_generation_flops
                    .map_or("—".into(), |f| format!("{f:.3e}")),
                format!("{:.1}", run.train_wall_seconds),
                run.data.clone(),
            ];
            md.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        md.push_str(&format!("\n## Finding\n\n{}\n", self.finding.sentence));
        if !self.against_sft.is_empty() {
            md.push_str(
                "\n## Against `sft`\n\n| run | pass@1 − sft's [95% paired CI] | the interval shows |\n|---|---|---|\n",
            );
            for row in &self.against_sft {
                md.push_str(&format!(
                    "| {} | {} | {} |\n",
                    row.label,
                    interval(&row.difference),
                    row.verdict()
                ));
            }
        }
        md.push_str(&format!(
            "\n## Method\n\n- Intervals: 95% percentile bootstrap, {} replicates, seed {}, resampling \
             problems with replacement and, when a run has several eval directories, eval seeds too.\n\
             - Finding: {}\n- Training compute: 6 · parameters · tokens for updates (forward + \
             backward) plus 2 · parameters · tokens for forward-only passes (rollout prefill and \
             sampling, the KL reference's scoring); teacher data generation \
             (2 · teacher parameters · generated tokens) is a separate column and not part of the \
             matched-compute test.\n\n![accuracy vs compute](accuracy_vs_compute.svg)\n\n\
             ![training curves](training_curves.svg)\n",
            self.bootstrap,
            self.seed,
            super::finding::METHOD
        ));
        md
    }
}
