//! Helpers shared by the integration tests: tiny models, inputs and data paths.
#![allow(dead_code)]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use distill::data::conversations::{for_each_conversation, Conversation};
use distill::data::DataError;
use distill::model::init::{random_weights, tiny_config};
use distill::model::{Architecture, AttentionMask, ModelConfig};
use distill::train::trainable::TrainableDecoder;

/// The shared real data, relative to the project root.
pub const DATA: &str = "../shared/data";

/// The stories260K checkpoint.
pub fn stories260k() -> String {
    format!("{DATA}/llama2c_stories260K/stories260K.bin")
}

/// A tiny config of `arch` with a vocabulary of `vocab` tokens.
pub fn tiny(arch: Architecture, vocab: usize) -> ModelConfig {
    tiny_config(arch, vocab)
}

/// A trainable tiny model with seeded random weights.
pub fn trainable(config: &ModelConfig, seed: u64, dtype: DType) -> TrainableDecoder {
    let weights = random_weights(config, seed, &Device::Cpu).unwrap();
    TrainableDecoder::new(config, &weights, dtype, &Device::Cpu).unwrap()
}

/// Deterministic token ids `[batch, len]` below `vocab`.
pub fn token_ids(batch: usize, len: usize, vocab: usize, seed: u32) -> Tensor {
    let ids: Vec<u32> = (0..batch * len)
        .map(|i| {
            ((i as u32 + 1).wrapping_mul(2_654_435_761u32) ^ seed.wrapping_mul(40_503))
                % vocab as u32
        })
        .collect();
    Tensor::from_vec(ids, (batch, len), &Device::Cpu).unwrap()
}

/// Positions `0..len` for every row.
pub fn positions(batch: usize, len: usize) -> Tensor {
    let p: Vec<u32> = (0..batch).flat_map(|_| 0..len as u32).collect();
    Tensor::from_vec(p, (batch, len), &Device::Cpu).unwrap()
}

/// A causal mask for unpadded rows.
pub fn causal() -> AttentionMask {
    AttentionMask::causal()
}

/// Largest absolute elementwise difference of two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Synthetic arithmetic problems and their programmatic long chain-of-thought traces.
pub fn synthetic_conversations(
    count: u64,
    difficulty: u32,
    seed: u64,
) -> Vec<(distill::data::sources::Problem, String)> {
    use distill::data::synth::{generate_tasks, TaskKind};
    generate_tasks(TaskKind::Arithmetic, difficulty, seed, count)
        .unwrap()
        .iter()
        .map(|task| (task.to_problem(), distill::data::cot::long_cot(task)))
        .collect()
}

/// A tiny random Qwen2 student with a BPE tokenizer trained on synthetic traces, saved in `dir`.
pub fn synthetic_student(dir: &std::path::Path, seed: u64) -> String {
    let corpus: Vec<String> = synthetic_conversations(300, 2, 99)
        .into_iter()
        .flat_map(|(p, cot)| [distill::data::schema::user_turn(&p.problem), cot])
        .collect();
    let tokenizer =
        distill::model::bpe::train_bpe(&corpus, 400, true, &dir.join("tokenizer")).unwrap();
    let mut config = tiny_config(Architecture::Qwen2, tokenizer.vocab_size());
    config.eos_token_ids = tokenizer.eos_token_id().into_iter().collect();
    let weights = random_weights(&config, seed, &Device::Cpu).unwrap();
    let model =
        distill::model::Decoder::from_weights(&config, &weights, DType::F32, &Device::Cpu).unwrap();
    let model_dir = dir.join("student");
    distill::model::save::save_hf_dir(&model, &tokenizer, &config.eos_token_ids, &model_dir)
        .unwrap();
    model_dir.to_str().unwrap().to_string()
}

/// Writes accepted-trace shards (user turn + long CoT reply) for `count` synthetic problems into `dir`.
pub fn write_trace_shards(dir: &std::path::Path, count: u64, seed: u64) {
    use distill::data::corpus::{write_corpus, ReplyStyle};
    use distill::data::synth::{generate_tasks, TaskKind};
    let tasks = generate_tasks(TaskKind::Arithmetic, 1, seed, count).unwrap();
    write_corpus(dir, &tasks, ReplyStyle::LongCot, "test").unwrap();
}

