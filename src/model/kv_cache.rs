//! A preallocated key/value cache: one `[B, kv_heads, capacity, head_dim]` buffer per layer for
//! keys and one for values, written in place as generation advances.

use candle_core::{DType, Device, Tensor};

use super::config::ModelConfig;
use super::error::{ModelError, Result};

/// Keys and values of every layer for the positions generated so far.
#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Zero-filled buffers for `batch` rows of up to `capacity` positions.
    pub fn new(
        config: &ModelConfig,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = (batch, config.num_key_value_heads, capacity, config.head_dim);
        let layers = config.num_hidden_layers;
        let buffers = || {
            (0..layers)
                .map(|_| Tensor::zeros(shape, dtype, device))
                .collect::<candle_core::Result<Vec<_>>>()
        };
        Ok(KvCache {
            keys: buffers()?,
            values: buffers()?,
            len: 0,
            capacity,
        })
    }

    /// Positions already stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fails unless `new_positions` more positions fit.
    pub fn check_room(&self, new_positions: usize) -> Result<()> {
        if self.len + new_positions > self.capacity {
            return Err(ModelError::Invalid(format!(
                "KV cache full: {} positions stored, {new_positions} more requested, capacity {}",
                self.len, self.capacity
            )));
        }
        Ok(())
    }

    /// Writes the new keys/values `[B, kv_heads, T, hd]` of `layer` after the stored ones and returns
    /// views of everything stored for that layer, `[B, kv_heads, len + T, hd]`.
    pub(crate) fn append(&self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let new = k.dim(2)?;
        let (keys, values) = (&self.keys[layer], &self.values[layer]);
        keys.slice_set(&k.detach().contiguous()?, 2, self.len)?;
        values.slice_set(&v.detach().contiguous()?, 2, self.len)?;
        Ok((
            keys.narrow(2, 0, self.len + new)?,
            values.narrow(2, 0, self.len + new)?,
        ))
    }

    /// Marks `positions` more positions as stored (after every layer has appended them).
    pub(crate) fn advance(&mut self, positions: usize) {
        self.len += positions;
    }

    /// A new cache whose row `i` is a copy of row `rows[i]` of this one: how `n` samples of one
    /// prompt share a single prefill.
    pub fn select_rows(&self, rows: &[u32]) -> Result<Self> {
        let index = Tensor::new(rows, self.keys[0].device())?;
        let pick = |buffers: &[Tensor]| {
            buffers
                .iter()
                .map(|t| t.index_select(&index, 0))
                .collect::<candle_core::Result<Vec<_>>>()
        };
        Ok(KvCache {
            keys: pick(&self.keys)?,
            values: pick(&self.values)?,
            len: self.len,
            capacity: self.capacity,
        })
    }
}
