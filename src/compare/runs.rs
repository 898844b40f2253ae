//! Reading what `distill compare` compares: evaluation directories (`summary.json` +
//! `data/samples.parquet`, or `samples.parquet` in directories written before the `data/` folder), training runs (`summary.json` + `metrics.jsonl` of `distill train` or
//! `distill grpo`) and optional teacher data-generation summaries.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::eval::samples::{read_samples, samples_in};
use crate::eval::{problem_scores, EvalSummary};
use crate::train::metrics::MetricsLog;

/// One evaluation directory, scored per problem.
#[derive(Debug, Clone)]
pub struct EvalRun {
    /// The directory.
    pub dir: PathBuf,
    /// Its `summary.json`.
    pub summary: EvalSummary,
    /// Problem ids in order.
    pub ids: Vec<String>,
    /// Per-problem pass@1 (fraction of correct samples).
    pub pass_at_1: Vec<f64>,
    /// Per-problem cons@k (1 when the vote is correct).
    pub cons_at_k: Vec<f64>,
}

/// Loads an evaluation directory.
pub fn load_eval(dir: &Path) -> anyhow::Result<EvalRun> {
    let summary_path = dir.join("summary.json");
    let text = std::fs::read_to_string(&summary_path)
        .with_context(|| summary_path.display().to_string())?;
    let summary: EvalSummary = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not an eval summary (run `distill eval` to make one)",
            summary_path.display()
        )
    })?;
    let rows = read_samples(&samples_in(dir))?;
    let scores = problem_scores(&rows);
    Ok(EvalRun {
        dir: dir.to_path_buf(),
        summary,
        ids: scores.iter().map(|(id, _, _)| id.clone()).collect(),
        pass_at_1: scores.iter().map(|(_, _, s)| s.pass_at_1).collect(),
        cons_at_k: scores
            .iter()
            .map(|(_, _, s)| f64::from(u8::from(s.cons_correct)))
            .collect(),
    })
}

/// Which trainer made a training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainKind {
    /// `distill train` (SFT): `tokens_seen`, curve `loss`.
    Sft,
    /// `distill grpo`: `update_tokens`, `rollout_tokens`, `reference_tokens`, curve `reward`.
    Grpo,
    /// `distill dpo`: `preference_loss`, `tokens_seen`, `reference_tokens`, curve `loss`.
    Dpo,
}

/// A training run's compute and curve.
#[derive(Debug, Clone)]
pub struct TrainRun {
    /// The directory.
    pub dir: PathBuf,
    /// SFT or GRPO.
    pub kind: TrainKind,
    /// Parameters of the trained model.
    pub parameters: f64,
    /// Tokens through forward + backward.
    pub update_tokens: f64,
    /// Tokens through forward-only passes (0 for SFT): rollout prefill and sampling, and the frozen
    /// reference's scoring for GRPO's KL term or DPO's log-ratios (`reference_tokens`, absent in
    /// older GRPO summaries).
    pub forward_tokens: f64,
    /// Wall time, seconds.
    pub wall_seconds: f64,
    /// Optimiser (SFT) or rollout (GRPO) steps.
    pub steps: u64,
    /// SFT examples kept for training, when recorded.
    pub examples: Option<u64>,
    /// `(step, loss)` for SFT and DPO, `(step, reward)` for GRPO, from `metrics.jsonl`.
    pub curve: Vec<(f64, f64)>,
}

impl TrainRun {
    /// FLOPs of the updates: 6 · parameters · update tokens.
    pub fn update_flops(&self) -> f64 {
        6.0 * self.parameters * self.update_tokens
    }

    /// FLOPs of the forward-only passes: 2 · parameters · forward tokens.
    pub fn forward_flops(&self) -> f64 {
        2.0 * self.parameters * self.forward_tokens
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

fn number(summary: &Value, path: &Path, field: &str) -> anyhow::Result<f64> {
    summary.get(field).and_then(Value::as_f64).with_context(|| {
        format!(
            "{}: field `{field}` is missing or not a number",
            path.display()
        )
    })
}

/// Loads a training run directory (its `summary.json`, and `metrics.jsonl` when present).
pub fn load_train(dir: &Path) -> anyhow::Result<TrainRun> {
    let path = dir.join("summary.json");
    let summary = read_json(&path)?;
    let kind = if summary.get("rollout_tokens").is_some() {
        TrainKind::Grpo
    } else if summary.get("preference_loss").is_some() {
        TrainKind::Dpo
    } else if summary.get("tokens_seen").is_some() {
        TrainKind::Sft
    } else {
        bail!(
            "{}: not an SFT (field `tokens_seen`), GRPO (field `rollout_tokens`) or DPO (field `preference_loss`) summary",
            path.display()
        );
    };
    let (update_tokens, forward_tokens, key) = match kind {
        TrainKind::Sft => (number(&summary, &path, "tokens_seen")?, 0.0, "loss"),
        TrainKind::Grpo => (
            number(&summary, &path, "update_tokens")?,
            number(&summary, &path, "rollout_tokens")?
                + summary
                    .get("reference_tokens")
                    .map_or(Ok(0.0), |_| number(&summary, &path, "reference_tokens"))?,
            "reward",
        ),
        TrainKind::Dpo => (
            number(&summary, &path, "tokens_seen")?,
            number(&summary, &path, "reference_tokens")?,
            "loss",
        ),
    };
    let metrics = dir.join("metrics.jsonl");
    let curve = if metrics.exists() {
        MetricsLog::read(&metrics)?
            .iter()
            .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
            .collect()
    } else {
        Vec::new()
    };
    Ok(TrainRun {
        dir: dir.to_path_buf(),
        kind,
        parameters: number(&summary, &path, "parameters")?,
        update_tokens,
        forward_tokens,
        wall_seconds: number(&summary, &path, "wall_seconds")?,
        steps: number(&summary, &path, "steps")? as u64,
        examples: summary
            .get("examples")
            .and_then(|e| e.get("kept"))
            .and_then(Value::as_u64),
        curve,
    })
}

/// The training run behind an evaluated model, when the model is `<run>/final` (or `<run>`)
/// of a run directory with a training `summary.json`.
pub fn train_dir_of_model(model: &str) -> Option<PathBuf> {
    let path = Path::new(model);
    [path.parent(), Some(path)]
        .into_iter()
        .flatten()
        .filter(|dir| !dir.as_os_str().is_empty())
        .find(|dir| {
            read_json(&dir.join("summary.json"))
                .is_ok_and(|s| s.get("tokens_seen").is_some() || s.get("rollout_tokens").is_some())
        })
        .map(Path::to_path_buf)
}

/// FLOPs of teacher data generation from a generation stage's summary: 2 · parameters · tokens,
/// with parameters from `teacher_parameters` (or `parameters`) and tokens from `generated_tokens`
/// (or `completion_tokens`).
pub fn data_generation_flops(path: &Path) -> anyhow::Result<f64> {
    let summary = read_json(path)?;
    let first = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| summary.get(*n).and_then(Value::as_f64))
            .with_context(|| {
                format!(
                    "{}: field `{}` (or `{}`) is missing or not a number",
                    path.display(),
                    names[0],
                    names[1]
                )
            })
    };
    let parameters = first(["teacher_parameters", "parameters"])?;
    let tokens = first(["generated_tokens", "completion_tokens"])?;
    Ok(2.0 * parameters * tokens)
}
