//! Saving a model as a Hugging Face directory (config.json, model.safetensors, generation_config.json,
//! tokenizer files) that distill and transformers load back. Every file is written to a temporary
//! name and renamed, so an interrupted save never leaves a half-written file under a final name.

use std::collections::HashMap;
use std::path::Path;

use candle_core::DType;
use serde_json::json;

use super::decoder::Decoder;
use super::error::{ModelError, Result};
use super::tokenizer::Tokenizer;

/// The `torch_dtype` string transformers uses for a candle dtype.
pub fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

/// Writes `model` (in its current dtype), its tokenizer files and its EOS ids into `dir`.
pub fn save_hf_dir(
    model: &Decoder,
    tokenizer: &Tokenizer,
    eos_token_ids: &[u32],
    dir: &Path,
) -> Result<()> {
    save_hf_dir_keeping(model, tokenizer, eos_token_ids, None, dir)
}

/// [`save_hf_dir`] for a model trained from a source whose `generation_config.json` was
/// `source_generation`: the exported one keeps every field of it (temperature, top_p, top_k,
/// do_sample, …) and overrides only `bos_token_id` and `eos_token_id`.
pub fn save_hf_dir_keeping(
    model: &Decoder,
    tokenizer: &Tokenizer,
    eos_token_ids: &[u32],
    source_generation: Option<&serde_json::Map<String, serde_json::Value>>,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        cause: source,
    })?;
    let tensors: HashMap<String, candle_core::Tensor> = model
        .named_parameters()
        .into_iter()
        .map(|(name, t)| (name, t.detach()))
        .collect();
    let weights_path = dir.join("model.safetensors");
    let tmp = crate::output_dir::temp_path_for(&weights_path);
    write_safetensors(&tensors, &tmp)?;
    rename(&tmp, &weights_path)?;

    let mut config = model.config().clone();
    config.eos_token_ids = eos_token_ids.to_vec();
    let config_json = config.to_hf_json(torch_dtype_name(model.dtype()));
    write_atomic(&dir.join("config.json"), &pretty(&config_json))?;
    let mut generation = source_generation.cloned().unwrap_or_default();
    generation.insert("bos_token_id".into(), json!(config.bos_token_id));
    generation.insert("eos_token_id".into(), json!(eos_token_ids));
    write_atomic(
        &dir.join("generation_config.json"),
        &pretty(&serde_json::Value::Object(generation)),
    )?;

    for source in tokenizer.source_files() {
        let name = match source.extension().and_then(|e| e.to_str()) {
            Some("bin") => "tokenizer.bin".to_string(),
            _ => source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let bytes = std::fs::read(source).map_err(|e| ModelError::Io {
            path: source.clone(),
            cause: e,
        })?;
        write_atomic(&dir.join(name), &bytes)?;
    }
    Ok(())
}

fn pretty(value: &serde_json::Value) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

/// Writes `tensors` to the safetensors file `path`, readable as the umask allows (the safetensors
/// writer itself creates files 0600, which hid trained models from other users of a machine).
pub fn write_safetensors(
    tensors: &HashMap<String, candle_core::Tensor>,
    path: &Path,
) -> Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(|e| ModelError::Weights {
        file: path.display().to_string(),
        tensor: "(all)".into(),
        message: format!("cannot write: {e}"),
    })?;
    use std::os::unix::fs::PermissionsExt;
    let mode = 0o666 & !process_umask();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        ModelError::Io {
            path: path.to_path_buf(),
            cause: source,
        }
    })
}

/// The process's umask, from `/proc/self/status` (0o022 where that is unavailable).
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = crate::output_dir::temp_path_for(path);
    std::fs::write(&tmp, bytes).map_err(|source| ModelError::Io {
        path: tmp.clone(),
        cause: source,
    })?;
    rename(&tmp, path)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|source| ModelError::Io {
        path: to.to_path_buf(),
        cause: source,
    })
}
