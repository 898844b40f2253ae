//! Helpers shared by the integration tests: tiny models, inputs and data paths.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
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
