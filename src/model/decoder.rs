//! The decoder: embedding, attention (GQA, RoPE, optional q/k norm), SwiGLU MLP and RMSNorm —
//! one implementation for Qwen2/2.5, Qwen3 and Llama 2/3, used both for training and for inference.
//!
//! Every op on the forward path records a backward in candle (no fused candle_nn ops, which drop
//! gradients), so the same [`Decoder::forward`] serves SFT, GRPO and generation.

use candle_core::{DType, Device, Tensor};

use super::attention_mask::AttentionMask;
use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::kv_cache::KvCache;
use super::rope::Rope;
use super::weights::Weights;
use crate::ops;

/// `y = x Wᵀ (+ b)` with HF's `[out, in]` weight layout.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn load(
        weights: &Weights,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
        dtype: DType,
    ) -> Result<Self> {
        Ok(Linear {
            weight: weights.get(&format!("{prefix}.weight"), &[out, inp], dtype)?,
            bias: if bias {
                Some(weights.get(&format!("{prefix}.bias"), &[out], dtype)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::linear(x, &self.weight, self.bias.as_ref())?)
    }

    fn collect(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}.weight"), self.weight.clone()));
        if let Some(bias) = &self.bias {
            out.push((format!("{prefix}.bias"), bias.clone()));
        }
    }
}

/// RMSNorm over the last dimension (the fused op with a hand-written backward).
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(weights: &Weights, name: &str, dim: usize, eps: f64, dtype: DType) -> Result<Self> {
        Ok(RmsNorm {
            weight: weights.get(name, &[dim], dtype)?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::rms_norm(x, &self.weight, self.eps)?)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(weights: &Weights, prefix: &str, cfg: &ModelConfig, dtype: DType) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim);
        let q = cfg.num_attention_heads * hd;
        let kv = cfg.num_key_value_heads * hd;
        let norm = |name: &str| {
            RmsNorm::load(
                weights,
                &format!("{prefix}.{name}.weight"),
                hd,
                cfg.rms_norm_eps,
                dtype,
            )
        };
        Ok(Attention {
            q_proj: Linear::load(
                weights,
                &format!("{prefix}.q_proj"),
                q,
                d,
                cfg.qkv_bias,
                dtype,
            )?,
            k_proj: Linear::load(
                weights,
                &format!("{prefix}.k_proj"),
                kv,
                d,
                cfg.qkv_bias,
                dtype,
            )?,
            v_proj: Linear::load(
                weights,
                &format!("{prefix}.v_proj"),
                kv,
                d,
                cfg.qkv_bias,
                dtype,
            )?,
            o_proj: Linear::load(
                weights,
                &format!("{prefix}.o_proj"),
                d,
                q,
                cfg.o_proj_bias(),
                dtype,
            )?,
            q_norm: if cfg.qk_norm {
                Some(norm("q_norm")?)
            } else {
                None
            },
            k_norm: if cfg.qk_norm {
                Some(norm("k_norm")?)
            } else {
                None
            },
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
        })
    }

    /// `[B, T, heads·hd]` → `[B, heads, T, hd]`, with the optional per-head norm.
    fn split_heads(x: &Tensor, heads: usize, hd: usize, norm: Option<&RmsNorm>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let x = x.reshape((b, t, heads, hd))?;
        let x = match norm {
            Some(norm) => norm.forward(&x)?,
            None => x,
        };
        Ok(x.transpose(1, 2)?.contiguous()?)
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: Option<&AttentionMask>,
        cache: Option<(&KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = Self::split_heads(&self.q_proj.forward(x)?, h, hd, self.q_norm.as_ref())?;
        let k = Self::split_heads(&self.k_proj.forward(x)?, kvh, hd, self.k_norm.as_ref())?;
        let v = Self::split_heads(&self.v_proj.forward(x)?, kvh, hd, None)?;
        let q = Rope::apply(&q, rope.0, rope.1)?;
        let k = Rope::apply(&k, rope.0, rope.1)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        let causal = AttentionMask::causal();
        let mask = mask.unwrap_or(&causal);
        let scale = 1.0 / (hd as f64).sqrt();
        let out = ops::attention(&q, &k, &v, scale, mask.as_ops())?;
        let out = out.transpose(1, 2)?.reshape((b, t, h * hd))?;
        self.o_proj.forward(&out)
    }

    fn collect(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        self.q_proj.collect(&format!("{prefix}.q_proj"), out);
        self.k_proj.collect(&format!("{prefix}.k_proj"), out);
        self.v_proj.collect(&format!("{prefix}.v_proj"), out);
        self.o_proj.collect(&format!("{prefix}.o_proj"), out);
        if let Some(norm) = &self.q_norm {
            out.push((format!("{prefix}.q_norm.weight"), norm.weight.clone()));
        }
        if let Some(norm) = &self.k_norm {
            out.push((format!("{prefix}.k_norm.weight"), norm.weight.clone()));
        }
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(weights: &Weights, prefix: &str, cfg: &ModelConfig, dtype: DType) -> Result<Self> {
        let (d, i, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Mlp {
            gate_proj: Linear::load(weights, &format!("{prefix}.gate_proj"), i, d, bias, dtype)?,
            up_proj: Linear::load(weights, &format!("{prefix}.up_proj"), i, d, bias, dtype)?,
            down_proj: Linear::load(weights, &format!("{prefix}.down_proj"), d, i, bias, dtype)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let activation = if self.gate_proj.bias.is_none() && self.up_proj.bias.is_none() {
            ops::swiglu_projection(x, &self.gate_proj.weight, &self.up_proj.weight)?
        } else {
            ops::swiglu(&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?)?
        };
        self.down_proj.forward(&activation)
    }

    fn collect(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        self.gate_proj.collect(&format!("{prefix}.gate_proj"), out);
        self.up_proj.collect(&format!("{prefix}.up_proj"), out);
        self.down_proj.collect(&format!("{prefix}.down_proj"), out);
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn load(weights: &Weights, prefix: &str, cfg: &ModelConfig, dtype: DType) -> Result<Self> {
        let norm = |name: &str| {
            RmsNorm::load(
                weights,
                &format!("{prefix}.{name}.weight"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
                dtype,
            )
        };
        Ok(DecoderLayer {
            input_layernorm: norm("input_layernorm")?,
            self_attn: Attention::load(weights, &format!("{prefix}.self_attn"), cfg, dtype)?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            mlp: Mlp::load(weights, &format!("{prefix}.mlp"), cfg, dtype)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: Option<&AttentionMask>,
        cache: Option<(&KvCache, usize)>,
    ) -> Result<Tensor> {
        self.mlp_block(&self.attention_block(x, rope, mask, cache)?)
    }

    /// The first residual block: `x + attention(norm(x))`.
    fn attention_block(
        &self,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: Option<&AttentionMask>,
        cache: Option<(&KvCache, usize)>,
    ) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, rope, mask, cache)?;
        Ok((x + attn)?)
    }

    /// The second residual block: `x + mlp(norm(x))`, token by token.
    fn mlp_block(&self, x: &Tensor) -> Result<Tensor> {
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(x)?)?;
        Ok((x + mlp)?)
    }

    fn collect(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((
            format!("{prefix}.input_layernorm.weight"),
            self.input_layernorm.weight.clone(),
        ));
        self.self_attn.collect(&format!("{prefix}.self_attn"), out);
        out.push((
            format!("{prefix}.post_attention_layernorm.weight"),
            self.post_attention_layernorm.weight.clone(),
        ));
        self.mlp.collect(&format!("{prefix}.mlp"), out);
    }
}

/// A decoder-only transformer in the Qwen/Llama family.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: ModelConfig,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Option<Tensor>,
    rope: Rope,
}

impl Decoder {
    /// Builds the decoder from HF-named weights, converting them to `dtype`.
    pub fn from_weights(
        config: &ModelConfig,
        weights: &Weights,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let cfg = config;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(weights, &format!("model.layers.{i}"), cfg, dtype))
            .collect::<Result<Vec<_>>>()?;
        let embed_shape = [cfg.vocab_size, cfg.hidden_size];
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(weights.get("lm_head.weight", &embed_shape, dtype)?)
        };
        Ok(Decoder {
            config: cfg.clone(),
            embed_tokens: weights.get("model.embed_tokens.weight", &embed_shape, dtype)?,
            layers,
            norm: RmsNorm::load(
                weights,
                "model.norm.weight",
                cfg.hidden_size,
                cfg.rms_norm_eps,
                dtype,
            )?,
            lm_head,
            rope: Rope::new(cfg, device)?,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The dtype activations are computed in (that of the weights).
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Every parameter with its Hugging Face name; a tied output projection is listed once (as the embedding).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.clone(),
        )];
        for (i, layer) in self.layers.iter().enumerate() {
            layer.collect(&format!("model.layers.{i}"), &mut out);
        }
        out.push(("model.norm.weight".into(), self.norm.weight.clone()));
        if let Some(head) = &self.lm_head {
            out.push(("lm_head.weight".into(), head.clone()));
        }
        out
    }

    /// The same model with every weight detached from any autograd graph, sharing storage
    /// (no copy): what rollouts sample from while the trained weights keep their gradients.
    pub fn detached(&self) -> Result<Self> {
        let mut weights = Weights::new("(detached)");
        for (name, tensor) in self.named_parameters() {
            weights.insert(name, tensor.detach(), "(detached)");
        }
        Decoder::from_weights(&self.config, &weights, self.dtype(), self.device())
    }

    /// Hidden states after the final norm, `[B, T, hidden]`, for token ids `[B, T]` at `positions`
    /// `[B, T]` (u32). With a cache, the new keys and values are stored after the cached ones and
    /// `mask` must cover all of them; `None` means plain causal attention (no padding).
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: Option<&AttentionMask>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if positions.dims() != [b, t] {
            return Err(ModelError::Invalid(format!(
                "positions have shape {:?}, ids have [{b}, {t}]",
                positions.dims()
            )));
        }
        let mut x = self.embed(ids)?;
        let (cos, sin) = self.rope_tables(positions)?;
        let cache_ref = cache.as_deref();
        if let Some(cache) = cache_ref {
            cache.check_room(t)?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, (&cos, &sin), mask, cache_ref.map(|c| (c, i)))?;
        }
        if let Some(cache) = cache {
            cache.advance(t);
        }
        self.final_norm(&x)
    }

    /// The token embeddings `[B, T, hidden]` of ids `[B, T]`: the first stage of
    /// [`Decoder::forward`]. The stages are public for training that recomputes each layer in the
    /// backward (`crate::train::recompute`).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        Ok(self
            .embed_tokens
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?)
    }

    /// The rotary cos/sin tables for `positions` `[B, T]`, shared by every layer.
    pub fn rope_tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        self.rope.cos_sin(positions, self.dtype())
    }

    /// Decoder layer `index` applied to hidden states `x` (no cache).
    pub fn layer_forward(
        &self,
        index: usize,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: Option<&AttentionMask>,
    ) -> Result<Tensor> {
        self.layers[index].forward(x, rope, mask, None)
    }

    /// The attention half of decoder layer `index` (no cache): `x + attention(norm(x))`.
    /// [`Decoder::layer_forward`] is this followed by [`Decoder::mlp_block`].
    pub fn attention_block(
        &self,
        index: usize,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: Option<&AttentionMask>,
    ) -> Result<Tensor> {
        self.layers[index].attention_block(x, rope, mask, None)
    }

    /// The MLP half of decoder layer `index`: `x + mlp(norm(x))`. It treats every token on its
    /// own, so it can run on any slice of the tokens `[B, T, hidden]`.
    pub fn mlp_block(&self, index: usize, x: &Tensor) -> Result<Tensor> {
        self.layers[index].mlp_block(x)
    }

    /// The final norm: the last stage of [`Decoder::forward`].
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(x)
    }

    /// The token embedding table `[vocab, hidden]`.
    pub fn embedding(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// The output projection `[vocab, hidden]` (the embedding when tied).
    pub fn lm_head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Logits `[..., vocab]` for hidden states `[..., hidden]`. Materialises N×V: use it for the few
    /// positions generation samples from, not for training losses.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(ops::linear(hidden, self.lm_head(), None)?)
    }

    /// Refuses a prompt of `prompt_tokens` that may grow by `max_new_tokens` past the context the
    /// model was trained for (`max_position_embeddings`): positions beyond it were never trained,
    /// and the output there is garbage.
    pub fn check_fits(&self, prompt_tokens: usize, max_new_tokens: usize) -> Result<()> {
        let context = self.config.max_position_embeddings;
        if prompt_tokens + max_new_tokens > context {
            return Err(ModelError::Invalid(format!(
                "a {prompt_tokens}-token prompt plus up to {max_new_tokens} new tokens exceeds the \
                 model's context of {context} tokens (max_position_embeddings); shorten the prompt \
                 or lower max_new_tokens"
            )));
        }
        Ok(())
    }

    /// A key/value cache sized for `batch` rows of up to `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache> {
        KvCache::new(&self.config, batch, capacity, self.dtype(), self.device())
    }
}
