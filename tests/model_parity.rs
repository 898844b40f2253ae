//! Our decoder's logits equal candle-transformers' independent qwen2 / qwen3 / llama implementations
//! on the same random weights (f32, max abs diff < 1e-4, on the positions those implementations return).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, qwen2, qwen3};
use distill::model::config::{Llama3RopeScaling, RopeScaling};
use distill::model::init::random_weights;
use distill::model::{Architecture, Decoder, ModelConfig};

const TOLERANCE: f32 = 1e-4;

fn tensors(config: &ModelConfig, seed: u64) -> (Decoder, HashMap<String, Tensor>) {
    let weights = random_weights(config, seed, &Device::Cpu).unwrap();
    let model = Decoder::from_weights(config, &weights, DType::F32, &Device::Cpu).unwrap();
    let map = weights
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (model, map)
}

/// Our logits at the last position of every row, `[B, V]`.
fn our_last_logits(model: &Decoder, ids: &Tensor) -> Tensor {
    let (b, t) = ids.dims2().unwrap();
    let hidden = model
        .forward(ids, &common::positions(b, t), Some(&common::causal()), None)
        .unwrap();
    model
        .logits(&hidden.narrow(1, t - 1, 1).unwrap().squeeze(1).unwrap())
        .unwrap()
}

/// The HF config.json of `config` with the extra fields candle-transformers' configs require.
fn hf_json(config: &ModelConfig) -> serde_json::Value {
    let mut json = config.to_hf_json("float32");
    json["sliding_window"] = serde_json::json!(4096);
    json["max_window_layers"] = serde_json::json!(config.num_hidden_layers);
    json["use_sliding_window"] = serde_json::json!(false);
    json
}

#[test]
fn qwen2_logits_match_candle_transformers() {
    let config = common::tiny(Architecture::Qwen2, 101);
    let (ours, map) = tensors(&config, 21);
    let cfg: qwen2::Config = serde_json::from_value(hf_json(&config)).unwrap();
    let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
    let mut theirs = qwen2::ModelForCausalLM::new(&cfg, vb).unwrap();
    let ids = common::token_ids(2, 11, 101, 1);
    let reference = theirs.forward(&ids, 0).unwrap().squeeze(1).unwrap();
    let diff = common::max_abs_diff(&our_last_logits(&ours, &ids), &reference);
    assert!(diff < TOLERANCE, "qwen2 max abs diff {diff}");
}

#[test]
fn qwen2_hidden_states_match_at_every_position() {
    let config = common::tiny(Architecture::Qwen2, 101);
    let (ours, map) = tensors(&config, 22);
    let cfg: qwen2::Config = serde_json::from_value(hf_json(&config)).unwrap();
    let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
    let mut theirs = qwen2::Model::new(&cfg, vb).unwrap();
    let ids = common::token_ids(1, 13, 101, 2);
    let reference = theirs.forward(&ids, 0, None).unwrap();
    let hidden = ours
        .forward(
            &ids,
            &common::positions(1, 13),
            Some(&common::causal()),
            None,
        )
        .unwrap();
    let diff = common::max_abs_diff(&hidden, &reference);
    assert!(diff < TOLERANCE, "qwen2 hidden max abs diff {diff}");
}

#[test]
fn qwen3_logits_match_candle_transformers() {
    let config = common::tiny(Architecture::Qwen3, 89);
    let (ours, map) = tensors(&config, 23);
    let cfg: qwen3::Config = serde_json::from_value(hf_json(&config)).unwrap();
    let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
    let mut theirs = qwen3::ModelForCausalLM::new(&cfg, vb).unwrap();
    let ids = common::token_ids(2, 9, 89, 3);
    let reference = theirs.forward(&ids, 0).unwrap().squeeze(1).unwrap();
    let diff = common::max_abs_diff(&our_last_logits(&ours, &ids), &reference);
    assert!(diff < TOLERANCE, "qwen3 max abs diff {diff}");
}

fn llama_parity(config: &ModelConfig, seed: u64) {
    let (ours, map) = tensors(config, seed);
    let cfg: llama::LlamaConfig = serde_json::from_value(hf_json(config)).unwrap();
    let cfg = cfg.into_config(false);
    let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
    let theirs = llama::Llama::load(vb, &cfg).unwrap();
    // candle-transformers' llama applies its causal mask to one row at a time.
    for row in 0..2u32 {
        let ids = common::token_ids(1, 10, config.vocab_size, 7 + row);
        let mut cache = llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu).unwrap();
        let reference = theirs.forward(&ids, 0, &mut cache).unwrap();
        let diff = common::max_abs_diff(&our_last_logits(&ours, &ids), &reference);
        assert!(diff < TOLERANCE, "llama max abs diff {diff}");
    }
}

#[test]
fn llama_logits_match_candle_transformers() {
    llama_parity(&common::tiny(Architecture::Llama, 97), 24);
}

#[test]
fn llama3_rope_scaling_matches_candle_transformers() {
    let config = ModelConfig {
        rope_scaling: Some(RopeScaling::Llama3(Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        })),
        ..common::tiny(Architecture::Llama, 97)
    };
    llama_parity(&config, 25);
}
