//! Additive attention masks: causal, left-padded (batched generation) and packed (segment ids).

use candle_core::{DType, Device, Tensor};

use super::error::Result;

/// Added to the score of a key a query must not see. Finite, so a query row that sees no key at all
/// (a left-padding position) gets a uniform distribution instead of NaN; its output is never used.
pub const MASKED: f32 = -1.0e9;

/// An additive mask of shape `[batch, 1, queries, keys]`: 0 where a query may attend, [`MASKED`] elsewhere.
#[derive(Debug, Clone)]
pub struct AttentionMask(Tensor);

impl AttentionMask {
    /// Causal attention over `len` positions for every row of a batch of `batch` unpadded rows.
    pub fn causal(batch: usize, len: usize, dtype: DType, device: &Device) -> Result<Self> {
        Self::left_padded(&vec![0; batch], len, 0, dtype, device)
    }

    /// Causal attention for `query_len` new positions after `past_len` cached ones, where row `b`
    /// starts with `pad[b]` padding slots that no query may see.
    ///
    /// Query `i` sits at slot `past_len + i` and sees slots `pad[b] ..= past_len + i`.
    pub fn left_padded(
        pad: &[usize],
        query_len: usize,
        past_len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let key_len = past_len + query_len;
        let mut data = Vec::with_capacity(pad.len() * query_len * key_len);
        for &row_pad in pad {
            for i in 0..query_len {
                let last = past_len + i;
                data.extend((0..key_len).map(|j| {
                    if j >= row_pad && j <= last {
                        0.0
                    } else {
                        MASKED
                    }
                }));
            }
        }
        Self::from_values(data, pad.len(), query_len, key_len, dtype, device)
    }

    /// Causal attention inside each packed row: position `i` sees position `j <= i` only when both
    /// carry the same segment id. `segments` is one vector of ids per batch row, all of one length.
    pub fn packed(segments: &[Vec<u32>], dtype: DType, device: &Device) -> Result<Self> {
        let len = segments.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(segments.len() * len * len);
        for row in segments {
            for i in 0..len {
                data.extend((0..len).map(|j| {
                    if j <= i && row[j] == row[i] {
                        0.0
                    } else {
                        MASKED
                    }
                }));
            }
        }
        Self::from_values(data, segments.len(), len, len, dtype, device)
    }

    fn from_values(
        data: Vec<f32>,
        batch: usize,
        queries: usize,
        keys: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mask = Tensor::from_vec(data, (batch, 1, queries, keys), device)?.to_dtype(dtype)?;
        Ok(AttentionMask(mask))
    }

    /// The mask tensor, `[batch, 1, queries, keys]`.
    pub fn tensor(&self) -> &Tensor {
        &self.0
    }
}
