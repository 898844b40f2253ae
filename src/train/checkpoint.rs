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
        source,
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
    let entries = std::fs::read_dir(root.join("checkpoints")).ok()?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
                && p.join(STATE_FILE).is_file()
        })
        .max()
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
    let Some(dir) = latest_checkpoint(out).filter(|_| resume) else {
        return Ok(fresh);
    };
    let state = load_checkpoint(&dir, trainable, optimizer)?;
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
    let weights = candle_core::safetensors::load(&weights_path, &Device::Cpu)?;
    for (name, var) in &trainable.params {
        let tensor = weights.get(name).ok_or_else(|| ModelError::Weights {
            file: weights_path.display().to_string(),
            tensor: name.clone(),
            message: "missing from the checkpoint".into(),
        })?;
        var.set(&tensor.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let moments = candle_core::safetensors::load(&optimizer_path, &Device::Cpu)?;
    optimizer.load_state(
        &moments,
        state.optimizer_steps.unwrap_or(state.step),
        &optimizer_path.display().to_string(),
    )?;
    Ok(state)
}
