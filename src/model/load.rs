//! Finding and loading a model: a Hugging Face directory (single or sharded safetensors), a hub id
//! through the standard HF cache (`HF_HOME`, `HF_HUB_OFFLINE`), or a llama2.c `.bin` checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::Value;

use super::config::{parse_json, ModelConfig};
use super::decoder::Decoder;
use super::error::{ModelError, Result};
use super::llama2c;
use super::tokenizer::Tokenizer;
use super::weights::Weights;

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A Hugging Face model directory (also what a hub id resolves to).
    HfDir(PathBuf),
    /// A llama2.c checkpoint and its tokenizer.
    Llama2c {
        /// The `.bin` checkpoint.
        checkpoint: PathBuf,
        /// The `tokenizer.bin` beside it.
        tokenizer: PathBuf,
    },
}

/// A model ready to run: weights, tokenizer and the ids that end generation.
#[derive(Debug)]
pub struct LoadedModel {
    /// The decoder with its weights.
    pub model: Decoder,
    /// Its tokenizer and chat template.
    pub tokenizer: Tokenizer,
    /// Ids that end generation: `generation_config.json`, else `config.json`, else the tokenizer's EOS.
    pub eos_token_ids: Vec<u32>,
    /// Where it was loaded from.
    pub source: ModelSource,
    /// The dtype the weights were stored in (computation may use another).
    pub stored_dtype: DType,
    /// The source's `generation_config.json` as it was (sampling defaults and all), when it has one:
    /// an export keeps its fields (see [`super::save::save_hf_dir_keeping`]).
    pub generation_config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Resolves a user's model reference: an existing directory, a llama2.c `.bin` file (its tokenizer is
/// `tokenizer.bin` or the single `tok*.bin` beside it), or a hub id `org/name` found in (or, unless
/// `HF_HUB_OFFLINE=1`, downloaded into) the Hugging Face cache.
pub fn resolve(spec: &str) -> Result<ModelSource> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(ModelSource::HfDir(path.to_path_buf()));
    }
    if path.is_file() {
        if path.extension().is_none_or(|e| e != "bin") {
            return Err(not_a_model_file(path));
        }
        return Ok(ModelSource::Llama2c {
            checkpoint: path.to_path_buf(),
            tokenizer: llama2c_tokenizer_beside(path)?,
        });
    }
    if is_hub_id(spec) {
        return resolve_hub(spec).map(ModelSource::HfDir);
    }
    Err(ModelError::NotFound(format!(
        "{spec}: no such model directory or file, and not a hub id of the form org/name"
    )))
}

/// Loads a model from a reference (see [`resolve`]) onto `device`, computing in `dtype`.
pub fn load(spec: &str, device: &Device, dtype: DType) -> Result<LoadedModel> {
    load_source(resolve(spec)?, device, dtype)
}

/// Loads a model from a resolved source.
pub fn load_source(source: ModelSource, device: &Device, dtype: DType) -> Result<LoadedModel> {
    match &source {
        ModelSource::HfDir(dir) => {
            let config = ModelConfig::from_file(&require_file(dir, "config.json")?)?;
            let weights = read_dir_weights(dir, device)?;
            weights.check_accounted_for(&config.tensor_shapes(), |name| {
                is_ignorable_tensor(name, config.tie_word_embeddings)
            })?;
            let tokenizer = Tokenizer::from_dir(dir)?;
            let stored_dtype = weights.dtype().unwrap_or(dtype);
            let model = Decoder::from_weights(&config, &weights, dtype, device)?;
            let eos_token_ids = eos_ids(dir, &config, &tokenizer)?;
            let generation_config = read_generation_config(dir)?;
            Ok(LoadedModel {
                model,
                tokenizer,
                eos_token_ids,
                source,
                stored_dtype,
                generation_config,
            })
        }
        ModelSource::Llama2c {
            checkpoint,
            tokenizer,
        } => {
            let (config, weights) = llama2c::load_checkpoint(checkpoint, device)?;
            let tokenizer = Tokenizer::from_llama2c(tokenizer)?;
            let model = Decoder::from_weights(&config, &weights, dtype, device)?;
            let eos_token_ids = config.eos_token_ids.clone();
            Ok(LoadedModel {
                model,
                tokenizer,
                eos_token_ids,
                source,
                stored_dtype: DType::F32,
                generation_config: None,
            })
        }
    }
}

