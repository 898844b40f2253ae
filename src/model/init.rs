//! Random-initialised models of real shapes (presets) and tiny ones, for tests and benchmarks.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::Map;

use super::config::{Architecture, Llama3RopeScaling, ModelConfig, RopeScaling};
use super::decoder::Decoder;
use super::error::{ModelError, Result};
use super::weights::Weights;

/// Shapes `distill model init` can create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Qwen2-shaped, 2 layers, hidden 64, with the tokenizer's vocabulary: the test and demo size.
    Tiny,
    /// Qwen2.5-0.5B's shape.
    #[value(name = "qwen2.5-0.5b")]
    Qwen25_0_5b,
    /// Qwen2.5-1.5B's shape.
    #[value(name = "qwen2.5-1.5b")]
    Qwen25_1_5b,
    /// Qwen3-0.6B's shape.
    #[value(name = "qwen3-0.6b")]
    Qwen3_0_6b,
    /// Llama-3.2-1B's shape (with llama3 RoPE scaling).
    #[value(name = "llama3.2-1b")]
    Llama32_1b,
}

/// A config with the given shape and defaults for everything else.
#[allow(clippy::too_many_arguments)]
fn shape(
    architecture: Architecture,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
) -> ModelConfig {
    ModelConfig {
        architecture,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_scaling: None,
        max_position_embeddings: 32_768,
        tie_word_embeddings: true,
        qkv_bias: architecture == Architecture::Qwen2,
        mlp_bias: false,
        qk_norm: architecture == Architecture::Qwen3,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
        extra: Map::new(),
    }
}

impl Preset {
    /// The preset's config. `tokenizer_vocab` sets the tiny preset's vocabulary and must fit the others'.
    pub fn config(self, tokenizer_vocab: usize) -> Result<ModelConfig> {
        let config = match self {
            Preset::Tiny => tiny_config(Architecture::Qwen2, tokenizer_vocab),
            Preset::Qwen25_0_5b => shape(Architecture::Qwen2, 151_936, 896, 4864, 24, 14, 2, 64),
            Preset::Qwen25_1_5b => shape(Architecture::Qwen2, 151_936, 1536, 8960, 28, 12, 2, 128),
            Preset::Qwen3_0_6b => ModelConfig {
                max_position_embeddings: 40_960,
                ..shape(Architecture::Qwen3, 151_936, 1024, 3072, 28, 16, 8, 128)
            },
            Preset::Llama32_1b => ModelConfig {
                rms_norm_eps: 1e-5,
                rope_theta: 500_000.0,
                max_position_embeddings: 131_072,
                rope_scaling: Some(RopeScaling::Llama3(Llama3RopeScaling {
                    factor: 32.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 8192,
                })),
                ..shape(Architecture::Llama, 128_256, 2048, 8192, 16, 32, 8, 64)
            },
        };
        if tokenizer_vocab > config.vocab_size {
            return Err(ModelError::Invalid(format!(
                "the tokenizer has {tokenizer_vocab} tokens but the preset's vocabulary is {}",
                config.vocab_size
            )));
        }
        Ok(config)
    }
}

/// A tiny model of `architecture` (2 layers, hidden 64, 4 query / 2 KV heads of width 16) for tests.
pub fn tiny_config(architecture: Architecture, vocab_size: usize) -> ModelConfig {
    ModelConfig {
        rope_theta: 10_000.0,
        max_position_embeddings: 2048,
        tie_word_embeddings: architecture != Architecture::Llama,
        ..shape(architecture, vocab_size, 64, 176, 2, 4, 2, 16)
    }
}

/// Random weights for `config`: N(0, 0.02) for matrices and biases, ones for norms; deterministic in `seed`.
pub fn random_weights(config: &ModelConfig, seed: u64, device: &Device) -> Result<Weights> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 0.02).map_err(|e| ModelError::Invalid(e.to_string()))?;
    let mut weights = Weights::new("(random init)");
    for (name, dims) in config.tensor_shapes() {
        let count: usize = dims.iter().product();
        let data: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; count]
        } else {
            (0..count).map(|_| normal.sample(&mut rng)).collect()
        };
        weights.insert(name, Tensor::from_vec(data, dims, device)?, "(random init)");
    }
    Ok(weights)
}

/// A random-initialised f32 decoder for `config`.
pub fn random_decoder(config: &ModelConfig, seed: u64, device: &Device) -> Result<Decoder> {
    let weights = random_weights(config, seed, device)?;
    Decoder::from_weights(config, &weights, candle_core::DType::F32, device)
}
