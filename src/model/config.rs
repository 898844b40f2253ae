//! The shape of a decoder: Hugging Face `config.json` read into [`ModelConfig`] and written back.
//!
//! One config covers Qwen2/Qwen2.5, Qwen3 and Llama 2/3.x. The architectures differ only in flags
//! (`qkv_bias`, `mlp_bias`, `qk_norm`, `rope_scaling`, `tie_word_embeddings`), never in separate
//! layer code.
//!
//! Reading follows transformers' rules for both layouts it writes (v4's top-level `rope_theta` /
//! `rope_scaling`, v5's `rope_parameters`; see [`super::rope_scaling`]) and its per-architecture
//! defaults for absent fields. A field that changes the math and that distill does not implement
//! (an activation other than SiLU, sliding-window attention switched on, an unknown RoPE type) is an
//! error naming the file and field; every other field is carried in `extra` and written back.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::error::{ModelError, Result};
use super::rope_scaling::{self as rope_params};
pub use super::rope_scaling::{Llama3RopeScaling, RopeScaling, YarnRopeScaling};

/// The decoder families distill implements with one code path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Qwen2 / Qwen2.5: bias on q, k, v projections.
    Qwen2,
    /// Qwen3: RMSNorm on each query and key head, explicit `head_dim`.
    Qwen3,
    /// Llama 2 and Llama 3.x (optionally with `rope_scaling` of type `llama3`).
    Llama,
}

impl Architecture {
    /// The `model_type` string Hugging Face uses.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Llama => "llama",
        }
    }

    /// The `architectures[0]` class name transformers instantiates.
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
        }
    }

    fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "qwen2" => Some(Architecture::Qwen2),
            "qwen3" => Some(Architecture::Qwen3),
            "llama" => Some(Architecture::Llama),
            _ => None,
        }
    }
}

/// Everything the decoder needs to know about a model's shape and numerics.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which family the weights belong to.
    pub architecture: Architecture,
    /// Rows of the embedding and of the output projection.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads per layer.
    pub num_attention_heads: usize,
    /// Key/value heads per layer (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RoPE frequency scaling (linear, Llama 3.x, YaRN), when the config asks for it.
    pub rope_scaling: Option<RopeScaling>,
    /// Longest context the model supports.
    pub max_position_embeddings: usize,
    /// Whether the output projection reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections carry a bias (Qwen2 always; Llama and Qwen3 with
    /// `attention_bias`, which also gives `o_proj` a bias: see [`ModelConfig::o_proj_bias`]).
    pub qkv_bias: bool,
    /// Whether the MLP's gate/up/down projections carry a bias (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Whether query and key heads are RMS-normalised (Qwen3).
    pub qk_norm: bool,
    /// Beginning-of-sequence token, when the model has one.
    pub bos_token_id: Option<u32>,
    /// Every token id that ends generation.
    pub eos_token_ids: Vec<u32>,
    /// Every other field of the original `config.json`, written back unchanged on save.
    pub extra: Map<String, Value>,
}

/// Fields [`ModelConfig`] owns; everything else is carried in `extra`.
const OWNED_FIELDS: &[&str] = &[
    "architectures",
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "mlp_bias",
    "dtype",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "bos_token_id",
    "eos_token_id",
    "hidden_act",
    "torch_dtype",
];

