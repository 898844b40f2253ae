//! Which keys each query may attend to: always causal (queries aligned to the end of the keys, so a
//! KV cache works), plus key padding for left-padded batched generation, or segment ids for packed
//! training rows.

use candle_core::{Device, Tensor};

use super::error::Result;
use crate::ops;

/// The attention rule of one forward pass, as the fused attention op takes it.
#[derive(Debug, Clone)]
pub struct AttentionMask(ops::AttentionMask);

impl AttentionMask {
    /// Plain causal attention (no padding).
    pub fn causal() -> Self {
        AttentionMask(ops::AttentionMask {
            causal: true,
            key_padding: None,
            segment_ids: None,
        })
    }

    /// Causal attention for `query_len` new positions after `past_len` cached ones, where row `b`
    /// starts with `pad[b]` padding slots that no query may see.
    pub fn left_padded(
        pad: &[usize],
        query_len: usize,
        past_len: usize,
        device: &Device,
    ) -> Result<Self> {
        let key_len = past_len + query_len;
        let visible: Vec<u8> = pad
            .iter()
            .flat_map(|&p| (0..key_len).map(move |j| u8::from(j >= p)))
            .collect();
        Ok(AttentionMask(ops::AttentionMask {
            causal: true,
            key_padding: Some(Tensor::from_vec(visible, (pad.len(), key_len), device)?),
            segment_ids: None,
        }))
    }

    /// Causal attention inside each packed example: position `i` sees `j <= i` only when both carry
    /// the same segment id. `segments` holds one id vector per batch row, all of one length.
    pub fn packed(segments: &[Vec<u32>], device: &Device) -> Result<Self> {
        let len = segments.first().map_or(0, Vec::len);
        let ids: Vec<u32> = segments.iter().flatten().copied().collect();
        Ok(AttentionMask(ops::AttentionMask {
            causal: true,
            key_padding: None,
            segment_ids: Some(Tensor::from_vec(ids, (segments.len(), len), device)?),
        }))
    }

    /// The rule in the form [`ops::attention`] takes.
    pub fn as_ops(&self) -> &ops::AttentionMask {
        &self.0
    }
}
