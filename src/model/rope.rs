//! Rotary position embeddings in the half-split layout Hugging Face uses (llama2.c checkpoints are
//! permuted into it at load time), with the frequency scalings of [`super::rope_scaling`].

use candle_core::{DType, Device, Tensor};

use super::config::ModelConfig;
use super::error::Result;
use super::rope_scaling::inv_freq_and_scale;
use crate::ops;

/// The inverse frequencies of one model and the factor cos/sin are scaled by (YaRN's attention
/// factor; 1 otherwise); cos/sin are computed per (row, position) on demand, so rows of a batch may
/// sit at different positions.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Tensor,
    scale: f64,
}

impl Rope {
    /// Inverse frequencies `theta^(-2i/d)` for `i < d/2`, scaled as the config's RoPE type says.
    pub fn new(config: &ModelConfig, device: &Device) -> Result<Self> {
        let d = config.head_dim;
        let (inv_freq, scale) =
            inv_freq_and_scale(config.rope_theta, d, config.rope_scaling.as_ref());
        let inv_freq: Vec<f32> = inv_freq.into_iter().map(|f| f as f32).collect();
        Ok(Rope {
            inv_freq: Tensor::from_vec(inv_freq, (1, d / 2), device)?,
            scale,
        })
    }

    /// `(cos, sin)`, each `[B, T, head_dim / 2]`, for u32 positions `[B, T]`.
    pub fn cos_sin(&self, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let angles = positions
            .flatten_all()?
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&self.inv_freq)?
            .reshape((b, t, ()))?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let (cos, sin) = if self.scale == 1.0 {
            (cos, sin)
        } else {
            ((cos * self.scale)?, (sin * self.scale)?)
        };
        Ok((cos.to_dtype(dtype)?, sin.to_dtype(dtype)?))
    }

    /// Rotates `x` `[B, heads, T, head_dim]` (half-split pairs) by the angles of [`Rope::cos_sin`].
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        Ok(ops::rope(x, cos, sin, ops::RopeLayout::HalfSplit)?)
    }
}