/// The safetensors files of an HF directory: `model.safetensors`, or every shard that
/// `model.safetensors.index.json` names, with the file the index assigns each tensor.
#[derive(Debug)]
pub struct WeightFiles {
    /// The files, each once, in name order.
    pub files: Vec<PathBuf>,
    /// Tensor name → the file the index says holds it (empty for a single file).
    pub expected_in: BTreeMap<String, PathBuf>,
    /// The index file, or the single file: where a tensor no file names is reported.
    pub default_file: PathBuf,
}

/// Lists the safetensors files of the HF directory `dir` (see [`WeightFiles`]); a file the
/// index names that does not exist is an error naming it.
pub fn weight_files(dir: &Path) -> Result<WeightFiles> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let index_name = index_path.display().to_string();
        let text = std::fs::read_to_string(&index_path).map_err(|source| ModelError::Io {
            path: index_path.clone(),
            cause: source,
        })?;
        let index = parse_json(&text, &index_name)?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| ModelError::Config {
                file: index_name.clone(),
                field: "weight_map".into(),
                message: "missing or not an object".into(),
            })?;
        let mut expected_in = BTreeMap::new();
        let mut shards = BTreeSet::new();
        for (tensor, shard) in map {
            let shard = shard.as_str().ok_or_else(|| ModelError::Config {
                file: index_name.clone(),
                field: format!("weight_map.{tensor}"),
                message: "expected a file name".into(),
            })?;
            expected_in.insert(tensor.clone(), dir.join(shard));
            shards.insert(shard.to_string());
        }
        let files = shards
            .iter()
            .map(|shard| require_file(dir, shard))
            .collect::<Result<_>>()?;
        return Ok(WeightFiles {
            files,
            expected_in,
            default_file: index_path,
        });
    }
    let single = dir.join("model.safetensors");
    if !single.is_file() {
        return Err(ModelError::NotFound(format!(
            "{}: missing model.safetensors (and no model.safetensors.index.json)",
            dir.display()
        )));
    }
    Ok(WeightFiles {
        files: vec![single.clone()],
        expected_in: BTreeMap::new(),
        default_file: single,
    })
}

/// All weights of an HF directory (see [`weight_files`]).
pub fn read_dir_weights(dir: &Path, device: &Device) -> Result<Weights> {
    let listed = weight_files(dir)?;
    let mut weights = Weights::new(listed.default_file.display().to_string());
    for (tensor, file) in &listed.expected_in {
        weights.expect_in(tensor.clone(), file.display().to_string());
    }
    for file in &listed.files {
        weights.read_safetensors(file, device)?;
    }
    Ok(weights)
}

/// Checkpoint tensors a model may leave unused: `lm_head.weight` under tied embeddings
/// (transformers ties it to the embedding and ignores the stored copy) and the `rotary_emb.inv_freq`
/// buffers older checkpoints saved (recomputed from the config).
pub(crate) fn is_ignorable_tensor(name: &str, tied: bool) -> bool {
    (tied && name == "lm_head.weight") || name.ends_with(".rotary_emb.inv_freq")
}

fn require_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::NotFound(format!("{}: missing", path.display())))
    }
}

/// The JSON object in `dir/generation_config.json`, when the file exists.
fn read_generation_config(
    dir: &Path,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
        path: path.clone(),
        cause: source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::Config {
            file: path.display().to_string(),
            field: "(document)".into(),
            message: format!("not a JSON object: {e}"),
        })
}

