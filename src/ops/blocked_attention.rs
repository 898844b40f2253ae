//! Attention as batched matmuls over blocks of query rows, for devices whose matmul is far faster
//! than a hand-written attention kernel (a GPU's cuBLAS on tensor cores against the scalar CUDA
//! kernel of [`super::attention`]).
//!
//! Each block of `L` query rows scores its keys with one batched matmul per block (the `G` query
//! heads that share a kv head are stacked into one `G·L`-row matrix, so grouped-query attention
//! needs no copy of the keys), takes the masked softmax ([`super::masked_softmax`]) and multiplies
//! by the values. Only the output is kept for the backward, which recomputes each block's
//! probabilities: memory stays linear in the sequence length, as with the fused kernel, with one
//! block's `B·Hq·L·Tk` scores alive at a time.
//!
//! Precision: scores and the probabilities' gradient `dP = dO·Vᵀ` are computed from f32 copies of
//! the inputs (the softmax sees f32 scores whatever the input dtype, as in flash attention); the
//! matmuls with the probabilities and their gradients (`P·V`, `Pᵀ·dO`, `dS·K`, `dSᵀ·Q`) run in the
//! input dtype, the probabilities rounded to it, as flash attention's second matmul does.

use super::softmax::{masked_softmax, SoftmaxMask};
use super::AttentionMask;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};

const OP_NAME: &str = "blocked_attention";

/// Scores computed per block: `B·Hq·L·Tk` f32 values (128 MiB), which sets `L`.
const SCORES_PER_BLOCK: usize = 1 << 25;

/// The fewest query rows per block (longer keys than this bound allows still get 16 rows).
const MIN_BLOCK_ROWS: usize = 16;

/// `softmax(scale · q kᵀ + mask) v` like [`super::attention`] (same shapes, masks and
/// semantics, already checked by it), computed through matmuls over query blocks.
pub(super) fn blocked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: &AttentionMask,
) -> Result<Tensor> {
    run(Blocks::new(q, k, scale, mask)?, q, k, v)
}

fn run(blocks: Blocks, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let output = blocks.forward(&q.detach(), &k.detach(), &v.detach())?;
    q.apply_op3(&k, &v, BlockedAttention { blocks, output })
}

/// The geometry, masks and block size of one call.
#[derive(Clone)]
struct Blocks {
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_len: usize,
    k_len: usize,
    head_dim: usize,
    scale: f64,
    causal: bool,
    /// `[B, Tk]` u8, non-zero where the key may be attended.
    key_padding: Option<Tensor>,
    /// `[B, T]` u32.
    segment_ids: Option<Tensor>,
    /// Query rows per block.
    rows: usize,
}

impl Blocks {
    fn new(q: &Tensor, k: &Tensor, scale: f64, mask: &AttentionMask) -> Result<Self> {
        let (batch, q_heads, q_len, head_dim) = q.dims4()?;
        let (_, kv_heads, k_len, _) = k.dims4()?;
        let per_row = (batch * q_heads * k_len).max(1);
        let rows = (SCORES_PER_BLOCK / per_row).clamp(MIN_BLOCK_ROWS, q_len.max(MIN_BLOCK_ROWS));
        Ok(Blocks {
            batch,
            q_heads,
            kv_heads,
            q_len,
            k_len,
            head_dim,
            scale,
            causal: mask.causal,
            key_padding: mask
                .key_padding
                .as_ref()
                .map(|kp| kp.to_device(q.device())?.to_dtype(DType::U32)?.ne(0u32))
                .transpose()?,
            segment_ids: mask
                .segment_ids
                .as_ref()
                .map(|s| s.to_device(q.device()))
                .transpose()?,
            rows,
        })
    }

    /// The query blocks: `(first row, rows)`.
    fn spans(&self) -> impl Iterator<Item = (usize, usize)> {
        super::spans(self.q_len, self.rows)
    }

    /// Keys `0..end` are the only candidates for a block ending before query row `end_row`.
    fn key_end(&self, end_row: usize) -> usize {
        if self.causal {
            end_row + self.k_len - self.q_len
        } else {
            self.k_len
        }
    }

    /// Rows `start..start + len` of `x` `[B, Hq, T, D]` as `[B, Hkv, G·len, D]`: the query heads
    /// that share a kv head stacked into one matrix.
    fn grouped_rows(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        x.narrow(2, start, len)?.contiguous()?.reshape((
            self.batch,
            self.kv_heads,
            self.q_heads / self.kv_heads * len,
            self.head_dim,
        ))
    }

