//! The model a TRL launch starts from (an HF directory), and turning the launch's outputs into
//! distill's run layout: the final model directory completed
//! with the student's tokenizer and generation files (and checked to load in distill), TRL's log
//! history read back, `metrics.jsonl` written from it, and whether a checkpoint exists to resume.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::model::load::{resolve, ModelSource};
use crate::model::save::write_atomic;
use crate::model::{ModelConfig, Tokenizer};

/// The source model's files that make a model directory usable beside the trained weights: the
/// tokenizer and chat template and the generation defaults (training does not change them).
const KEPT_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
];

/// The HF model directory that `model` (the recipe's `field`) names: TRL loads nothing else, so a
/// llama2.c checkpoint is refused with the command that converts it.
pub fn hf_model_dir(field: &str, model: &str) -> anyhow::Result<PathBuf> {
    match resolve(model).with_context(|| format!("loading {field} {model}"))? {
        ModelSource::HfDir(dir) => Ok(dir),
        ModelSource::Llama2c { checkpoint, .. } => bail!(
            "field {field}: {} is a llama2.c checkpoint; the trl engine needs an HF model \
             directory (export it with `distill model export`)",
            checkpoint.display()
        ),
    }
}

/// `path` made absolute (the launch script runs in its own directory), as text.
pub fn absolute(path: &Path) -> anyhow::Result<String> {
    Ok(std::path::absolute(path)
        .with_context(|| path.display().to_string())?
        .display()
        .to_string())
}

/// Whether TRL's `output_dir` holds a `checkpoint-N` directory to resume from.
pub fn has_checkpoint(checkpoints: &Path) -> bool {
    std::fs::read_dir(checkpoints).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
    })
}

/// Copies the source model's tokenizer and generation files into TRL's saved model directory and
/// checks that distill reads its config and tokenizer.
pub fn complete_model_dir(source: &Path, model_dir: &Path) -> anyhow::Result<()> {
    for name in KEPT_FILES {
        let from = source.join(name);
        if from.is_file() {
            std::fs::copy(&from, model_dir.join(name)).with_context(|| {
                format!("copying {} into {}", from.display(), model_dir.display())
            })?;
        }
    }
    ModelConfig::from_file(&model_dir.join("config.json"))
        .and_then(|_| Tokenizer::from_dir(model_dir))
        .with_context(|| {
            format!(
                "{}: TRL's model does not load in distill",
                model_dir.display()
            )
        })?;
    Ok(())
}

/// The trainer state TRL saved at the end (`global_step`, `num_input_tokens_seen`,
/// `log_history`).
pub fn read_trainer_state(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "{}: TRL left no trainer state (did the launch finish?)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// Writes `records` as the run's `metrics.jsonl`.
pub fn write_metrics(out: &Path, records: &[Value]) -> anyhow::Result<()> {
    let mut text = String::new();
    for record in records {
        text.push_str(&record.to_string());
        text.push('\n');
    }
    write_atomic(&out.join("metrics.jsonl"), text.as_bytes())?;
    Ok(())
}

/// The log-history entries of optimiser steps (those with a training `loss`).
pub fn step_entries(state: &Value) -> Vec<&Value> {
    state["log_history"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e.get("loss").is_some() && e.get("step").is_some())
                .collect()
        })
        .unwrap_or_default()
}