fn eos_ids(dir: &Path, config: &ModelConfig, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
    let generation = dir.join("generation_config.json");
    if generation.is_file() {
        let text = std::fs::read_to_string(&generation).map_err(|source| ModelError::Io {
            path: generation.clone(),
            cause: source,
        })?;
        let parsed =
            ModelConfig::eos_ids_from_generation_config(&text, &generation.display().to_string())?;
        if !parsed.is_empty() {
            return Ok(parsed);
        }
    }
    if !config.eos_token_ids.is_empty() {
        return Ok(config.eos_token_ids.clone());
    }
    Ok(tokenizer.eos_token_id().into_iter().collect())
}

/// The error for a file given as a model that is no llama2.c checkpoint; a file inside a
/// Hugging Face model directory points at that directory.
fn not_a_model_file(path: &Path) -> ModelError {
    let parent = path.parent().filter(|p| p.join("config.json").is_file());
    let hint = match parent {
        Some(dir) => format!(" (did you mean its directory {}?)", dir.display()),
        None => String::new(),
    };
    ModelError::NotFound(format!(
        "{}: a file that is not a model: give a Hugging Face model directory (config.json and \
         *.safetensors), a hub id org/name, or a llama2.c checkpoint (.bin){hint}",
        path.display()
    ))
}

fn llama2c_tokenizer_beside(checkpoint: &Path) -> Result<PathBuf> {
    // A bare file name has an empty parent: the checkpoint is in the working directory.
    let dir = match checkpoint.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let named = dir.join("tokenizer.bin");
    if named.is_file() {
        return Ok(named);
    }
    let candidates: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            cause: source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p != checkpoint
                && p.extension().is_some_and(|e| e == "bin")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("tok"))
        })
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(ModelError::Tokenizer {
            file: named.display().to_string(),
            message:
                "a llama2.c checkpoint needs tokenizer.bin (or exactly one tok*.bin) beside it"
                    .into(),
        }),
    }
}

fn is_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Whether `HF_HUB_OFFLINE` forbids downloads.
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"))
}

/// Whether `spec` names a hub model that is neither a local path nor in the HF cache yet.
pub fn is_uncached_hub_id(spec: &str) -> bool {
    !Path::new(spec).exists() && is_hub_id(spec) && cached_snapshot(spec).is_none()
}

/// The snapshot directory of `repo_id` in the HF cache, when its config.json is there.
fn cached_snapshot(repo_id: &str) -> Option<PathBuf> {
    let config = hf_hub::Cache::from_env()
        .model(repo_id.to_string())
        .get("config.json")?;
    config.parent().map(Path::to_path_buf)
}

/// The snapshot directory of `repo_id` in the HF cache, downloading the files a model needs unless offline.
fn resolve_hub(repo_id: &str) -> Result<PathBuf> {
    if let Some(dir) = cached_snapshot(repo_id) {
        return Ok(dir);
    }
    if hub_offline() {
        return Err(ModelError::NotFound(format!(
            "{repo_id}: not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set",
            hf_hub::Cache::from_env().path().display()
        )));
    }
    download_hub(repo_id)
}

fn download_hub(repo_id: &str) -> Result<PathBuf> {
    let hub_error = |file: &str, e: hf_hub::api::sync::ApiError| {
        ModelError::NotFound(format!("{repo_id}: {file}: {e}"))
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .build()
        .map_err(|e| hub_error("(hub)", e))?;
    let repo = api.model(repo_id.to_string());
    let config = repo
        .get("config.json")
        .map_err(|e| hub_error("config.json", e))?;
    repo.get("tokenizer.json")
        .map_err(|e| hub_error("tokenizer.json", e))?;
    for optional in ["tokenizer_config.json", "generation_config.json"] {
        // Optional files: their absence is not an error.
        let _ = repo.get(optional);
    }
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io {
                path: index,
                cause: source,
            })?;
            let shards: BTreeSet<String> = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("weight_map").and_then(Value::as_object).cloned())
                .map(|m| {
                    m.values()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for shard in shards {
                repo.get(&shard).map_err(|e| hub_error(&shard, e))?;
            }
        }
        Err(_) => {
            repo.get("model.safetensors")
                .map_err(|e| hub_error("model.safetensors", e))?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}
