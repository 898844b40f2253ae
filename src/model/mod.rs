//! The decoder family (Qwen2/2.5, Qwen3, Llama 2/3): configuration, weights on disk, tokenizer and
//! chat template, and batched generation — one code path for training and inference.

pub mod attention_mask;
pub mod bpe;
pub mod chat_template;
pub mod config;
pub mod decoder;
pub mod error;
pub mod generate;
pub mod init;
pub mod kv_cache;
pub mod llama2c;
pub mod load;
pub mod rope;
pub mod rope_scaling;
pub mod safetensors_header;
pub mod sampling;
pub mod save;
pub mod tokenizer;
pub mod weights;

pub use attention_mask::AttentionMask;
pub use chat_template::{ChatOptions, Message};
pub use config::{Architecture, ModelConfig};
pub use decoder::Decoder;
pub use error::{ModelError, Result};
pub use generate::{generate, Completion, FinishReason, GenerationConfig, GenerationRequest};
pub use kv_cache::KvCache;
pub use load::{load, LoadedModel, ModelSource};
pub use sampling::SamplerConfig;
pub use tokenizer::Tokenizer;
pub use weights::Weights;
