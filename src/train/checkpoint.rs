//! Training checkpoints: an HF model directory plus optimiser moments and the trainer state (step,
//! data cursor, config hash), written under a temporary name and renamed, so the newest directory named
//! `step-NNNNNN` is always complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use super::trainable::TrainableDecoder;
use crate::model::save::{save_hf_dir_keeping, write_atomic};
use crate::model::{ModelError, Result, Tokenizer};

/// Where a run is in its data and schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps completed.
    pub step: u64,
    /// Epoch of the next batch.
    pub epoch: u64,
    /// Index of the next batch within its epoch's plan.
    pub batch_in_epoch: usize,
    /// Tokens trained on so far.
    pub tokens_seen: u64,
    /// AdamW steps taken so far (its bias correction and the learning-rate schedule run on them):
    /// `step` for SFT, μ × `step` for GRPO. Written from the optimiser by [`save_checkpoint`];
    /// absent in checkpoints from before it was recorded, which then resume at `step`.
    #[serde(default)]
    pub optimizer_steps: Option<u64>,
    /// Hash of the configuration that must match on resume.
    pub config_hash: String,
}

const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "trainer_state.json";

fn io_error(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}

/// The directory of the checkpoint after `step` steps.
pub fn checkpoint_dir(root: &Path, step: u64) -> PathBuf {
    root.join("checkpoints").join(format!("step-{step:06}"))
}

/// The model a run trains and exports: its tokenizer, EOS ids and the source's generation defaults.
#[derive(Clone, Copy)]
pub struct ExportInfo<'a> {
    /// The tokenizer saved beside the weights.
    pub tokenizer: &'a Tokenizer,
    /// Ids that end generation.
    pub eos_token_ids: &'a [u32],
    /// The source model's `generation_config.json`, whose fields an export keeps.
    pub generation_config: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl ExportInfo<'_> {
    /// Saves `trainable`'s weights as an HF directory `dir` with this tokenizer and generation config.
    pub fn save(&self, trainable: &TrainableDecoder, dir: &Path) -> Result<()> {
        save_hf_dir_keeping(
            &trainable.model,
            self.tokenizer,
            self.eos_token_ids,
            self.generation_config,
            dir,
        )
    }
}

/// Writes a checkpoint of `trainable` and `optimizer` at `state.step` (recording the optimiser's
/// step count in the trainer state); returns its directory.
pub fn save_checkpoint(
    root: &Path,
    trainable: &TrainableDecoder,
    export: &ExportInfo<'_>,
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(root, state.step);
    let tmp = dir.with_file_name(format!(".step-{:06}.tmp", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
    }
    export.save(trainable, &tmp)?;
    let moments: HashMap<String, candle_core::Tensor> =
        optimizer.state_tensors()?.into_iter().collect();
    crate::model::save::write_safetensors(&moments, &tmp.join(OPTIMIZER_FILE))?;
    let state = TrainerState {
        optimizer_steps: Some(optimizer.steps()),
        ..state.clone()
    };
    let json = serde_json::to_vec_pretty(&state).map_err(|e| ModelError::Invalid(e.to_string()))?;
    write_atomic(&tmp.join(STATE_FILE), &json)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| io_error(&dir, e))?;
    Ok(dir)
}

/// The newest complete checkpoint under `root`, if any.
pub fn latest_checkpoint(root: &Path) -> Option<PathBuf> {
    complete_checkpoints(root).into_iter().next()
}

/// Every complete checkpoint under `root` (a `step-N` directory with its trainer state), newest first.
fn complete_checkpoints(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join("checkpoints")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
                && p.join(STATE_FILE).is_file()
        })
        .collect();
    found.sort_by(|a, b| b.cmp(a));
    found
}

/// The state a run starts from: fresh (creating `out`), or with `resume` the newest complete
/// checkpoint under `out`, whose configuration hash must equal `config_hash`.
pub fn start_or_resume(
    out: &Path,
    config_hash: &str,
    resume: bool,
    trainable: &TrainableDecoder,
    optimizer: &mut AdamW,
) -> Result<TrainerState> {
    std::fs::create_dir_all(out).map_err(|e| io_error(out, e))?;
    let fresh = TrainerState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        tokens_seen: 0,
        optimizer_steps: None,
        config_hash: config_hash.to_string(),
    };
    let checkpoints = if resume {
        complete_checkpoints(out)
    } else {
        Vec::new()
    };
    if checkpoints.is_empty() {
        return Ok(fresh);
    }
    // A checkpoint damaged after it was written (a truncated file, a full disk) is skipped for the
    // newest intact one, and said so; if none is intact the run stops naming every failure.
    let mut failures = Vec::new();
    let mut restored = None;
    for dir in &checkpoints {
        match load_checkpoint(dir, trainable, optimizer) {
            Ok(state) => {
                restored = Some((dir.clone(), state));
                break;
            }
            Err(e) => {
                eprintln!("warning: cannot resume from {}: {e}", dir.display());
                failures.push(e.to_string());
            }
        }
    }
    let Some((dir, state)) = restored else {
        return Err(ModelError::Invalid(format!(
            "no checkpoint under {} can be resumed from:\n  {}",
            out.join("checkpoints").display(),
            failures.join("\n  ")
        )));
    };
    if !failures.is_empty() {
        eprintln!(
            "falling back to {}: the {} newer checkpoint(s) are damaged",
            dir.display(),
            failures.len()
        );
    }
    if state.config_hash != config_hash {
        return Err(ModelError::Invalid(format!(
            "{}: checkpoint was made with a different configuration (hash {} vs {config_hash}); start a new output directory",
            dir.display(),
            state.config_hash
        )));
    }
    eprintln!("resuming from {} (step {})", dir.display(), state.step);
    Ok(state)
}

/// Restores weights and optimiser state from checkpoint `dir`; returns its trainer state.
pub fn load_checkpoint(
    dir: &Path,
    trainable: &TrainableDecoder,
    optimizer: &mut AdamW,
) -> Result<TrainerState> {
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| io_error(&state_path, e))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        file: state_path.display().to_string(),
        field: "(document)".into(),
        message: e.to_string(),
    })?;
    let weights_path = dir.join("model.safetensors");
    let weights = read_safetensors(&weights_path)?;
    for (name, var) in &trainable.params {
        let tensor = weights.get(name).ok_or_else(|| ModelError::Weights {
            file: weights_path.display().to_string(),
            tensor: name.clone(),
            message: "missing from the checkpoint".into(),
        })?;
        var.set(&tensor.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let moments = read_safetensors(&optimizer_path)?;
    optimizer.load_state(
        &moments,
        state.optimizer_steps.unwrap_or(state.step),
        &optimizer_path.display().to_string(),
    )?;
    Ok(state)
}

/// The tensors of a safetensors file, with the file named in any error.
fn read_safetensors(path: &Path) -> Result<HashMap<String, candle_core::Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| ModelError::Weights {
        file: path.display().to_string(),
        tensor: "(header)".into(),
        message: format!("unreadable (truncated or corrupt?): {e}"),
    })
}
