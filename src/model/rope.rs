//! Rotary position embeddings in the half-split layout Hugging Face uses (llama2.c checkpoints are
//! permuted into it at load time), with Llama 3.x frequency scaling.

use candle_core::{DType, Device, Tensor};

use super::config::{Llama3RopeScaling, ModelConfig};
use super::error::Result;
use crate::ops;

/// The inverse frequencies of one model; cos/sin are computed per (row, position) on demand,
/// so rows of a batch may sit at different positions.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Tensor,
}

impl Rope {
    /// Inverse frequencies `theta^(-2i/d)` for `i < d/2`, scaled as `rope_scaling` says.
    pub fn new(config: &ModelConfig, device: &Device) -> Result<Self> {
        let d = config.head_dim;
        let inv_freq: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f64 / d as f64) as f32)
            .map(|f| match &config.rope_scaling {
                Some(scaling) => llama3_scale(f as f64, scaling) as f32,
                None => f,
            })
            .collect();
        Ok(Rope {
            inv_freq: Tensor::from_vec(inv_freq, (1, d / 2), device)?,
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
        Ok((
            angles.cos()?.to_dtype(dtype)?,
            angles.sin()?.to_dtype(dtype)?,
        ))
    }

    /// Rotates `x` `[B, heads, T, head_dim]` (half-split pairs) by the angles of [`Rope::cos_sin`].
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        Ok(ops::rope(x, cos, sin, ops::RopeLayout::HalfSplit)?)
    }
}

/// Llama 3.x: keep high frequencies, divide low ones by `factor`, interpolate in between.
fn llama3_scale(inv_freq: f64, s: &Llama3RopeScaling) -> f64 {
    let old_context = s.original_max_position_embeddings as f64;
    let low_freq_wavelen = old_context / s.low_freq_factor;
    let high_freq_wavelen = old_context / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
    if wavelen < high_freq_wavelen {
        inv_freq
    } else if wavelen > low_freq_wavelen {
        inv_freq / s.factor
    } else {
        let smooth =
            (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * inv_freq / s.factor + smooth * inv_freq
    }
}