/// When Python with torch and transformers is available, loads `model_dir` with
/// `AutoModelForCausalLM` and asserts its logits for `ids` match `expected` (max abs diff < 1e-4).
/// Returns `None` (the check is skipped) when they are not installed.
pub fn transformers_logit_check(
    model_dir: &std::path::Path,
    ids: &Tensor,
    expected: &Tensor,
) -> Option<String> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import torch, transformers"])
        .output()
        .ok()?;
    if !probe.status.success() {
        println!("skipped: python3 with torch and transformers is not installed");
        return None;
    }
    let ids: Vec<Vec<u32>> = ids.to_vec2().unwrap();
    let script = format!(
        "import json, torch, transformers\n\
         m = transformers.AutoModelForCausalLM.from_pretrained({dir:?}, torch_dtype=torch.float32)\n\
         ids = torch.tensor({ids:?})\n\
         print(json.dumps(m(ids).logits.tolist()))",
        dir = model_dir.display().to_string(),
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "transformers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Vec<Vec<f32>>> = serde_json::from_slice(&out.stdout).unwrap();
    let theirs = Tensor::new(theirs, &Device::Cpu).unwrap();
    let diff = max_abs_diff(&theirs, expected);
    assert!(diff < 1e-4, "transformers logits differ by {diff}");
    Some(format!(
        "transformers AutoModelForCausalLM logits match (max abs diff {diff:e})"
    ))
}

/// A tiny random Qwen2 student (the synthetic BPE tokenizer) whose samples end at varied lengths, so
/// that a length reward spreads within every group and GRPO has a gradient from its first step:
/// every token embedding carries one shared constant component, which dominates the final norm's
/// output, and the EOS row carries more of it, so that EOS is sampled about once in ten tokens
/// (the rest stays near-uniform). Saved in `dir/student`; returns its path.
pub fn early_stopping_student(dir: &std::path::Path, seed: u64) -> String {
    let corpus: Vec<String> = synthetic_conversations(300, 2, 99)
        .into_iter()
        .flat_map(|(p, cot)| [distill::data::schema::user_turn(&p.problem), cot])
        .collect();
    let tokenizer =
        distill::model::bpe::train_bpe(&corpus, 400, true, &dir.join("tokenizer")).unwrap();
    let mut config = tiny_config(Architecture::Qwen2, tokenizer.vocab_size());
    let eos = tokenizer.eos_token_id().unwrap();
    config.eos_token_ids = vec![eos];
    let mut weights = random_weights(&config, seed, &Device::Cpu).unwrap();
    let name = "model.embed_tokens.weight";
    let mut embedding: Vec<Vec<f32>> = weights
        .get(name, &[config.vocab_size, config.hidden_size], DType::F32)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (token, row) in embedding.iter_mut().enumerate() {
        row[0] = if token == eos as usize { 0.75 } else { 0.2 };
    }
    weights.insert(
        name,
        Tensor::new(embedding, &Device::Cpu).unwrap(),
        "(early-stopping init)",
    );
    let model =
        distill::model::Decoder::from_weights(&config, &weights, DType::F32, &Device::Cpu).unwrap();
    let model_dir = dir.join("student");
    distill::model::save::save_hf_dir(&model, &tokenizer, &config.eos_token_ids, &model_dir)
        .unwrap();
    model_dir.to_str().unwrap().to_string()
}

/// Rewrites `dir/model.safetensors` through `edit`.
pub fn edit_weights(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>),
) {
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

/// Every conversation under `path`, in the order they are streamed.
pub fn load_conversations(path: &Path) -> Result<Vec<Conversation>, DataError> {
    let mut conversations = Vec::new();
    for_each_conversation(path, |conversation| -> Result<(), DataError> {
        conversations.push(conversation);
        Ok(())
    })?;
    Ok(conversations)
}