    /// Keys or values `0..end` of `x` `[B, Hkv, Tk, D]`, contiguous.
    fn leading_keys(x: &Tensor, end: usize) -> Result<Tensor> {
        x.narrow(2, 0, end)?.contiguous()
    }

    /// The additive padding/segment mask of a block, `[B, 1, 1, len, end]` f32 (0 or -inf), or
    /// `None` without such masks.
    fn block_mask(&self, start: usize, len: usize, end: usize) -> Result<Option<Tensor>> {
        let mut allowed: Option<Tensor> = None;
        if let Some(seg) = &self.segment_ids {
            let queries = seg.narrow(1, start, len)?.unsqueeze(2)?;
            let keys = seg.narrow(1, 0, end)?.unsqueeze(1)?;
            allowed = Some(queries.broadcast_eq(&keys)?);
        }
        if let Some(kp) = &self.key_padding {
            let keys = kp
                .narrow(1, 0, end)?
                .unsqueeze(1)?
                .broadcast_as((self.batch, len, end))?;
            allowed = Some(match allowed {
                Some(same_segment) => (same_segment * keys)?,
                None => keys.contiguous()?,
            });
        }
        let Some(allowed) = allowed else {
            return Ok(None);
        };
        let device = allowed.device();
        let open = Tensor::zeros((self.batch, len, end), DType::F32, device)?;
        let closed = Tensor::full(f32::NEG_INFINITY, (self.batch, len, end), device)?;
        Ok(Some(
            allowed
                .where_cond(&open, &closed)?
                .reshape((self.batch, 1, 1, len, end))?,
        ))
    }

    /// The probabilities of one block, `[B, Hkv, G·len, end]` f32, from its grouped queries and
    /// the leading keys, both f32.
    fn probabilities(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        (start, len, end): (usize, usize, usize),
    ) -> Result<Tensor> {
        let group = self.q_heads / self.kv_heads;
        let scores = (queries.matmul(&keys.t()?)? * self.scale)?.reshape((
            self.batch,
            self.kv_heads,
            group,
            len,
            end,
        ))?;
        let additive = self.block_mask(start, len, end)?;
        let mask = SoftmaxMask {
            additive: additive.as_ref(),
            causal: self.causal,
        };
        masked_softmax(&scores, mask)?.reshape((self.batch, self.kv_heads, group * len, end))
    }

    /// The output `[B, Hq, T, D]` in the inputs' dtype.
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let dtype = q.dtype();
        let k32 = k.to_dtype(DType::F32)?;
        let mut outputs = Vec::new();
        for (start, len) in self.spans() {
            let end = self.key_end(start + len);
            let queries = self.grouped_rows(q, start, len)?.to_dtype(DType::F32)?;
            let p =
                self.probabilities(&queries, &Self::leading_keys(&k32, end)?, (start, len, end))?;
            let out = p
                .to_dtype(dtype)?
                .matmul(&Self::leading_keys(v, end)?)?
                .reshape((self.batch, self.q_heads, len, self.head_dim))?;
            outputs.push(out);
        }
        Tensor::cat(&outputs, 2)
    }

    /// Gradients of q, k and v from the output `o` and its gradient `grad_o`, all `[.., T, D]`.
    fn backward(
        &self,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        o: &Tensor,
        grad_o: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let dtype = q.dtype();
        let (k32, v32) = (k.to_dtype(DType::F32)?, v.to_dtype(DType::F32)?);
        let grad_o = grad_o.to_dtype(dtype)?.contiguous()?;
        let kv_shape = (self.batch, self.kv_heads, self.k_len, self.head_dim);
        let mut grad_k = Tensor::zeros(kv_shape, DType::F32, q.device())?;
        let mut grad_v = grad_k.clone();
        let mut grad_q = Vec::new();
        for (start, len) in self.spans() {
            let end = self.key_end(start + len);
            let queries = self.grouped_rows(q, start, len)?;
            let keys = Self::leading_keys(k, end)?;
            let p = self.probabilities(
                &queries.to_dtype(DType::F32)?,
                &Self::leading_keys(&k32, end)?,
                (start, len, end),
            )?;
            let d_out = self.grouped_rows(&grad_o, start, len)?;
            let d_out32 = d_out.to_dtype(DType::F32)?;
            let out32 = self.grouped_rows(o, start, len)?.to_dtype(DType::F32)?;
            // dV = Pᵀ·dO; dP = dO·Vᵀ; dS = P ⊙ (dP − rowsum(dO ⊙ O)).
            let grad_v_block = p.to_dtype(dtype)?.t()?.matmul(&d_out)?;
            let grad_p = d_out32.matmul(&Self::leading_keys(&v32, end)?.t()?)?;
            let delta = (&d_out32 * &out32)?.sum_keepdim(3)?;
            let grad_s = ((p * grad_p.broadcast_sub(&delta)?)? * self.scale)?.to_dtype(dtype)?;
            grad_q.push(grad_s.matmul(&keys)?.reshape((
                self.batch,
                self.q_heads,
                len,
                self.head_dim,
            ))?);
            let grad_k_block = grad_s.t()?.matmul(&queries)?;
            grad_k = (grad_k + self.to_all_keys(&grad_k_block, end)?)?;
            grad_v = (grad_v + self.to_all_keys(&grad_v_block, end)?)?;
        }
        Ok((
            Tensor::cat(&grad_q, 2)?,
            grad_k.to_dtype(dtype)?,
            grad_v.to_dtype(dtype)?,
        ))
    }

    /// A block's gradient for keys `0..end`, as f32 over all `Tk` keys (zeros after `end`).
    fn to_all_keys(&self, grad: &Tensor, end: usize) -> Result<Tensor> {
        grad.to_dtype(DType::F32)?
            .pad_with_zeros(2, 0, self.k_len - end)
    }
}