impl ModelConfig {
    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses the text of a `config.json`; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let map = json_object(text, origin)?;
        Self::from_map(map, origin)
    }

    fn from_map(map: Map<String, Value>, origin: &str) -> Result<Self> {
        let fields = Fields { map: &map, origin };
        let model_type = fields.string("model_type")?;
        let architecture = Architecture::from_model_type(&model_type).ok_or_else(|| {
            config_error(
                origin,
                "model_type",
                &format!("unsupported model_type {model_type:?}; distill supports qwen2, qwen3 and llama"),
            )
        })?;
        if let Some(act) = fields.optional_string("hidden_act")? {
            if act != "silu" {
                return Err(config_error(
                    origin,
                    "hidden_act",
                    &format!("unsupported activation {act:?}; only silu (SwiGLU) is implemented"),
                ));
            }
        }
        let defaults = ClassDefaults::of(architecture);
        let hidden_size = fields.usize("hidden_size")?;
        let num_hidden_layers = fields.usize("num_hidden_layers")?;
        let num_attention_heads = fields.usize("num_attention_heads")?;
        // An explicit null means "as many as query heads"; an absent field is the class default.
        let num_key_value_heads = match fields.map.get("num_key_value_heads") {
            Some(Value::Null) => num_attention_heads,
            Some(_) => fields.usize("num_key_value_heads")?,
            None => defaults.num_key_value_heads.unwrap_or(num_attention_heads),
        };
        if num_attention_heads == 0 || num_key_value_heads == 0 {
            return Err(config_error(
                origin,
                "num_attention_heads",
                "head counts must be positive",
            ));
        }
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(config_error(
                origin,
                "num_key_value_heads",
                &format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = match fields.optional_usize("head_dim")?.or(defaults.head_dim) {
            Some(d) => d,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(config_error(
                    origin,
                    "head_dim",
                    "missing, and hidden_size is not a multiple of num_attention_heads",
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(config_error(
                origin,
                "head_dim",
                "must be even for rotary embeddings",
            ));
        }
        let attention_bias = fields.optional_bool("attention_bias")?.unwrap_or(false);
        let (qkv_bias, mlp_bias) = match architecture {
            // transformers' Qwen2 always has q/k/v biases and never reads attention_bias or mlp_bias.
            Architecture::Qwen2 => (true, false),
            Architecture::Qwen3 => (attention_bias, false),
            Architecture::Llama => (
                attention_bias,
                fields.optional_bool("mlp_bias")?.unwrap_or(false),
            ),
        };
        if architecture != Architecture::Llama {
            refuse_sliding_window(&fields, num_hidden_layers)?;
        }
        let max_position_embeddings = fields
            .optional_usize("max_position_embeddings")?
            .unwrap_or(defaults.max_position_embeddings);
        let (rope_theta, rope_scaling) = rope_params::parse(&fields, max_position_embeddings)?;
        Ok(ModelConfig {
            architecture,
            vocab_size: fields.usize("vocab_size")?,
            hidden_size,
            intermediate_size: fields.usize("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: fields.optional_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: fields
                .optional_bool("tie_word_embeddings")?
                .unwrap_or(false),
            qkv_bias,
            mlp_bias,
            qk_norm: architecture == Architecture::Qwen3,
            bos_token_id: fields.optional_u32("bos_token_id")?,
            eos_token_ids: fields.token_ids("eos_token_id")?,
            extra: map
                .iter()
                .filter(|(k, _)| !OWNED_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Whether `o_proj` carries a bias: Llama and Qwen3 with `attention_bias` (Qwen2 never).
    pub fn o_proj_bias(&self) -> bool {
        self.qkv_bias && self.architecture != Architecture::Qwen2
    }

    /// The `config.json` transformers reads for this model, with `torch_dtype` set to `dtype`.
    pub fn to_hf_json(&self, torch_dtype: &str) -> Value {
        let mut map = self.extra.clone();
        let owned = json!({
            "architectures": [self.architecture.hf_class()],
            "model_type": self.architecture.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": torch_dtype,
            "dtype": torch_dtype,
        });
        if let Value::Object(owned) = owned {
            map.extend(owned);
        }
        if self.architecture != Architecture::Qwen2 {
            map.insert("attention_bias".into(), json!(self.qkv_bias));
        }
        if self.architecture == Architecture::Llama {
            map.insert("mlp_bias".into(), json!(self.mlp_bias));
        }
        map.insert(
            "rope_scaling".into(),
            self.rope_scaling
                .as_ref()
                .map_or(Value::Null, RopeScaling::to_hf_json),
        );
        map.insert("bos_token_id".into(), json!(self.bos_token_id));
        map.insert(
            "eos_token_id".into(),
            match self.eos_token_ids.as_slice() {
                [] => Value::Null,
                [one] => json!(one),
                many => json!(many),
            },
        );
        Value::Object(map)
    }

    /// Number of parameters, counting a tied output projection once.
    pub fn parameter_count(&self) -> usize {
        let d = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attention = d * q + 2 * d * kv + q * d;
        let bias =
            if self.qkv_bias { q + 2 * kv } else { 0 } + if self.o_proj_bias() { d } else { 0 };
        let qk_norm = if self.qk_norm { 2 * self.head_dim } else { 0 };
        let mlp = 3 * d * self.intermediate_size
            + if self.mlp_bias {
                2 * self.intermediate_size + d
            } else {
                0
            };
        let layer = attention + bias + qk_norm + mlp + 2 * d;
        let embed = self.vocab_size * d;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.num_hidden_layers * layer + d
    }

    /// The `eos_token_id` of a `generation_config.json` text (a single id or a list; empty when absent).
    pub fn eos_ids_from_generation_config(text: &str, origin: &str) -> Result<Vec<u32>> {
        let map = json_object(text, origin)?;
        Fields { map: &map, origin }.token_ids("eos_token_id")
    }

    /// The name and shape of every tensor this config implies, in Hugging Face naming (a tied
    /// output projection is the embedding and is not listed).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let q = self.num_attention_heads * hd;
        let kv = self.num_key_value_heads * hd;
        let mut shapes = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, d],
        )];
        for layer in 0..self.num_hidden_layers {
            let p = format!("model.layers.{layer}");
            let mut add = |name: &str, dims: Vec<usize>| shapes.push((format!("{p}.{name}"), dims));
            add("input_layernorm.weight", vec![d]);
            add("post_attention_layernorm.weight", vec![d]);
            add("self_attn.q_proj.weight", vec![q, d]);
            add("self_attn.k_proj.weight", vec![kv, d]);
            add("self_attn.v_proj.weight", vec![kv, d]);
            add("self_attn.o_proj.weight", vec![d, q]);
            if self.qkv_bias {
                add("self_attn.q_proj.bias", vec![q]);
                add("self_attn.k_proj.bias", vec![kv]);
                add("self_attn.v_proj.bias", vec![kv]);
            }
            if self.o_proj_bias() {
                add("self_attn.o_proj.bias", vec![d]);
            }
            if self.qk_norm {
                add("self_attn.q_norm.weight", vec![hd]);
                add("self_attn.k_norm.weight", vec![hd]);
            }
            add("mlp.gate_proj.weight", vec![i, d]);
            add("mlp.up_proj.weight", vec![i, d]);
            add("mlp.down_proj.weight", vec![d, i]);
            if self.mlp_bias {
                add("mlp.gate_proj.bias", vec![i]);
                add("mlp.up_proj.bias", vec![i]);
                add("mlp.down_proj.bias", vec![d]);
            }
        }
        shapes.push(("model.norm.weight".to_string(), vec![d]));
        if !self.tie_word_embeddings {
            shapes.push(("lm_head.weight".to_string(), vec![self.vocab_size, d]));
        }
        shapes
    }

    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

/// transformers' defaults for fields a `config.json` may leave out, where they differ by class.
struct ClassDefaults {
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: usize,
}

impl ClassDefaults {
    fn of(architecture: Architecture) -> Self {
        match architecture {
            Architecture::Qwen2 => ClassDefaults {
                num_key_value_heads: Some(32),
                head_dim: None,
                max_position_embeddings: 32_768,
            },
            Architecture::Qwen3 => ClassDefaults {
                num_key_value_heads: Some(32),
                head_dim: Some(128),
                max_position_embeddings: 32_768,
            },
            Architecture::Llama => ClassDefaults {
                num_key_value_heads: None,
                head_dim: None,
                max_position_embeddings: 2048,
            },
        }
    }
}

/// Qwen2/Qwen3 sliding-window attention: a layer slides when `use_sliding_window` is true,
/// `sliding_window` is set, and its `layer_types` entry (by default: index ≥ `max_window_layers`)
/// is `sliding_attention`. distill implements full attention only, so that is refused.
fn refuse_sliding_window(fields: &Fields, layers: usize) -> Result<()> {
    let on = fields.optional_bool("use_sliding_window")?.unwrap_or(false);
    let window = fields
        .map
        .get("sliding_window")
        .map_or(Some(4096), Value::as_u64);
    if !on || window.is_none() {
        return Ok(());
    }
    let sliding_layers: Vec<usize> = match fields.present("layer_types") {
        Some(Value::Array(types)) => types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.as_str() == Some("sliding_attention"))
            .map(|(i, _)| i)
            .collect(),
        Some(other) => {
            return Err(config_error(
                fields.origin,
                "layer_types",
                &format!("expected a list of strings, found {other}"),
            ))
        }
        None => {
            let first = fields.optional_usize("max_window_layers")?.unwrap_or(28);
            (first..layers).collect()
        }
    };
    if sliding_layers.is_empty() {
        return Ok(());
    }
    Err(config_error(
        fields.origin,
        "use_sliding_window",
        &format!(
            "sliding-window attention is on for layers {sliding_layers:?} (window {}); distill implements full attention only",
            window.unwrap_or_default()
        ),
    ))
}

/// Parses a JSON document, naming `origin` and the line and column of a syntax error.
pub(crate) fn parse_json(text: &str, origin: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| ModelError::Config {
        file: origin.to_string(),
        field: "(document)".into(),
        message: format!(
            "malformed JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ),
    })
}

/// A JSON document that must be an object.
fn json_object(text: &str, origin: &str) -> Result<Map<String, Value>> {
    match parse_json(text, origin)? {
        Value::Object(map) => Ok(map),
        _ => Err(config_error(origin, "(document)", "expected a JSON object")),
    }
}

pub(super) fn config_error(file: &str, field: &str, message: &str) -> ModelError {
    ModelError::Config {
        file: file.to_string(),
        field: field.to_string(),
        message: message.to_string(),
    }
}

/// Typed access to the fields of one JSON object, with errors that name the file and field.
pub(super) struct Fields<'a> {
    pub(super) map: &'a Map<String, Value>,
    pub(super) origin: &'a str,
}

impl Fields<'_> {
    pub(super) fn present(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn missing(&self, name: &str) -> ModelError {
        config_error(self.origin, name, "missing required field")
    }

    fn wrong(&self, name: &str, expected: &str, got: &Value) -> ModelError {
        config_error(
            self.origin,
            name,
            &format!("expected {expected}, found {got}"),
        )
    }

    pub(super) fn optional_usize(&self, name: &str) -> Result<Option<usize>> {
        self.present(name)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| self.wrong(name, "a non-negative integer", v))
            })
            .transpose()
    }

    fn usize(&self, name: &str) -> Result<usize> {
        self.optional_usize(name)?.ok_or_else(|| self.missing(name))
    }

    fn optional_u32(&self, name: &str) -> Result<Option<u32>> {
        self.present(name)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| self.wrong(name, "a token id", v))
            })
            .transpose()
    }

    pub(super) fn optional_f64(&self, name: &str) -> Result<Option<f64>> {
        self.present(name)
            .map(|v| v.as_f64().ok_or_else(|| self.wrong(name, "a number", v)))
            .transpose()
    }

    pub(super) fn f64(&self, name: &str) -> Result<f64> {
        self.optional_f64(name)?.ok_or_else(|| self.missing(name))
    }

    pub(super) fn optional_bool(&self, name: &str) -> Result<Option<bool>> {
        self.present(name)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.wrong(name, "true or false", v))
            })
            .transpose()
    }

    pub(super) fn optional_string(&self, name: &str) -> Result<Option<String>> {
        self.present(name)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.wrong(name, "a string", v))
            })
            .transpose()
    }

    fn string(&self, name: &str) -> Result<String> {
        self.optional_string(name)?
            .ok_or_else(|| self.missing(name))
    }

    /// A token id or a list of token ids (`eos_token_id` takes both forms).
    fn token_ids(&self, name: &str) -> Result<Vec<u32>> {
        match self.present(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| self.wrong(name, "a list of token ids", v))
                })
                .collect(),
            Some(_) => Ok(self.optional_u32(name)?.into_iter().collect()),
        }
    }
}