/// The op that gives the precomputed output its backward: its forward hands back `output`
/// (computed by [`Blocks::forward`] on the detached inputs), its backward recomputes blocks.
struct BlockedAttention {
    blocks: Blocks,
    output: Tensor,
}

impl BlockedAttention {
    /// A copy of the precomputed output's storage.
    fn output_storage(&self) -> Result<(Storage, Shape)> {
        let output = self.output.contiguous()?;
        let (storage, layout) = output.storage_and_layout();
        let copy = storage.try_clone(layout)?;
        if layout.start_offset() != 0 || !layout.is_contiguous() {
            candle_core::bail!("{OP_NAME}: internal error: the output is not a whole buffer");
        }
        Ok((copy, layout.shape().clone()))
    }
}

impl CustomOp3 for BlockedAttention {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match self.output_storage()? {
            (Storage::Cpu(storage), shape) => Ok((storage, shape)),
            _ => candle_core::bail!("{OP_NAME}: the output is not on the CPU"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        match self.output_storage()? {
            (Storage::Cuda(storage), shape) => Ok((storage, shape)),
            _ => candle_core::bail!("{OP_NAME}: the output is not on a CUDA device"),
        }
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        output: &Tensor,
        grad_output: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_q, grad_k, grad_v) = self.blocks.backward(
            (&q.detach(), &k.detach(), &v.detach()),
            &output.detach(),
            grad_output,
        )?;
        Ok((Some(grad_q), Some(grad_k), Some(grad_v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::{attention_with, AttentionKernel};
    use candle_core::{Device, Var};

    /// Largest |a − b| over the largest |b|.
    fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        let diff = (&a - &b).unwrap().abs().unwrap().max(0).unwrap();
        let scale = b.abs().unwrap().max(0).unwrap();
        diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(1e-12)
    }

    struct Case {
        shape: (usize, usize, usize, usize, usize), // B, Hq, Hkv, T, Tk
        mask: AttentionMask,
        rows: usize,
        dtype: DType,
    }

    /// Output and q/k/v gradients of the blocked path (blocks of `rows` query rows) and of the
    /// fused op, for `loss = Σ o ⊙ w` with fixed random `w`.
    fn both(case: &Case) -> [(Tensor, Tensor); 4] {
        let (b, hq, hkv, t, tk) = case.shape;
        let d = 8;
        let dev = Device::Cpu;
        let make = |shape: (usize, usize, usize, usize), seed: f64| {
            let n = shape.0 * shape.1 * shape.2 * shape.3;
            let values: Vec<f32> = (0..n)
                .map(|i| ((i as f64 * 0.37 + seed).sin() * 1.5) as f32)
                .collect();
            Var::from_tensor(
                &Tensor::from_vec(values, shape, &dev)
                    .unwrap()
                    .to_dtype(case.dtype)
                    .unwrap(),
            )
            .unwrap()
        };
        let (q, k, v) = (
            make((b, hq, t, d), 0.1),
            make((b, hkv, tk, d), 0.7),
            make((b, hkv, tk, d), 1.3),
        );
        let w = make((b, hq, t, d), 2.9)
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap();
        let scale = 1.0 / (d as f64).sqrt();
        let grads = |o: Tensor| {
            let loss = (o.to_dtype(DType::F32).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap();
            let g = loss.backward().unwrap();
            [q.as_tensor(), k.as_tensor(), v.as_tensor()].map(|x| g.get(x).unwrap().clone())
        };
        let mut blocks = Blocks::new(q.as_tensor(), k.as_tensor(), scale, &case.mask).unwrap();
        blocks.rows = case.rows;
        let blocked = run(blocks, q.as_tensor(), k.as_tensor(), v.as_tensor()).unwrap();
        let fused = attention_with(
            q.as_tensor(),
            k.as_tensor(),
            v.as_tensor(),
            scale,
            &case.mask,
            AttentionKernel::Fused,
        )
        .unwrap();
        let (gb, gf) = (grads(blocked.clone()), grads(fused.clone()));
        let [gb0, gb1, gb2] = gb;
        let [gf0, gf1, gf2] = gf;
        [(blocked, fused), (gb0, gf0), (gb1, gf1), (gb2, gf2)]
    }

    fn assert_agrees(case: Case, tolerance: f32) {
        for (what, (blocked, fused)) in ["output", "grad q", "grad k", "grad v"]
            .iter()
            .zip(both(&case))
        {
            assert_eq!(blocked.dims(), fused.dims(), "{what}");
            let error = relative_error(&blocked, &fused);
            assert!(
                error <= tolerance,
                "{what}: relative error {error:e} > {tolerance:e}"
            );
        }
    }

    fn causal() -> AttentionMask {
        AttentionMask {
            causal: true,
            ..Default::default()
        }
    }

    #[test]
    fn causal_grouped_query_attention_over_uneven_blocks_matches_the_fused_op() {
        assert_agrees(
            Case {
                shape: (2, 4, 2, 13, 13),
                mask: causal(),
                rows: 5,
                dtype: DType::F32,
            },
            1e-5,
        );
        assert_agrees(
            Case {
                shape: (1, 3, 3, 7, 7),
                mask: causal(),
                rows: 16,
                dtype: DType::F32,
            },
            1e-5,
        );
    }

    #[test]
    fn padding_and_packed_segments_match_the_fused_op() {
        let dev = Device::Cpu;
        let (b, t) = (2, 11);
        let padding: Vec<u8> = (0..b * t)
            .map(|i| u8::from(!(i >= t && i < t + 3)))
            .collect();
        let segments: Vec<u32> = (0..b * t).map(|i| if i % t < 6 { 1 } else { 2 }).collect();
        let mask = AttentionMask {
            causal: true,
            key_padding: Some(Tensor::from_vec(padding, (b, t), &dev).unwrap()),
            segment_ids: Some(Tensor::from_vec(segments, (b, t), &dev).unwrap()),
        };
        assert_agrees(
            Case {
                shape: (b, 4, 1, t, t),
                mask,
                rows: 4,
                dtype: DType::F32,
            },
            1e-5,
        );
    }

    #[test]
    fn queries_after_a_cache_and_fully_masked_rows_match_the_fused_op() {
        // Three new queries after six cached keys (causal offset), blocks of two rows.
        assert_agrees(
            Case {
                shape: (2, 2, 1, 3, 9),
                mask: causal(),
                rows: 2,
                dtype: DType::F32,
            },
            1e-5,
        );
        // Not causal; batch row 1 has every key padded, so its rows output zeros and pass no gradient.
        let dev = Device::Cpu;
        let padding: Vec<u32> = (0..2 * 5).map(|i| u32::from(i < 5)).collect();
        let mask = AttentionMask {
            causal: false,
            key_padding: Some(Tensor::from_vec(padding, (2, 5), &dev).unwrap()),
            segment_ids: None,
        };
        let case = Case {
            shape: (2, 2, 2, 4, 5),
            mask,
            rows: 3,
            dtype: DType::F32,
        };
        let [(out, _), (grad_q, _), ..] = both(&case);
        let batch_row_1 = |x: &Tensor| {
            let total = x.narrow(0, 1, 1).unwrap().abs().unwrap().sum_all().unwrap();
            total.to_scalar::<f32>().unwrap()
        };
        assert_eq!(batch_row_1(&out), 0.0);
        assert_eq!(batch_row_1(&grad_q), 0.0);
        assert_agrees(case, 1e-5);
    }

    #[test]
    fn bf16_inputs_stay_within_bf16_rounding_of_the_fused_op() {
        assert_agrees(
            Case {
                shape: (2, 4, 2, 12, 12),
                mask: causal(),
                rows: 5,
                dtype: DType::BF16,
            },
            2e-2,
        );
    }
}
