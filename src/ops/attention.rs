//! Causal / masked multi-head attention with grouped-query heads that never stores the
//! `T × Tk` probability matrix: it works on blocks of `QUERY_BLOCK` (128) query rows (scores of
//! one block at a time, computed with gemms), the forward saves only the per-row
//! log-sum-exp, and the backward recomputes each block's probabilities from it.

use super::cpu::{
    gemm, gemm_accumulate, min_rows_per_task, unsupported_dtype, widen_half, with_cpu_storage,
    MatView, Real,
};
use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP_NAME: &str = "attention";

/// Which (query, key) pairs may interact. All rules combine with AND.
#[derive(Clone, Debug, Default)]
pub struct AttentionMask {
    /// Causal with the queries aligned to the end of the keys: query `i` (of `T`) may see key
    /// `j` (of `Tk`) iff `j <= i + (Tk - T)` — plain causal when `T == Tk`, KV-cache decoding
    /// when `T < Tk`.
    pub causal: bool,
    /// `[B, Tk]` (u8 or u32): non-zero where the key may be attended. Left padding of row `b`
    /// is `key_padding[b, ..pad] = 0`.
    pub key_padding: Option<Tensor>,
    /// `[B, T]` u32 segment ids for packed sequences (requires `T == Tk`): query `i` may see key
    /// `j` only if they carry the same id.
    pub segment_ids: Option<Tensor>,
}

/// `softmax(scale · q kᵀ + mask) v` for `q [B, Hq, T, D]`, `k`/`v` `[B, Hkv, Tk, D]`, query head
/// `h` using kv head `h / (Hq / Hkv)`. A query row that may see no key outputs zeros (and
/// passes no gradient). Differentiable w.r.t. `q`, `k` and `v`; extra memory is `O(B·Hq·T)`
/// besides the inputs and outputs. CPU: f32/f64 native, bf16/f16 computed in f32; CUDA: f32,
/// bf16 and f16 native with f32 accumulation, head dim at most 256.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: &AttentionMask,
) -> Result<Tensor> {
    let kernel = AttentionKernel::for_call(q.device(), q.dim(2)?);
    attention_with(q, k, v, scale, mask, kernel)
}

/// How [`attention`] is computed. Both give the same result (to rounding) and keep memory
/// linear in the sequence length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// One fused op per direction (the CPU kernel, or the CUDA kernel of `cuda::attention`).
    Fused,
    /// Batched matmuls over blocks of query rows and the masked softmax
    /// (`ops::blocked_attention`): cuBLAS's tensor cores on a GPU.
    Blocked,
}

impl AttentionKernel {
    /// The environment variable that overrides [`attention`]'s choice: `fused`, `blocked` or
    /// `auto` (the default: blocked on CUDA, fused on the CPU).
    pub const ENV: &'static str = "DISTILL_ATTENTION";

    /// Fewer query rows than this always run fused: a decoding step's handful of rows would pay
    /// for a dozen small matmuls and softmaxes per layer.
    pub const MIN_BLOCKED_QUERIES: usize = 64;

    /// The kernel for a call with `queries` query rows on `device`. `auto` picks the faster one
    /// measured on each device: on an H200 the blocked attention's 0.5B training step ran 1.23×
    /// the fused CUDA kernel's tokens/s; on the CPU it is 3.3× slower than the fused kernel.
    pub fn for_call(device: &Device, queries: usize) -> Self {
        if queries < Self::MIN_BLOCKED_QUERIES {
            return AttentionKernel::Fused;
        }
        match Self::configured() {
            Some(kernel) => kernel,
            None if device.is_cuda() => AttentionKernel::Blocked,
            None => AttentionKernel::Fused,
        }
    }

    /// The kernel named by [`AttentionKernel::ENV`], read once per process; `None` for `auto` or
    /// unset. An unknown value is reported once on stderr and treated as `auto`.
    fn configured() -> Option<Self> {
        static CONFIGURED: std::sync::OnceLock<Option<AttentionKernel>> =
            std::sync::OnceLock::new();
        *CONFIGURED.get_or_init(|| match std::env::var(Self::ENV).as_deref() {
            Ok("blocked") => Some(AttentionKernel::Blocked),
            Ok("fused") => Some(AttentionKernel::Fused),
            Ok("auto") | Err(_) => None,
            Ok(other) => {
                eprintln!(
                    "{}={other:?} is not `fused`, `blocked` or `auto`; using `auto`",
                    Self::ENV
                );
                None
            }
        })
    }
}

/// [`attention`] computed by `kernel`.
pub fn attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: &AttentionMask,
    kernel: AttentionKernel,
) -> Result<Tensor> {
    let (b, hq, t, d) = match q.dims() {
        &[b, hq, t, d] => (b, hq, t, d),
        dims => bail!("{OP_NAME}: q must be [B, Hq, T, D], got {dims:?}"),
    };
    let (kb, hkv, tk, kd) = match k.dims() {
        &[b, h, t, d] => (b, h, t, d),
        dims => bail!("{OP_NAME}: k must be [B, Hkv, Tk, D], got {dims:?}"),
    };
    if kb != b || kd != d || v.dims() != k.dims() || hkv == 0 || hq % hkv != 0 {
        bail!(
            "{OP_NAME}: need q [B, Hq, T, D], k = v [B, Hkv, Tk, D] with Hq a multiple of Hkv; got q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if q.dtype() != k.dtype() || q.dtype() != v.dtype() {
        bail!(
            "{OP_NAME}: q, k, v must share a dtype, got {:?}, {:?}, {:?}",
            q.dtype(),
            k.dtype(),
            v.dtype()
        );
    }
    if mask.causal && t > tk {
        bail!(
            "{OP_NAME}: causal attention needs T <= Tk, got q {:?}, k {:?}",
            q.dims(),
            k.dims()
        );
    }
    let key_padding = match &mask.key_padding {
        None => None,
        Some(kp) => {
            if kp.dims() != [b, tk] {
                bail!(
                    "{OP_NAME}: key_padding must be [B, Tk] = [{b}, {tk}], got {:?}",
                    kp.dims()
                );
            }
            if !matches!(kp.dtype(), DType::U8 | DType::U32) {
                bail!(
                    "{OP_NAME}: key_padding must be u8 or u32, got {:?}",
                    kp.dtype()
                );
            }
            Some(mask_tensor(kp, q)?)
        }
    };
    let segment_ids = match &mask.segment_ids {
        None => None,
        Some(seg) => {
            if seg.dims() != [b, t] || t != tk || seg.dtype() != DType::U32 {
                bail!(
                    "{OP_NAME}: segment_ids must be u32 [B, T] = [{b}, {t}] with T == Tk = {tk}, got {:?} {:?}",
                    seg.dtype(),
                    seg.dims()
                );
            }
            Some(mask_tensor(seg, q)?)
        }
    };
    if kernel == AttentionKernel::Blocked {
        return super::blocked_attention::blocked_attention(q, k, v, scale, mask);
    }
    let spec = Spec {
        geometry: Geometry {
            batch: b,
            q_heads: hq,
            kv_heads: hkv,
            q_len: t,
            k_len: tk,
            head_dim: d,
            scale,
            causal: mask.causal,
            key_padding: None,
            segment_ids: None,
        },
        key_padding,
        segment_ids,
    };
    let (q32, dtype) = widen_half(q)?;
    let (k32, _) = widen_half(k)?;
    let (v32, _) = widen_half(v)?;
    let packed = q32.contiguous()?.apply_op3(
        &k32.contiguous()?,
        &v32.contiguous()?,
        AttentionOp { spec },
    )?;
    packed
        .narrow(0, 0, b * hq * t * d)?
        .reshape((b, hq, t, d))?
        .to_dtype(dtype)
}

/// A mask as a flattened u32 tensor on the device of `q`.
fn mask_tensor(mask: &Tensor, q: &Tensor) -> Result<Tensor> {
    mask.to_dtype(DType::U32)?
        .flatten_all()?
        .to_device(q.device())?
        .contiguous()
}

/// What the op structs carry: the geometry (without host masks) and the masks as flattened
/// u32 tensors on the inputs' device, read by the CUDA kernels in place and copied to the
/// host for the CPU kernels.
#[derive(Clone)]
pub(super) struct Spec {
    /// Sizes, scale and causal flag; its host masks are always `None`.
    pub(super) geometry: Geometry,
    /// `[B·Tk]` u32, non-zero where the key may be attended.
    pub(super) key_padding: Option<Tensor>,
    /// `[B·T]` u32 segment ids.
    pub(super) segment_ids: Option<Tensor>,
}

impl Spec {
    /// The geometry with the masks copied to the host, for the CPU kernels.
    fn host_geometry(&self) -> Result<Geometry> {
        let host = |t: &Option<Tensor>| t.as_ref().map(Tensor::to_vec1::<u32>).transpose();
        Ok(Geometry {
            key_padding: host(&self.key_padding)?,
            segment_ids: host(&self.segment_ids)?,
            ..self.geometry.clone()
        })
    }
}

/// Sizes, scale and masking rules of one attention call.
#[derive(Clone)]
pub(super) struct Geometry {
    pub(super) batch: usize,
    pub(super) q_heads: usize,
    pub(super) kv_heads: usize,
    pub(super) q_len: usize,
    pub(super) k_len: usize,
    pub(super) head_dim: usize,
    pub(super) scale: f64,
    pub(super) causal: bool,
    key_padding: Option<Vec<u32>>,
    segment_ids: Option<Vec<u32>>,
}

impl Geometry {
    fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }

    fn q_rows(&self) -> usize {
        self.batch * self.q_heads * self.q_len
    }

    /// Keys `0..limit` are the only candidates for query `i` (causal bound).
    fn key_limit(&self, i: usize) -> usize {
        if self.causal {
            i + self.k_len - self.q_len + 1
        } else {
            self.k_len
        }
    }

    /// Whether query `i` of batch row `b` may see key `j` (`j` already below the causal limit).
    fn allowed(&self, b: usize, i: usize, j: usize) -> bool {
        if let Some(kp) = &self.key_padding {
            if kp[b * self.k_len + j] == 0 {
                return false;
            }
        }
        if let Some(seg) = &self.segment_ids {
            if seg[b * self.q_len + i] != seg[b * self.q_len + j] {
                return false;
            }
        }
        true
    }

    /// Offset of row `i` of query head `h` in batch `b`.
    fn q_row(&self, b: usize, h: usize, i: usize) -> usize {
        ((b * self.q_heads + h) * self.q_len + i) * self.head_dim
    }

    /// Offset of row `j` of kv head `h` in batch `b`.
    fn k_row(&self, b: usize, h: usize, j: usize) -> usize {
        ((b * self.kv_heads + h) * self.k_len + j) * self.head_dim
    }
}

fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = T::of(0.0);
    for (&x, &y) in a.iter().zip(b) {
        acc += x * y;
    }
    acc
}

/// Query rows processed together: scores of one block are a `QUERY_BLOCK × Tk` buffer.
const QUERY_BLOCK: usize = 128;

/// A contiguous input: its storage and the element offset of its first element.
#[derive(Clone, Copy)]
struct Input<'a> {
    storage: &'a CpuStorage,
    offset: usize,
}

impl<'a> Input<'a> {
    /// Row-major `[rows, head_dim]` matrix starting at element `start` of the tensor.
    fn rows(&self, start: usize, head_dim: usize) -> MatView<'a> {
        MatView::row_major(self.storage, self.offset + start, head_dim)
    }

    /// Transposed view `[head_dim, rows]` of the rows starting at element `start`.
    fn rows_t(&self, start: usize, head_dim: usize) -> MatView<'a> {
        MatView::transposed(self.storage, self.offset + start, head_dim)
    }
}

/// One block of query rows `i0..i0 + len` of query head `head`, and the keys it can reach.
struct QueryBlock {
    batch: usize,
    head: usize,
    kv_head: usize,
    i0: usize,
    len: usize,
    /// Keys `0..key_end` cover every key any row of the block may see.
    key_end: usize,
}

impl Geometry {
    /// The query blocks of kv group `task` (= `b · Hkv + kv_head`), in output order.
    fn blocks(&self, task: usize) -> impl Iterator<Item = QueryBlock> + '_ {
        let (batch, kv_head) = (task / self.kv_heads, task % self.kv_heads);
        let group = self.group();
        (kv_head * group..(kv_head + 1) * group).flat_map(move |head| {
            super::spans(self.q_len, QUERY_BLOCK).map(move |(i0, len)| QueryBlock {
                batch,
                head,
                kv_head,
                i0,
                len,
                key_end: self.key_limit(i0 + len - 1),
            })
        })
    }

    /// Turns raw scores `q·k` of `block` (row-major `len × key_end`) into probabilities, 0
    /// where masked. With `saved_lse = None` they are normalised and the row log-sum-exps are
    /// returned (forward); otherwise `exp(scale·s - saved_lse)` is used (backward) and the
    /// returned vector is empty.
    fn probabilities<T: Real>(
        &self,
        block: &QueryBlock,
        scores: &mut [T],
        saved_lse: Option<&[T]>,
    ) -> Vec<T> {
        if block.key_end == 0 {
            return vec![T::NEG_INFINITY; block.len];
        }
        let scale = T::of(self.scale);
        let mut row_lse = Vec::with_capacity(block.len);
        for (r, row) in scores.chunks_mut(block.key_end).enumerate() {
            let i = block.i0 + r;
            let limit = self.key_limit(i).min(block.key_end);
            let (visible, hidden) = row.split_at_mut(limit);
            hidden.fill(T::NEG_INFINITY);
            if self.key_padding.is_none() && self.segment_ids.is_none() {
                for s in visible {
                    *s *= scale;
                }
            } else {
                for (j, s) in visible.iter_mut().enumerate() {
                    *s = if self.allowed(block.batch, i, j) {
                        *s * scale
                    } else {
                        T::NEG_INFINITY
                    };
                }
            }
            let shift = match saved_lse {
                Some(saved) => saved[r],
                None => row.iter().fold(T::NEG_INFINITY, |m, &v| m.maximum(v)),
            };
            if shift == T::NEG_INFINITY {
                // The row sees no key: probabilities 0, output 0, no gradient.
                row.fill(T::of(0.0));
                if saved_lse.is_none() {
                    row_lse.push(T::NEG_INFINITY);
                }
                continue;
            }
            for s in row.iter_mut() {
                *s -= shift;
            }
            T::exp_in_place(row);
            let sum = row.iter().fold(T::of(0.0), |a, &v| a + v);
            if saved_lse.is_none() {
                let inv = T::of(1.0) / sum;
                for s in row.iter_mut() {
                    *s *= inv;
                }
                row_lse.push(shift + sum.ln());
            }
        }
        row_lse
    }
}

/// Output packs `[o (B·Hq·T·D), lse (B·Hq·T)]`; a row that sees no key has `o = 0` and
/// `lse = -inf`. Parallel over kv groups `(b, kv_head)`; each query block is two gemms.
fn forward<T: Real>(g: &Geometry, q: Input<'_>, k: Input<'_>, v: Input<'_>) -> Result<Vec<T>> {
    let (d, t) = (g.head_dim, g.q_len);
    let rows = g.q_rows();
    let mut out = vec![T::of(0.0); rows * d + rows];
    if d == 0 || t == 0 {
        return Ok(out);
    }
    let (o, lse) = out.split_at_mut(rows * d);
    let group_rows = g.group() * t;
    o.par_chunks_mut(group_rows * d)
        .zip(lse.par_chunks_mut(group_rows))
        .with_min_len(min_rows_per_task(group_rows * g.k_len * d))
        .enumerate()
        .try_for_each(|(task, (o_group, lse_group))| -> Result<()> {
            for block in g.blocks(task) {
                let local = (block.head % g.group()) * t + block.i0;
                let kv_start = g.k_row(block.batch, block.kv_head, 0);
                let q_start = g.q_row(block.batch, block.head, block.i0);
                let mut scores: Vec<T> = gemm(
                    &q.rows(q_start, d),
                    &k.rows_t(kv_start, d),
                    block.len,
                    block.key_end,
                    d,
                )?;
                let block_lse = g.probabilities(&block, &mut scores, None);
                lse_group[local..local + block.len].copy_from_slice(&block_lse);
                let probs = T::to_cpu_storage_owned(scores);
                // The block's output rows start at zero and are written by this block alone.
                gemm_accumulate(
                    &mut o_group[local * d..(local + block.len) * d],
                    &MatView::row_major(&probs, 0, block.key_end),
                    &v.rows(kv_start, d),
                    block.len,
                    d,
                    block.key_end,
                )?;
            }
            Ok(())
        })?;
    Ok(out)
}

/// Output packs `[dq, dk, dv]`. `o_lse` is the forward's packed `[o, lse]`, `d_o` the
/// gradient of its `o` part. Parallel over kv groups, which own their `dk`, `dv` and the `dq`
/// of their query heads; per query block: recompute `P`, then `dP = dO Vᵀ`,
/// `dS = P ⊙ (dP - δ)·scale` with `δ_i = dO_i·O_i`, `dQ = dS K`, `dK += dSᵀ Q`, `dV += Pᵀ dO`.
fn backward<T: Real>(
    g: &Geometry,
    (q, k, v): (Input<'_>, Input<'_>, Input<'_>),
    o_lse: &[T],
    d_o: Input<'_>,
) -> Result<Vec<T>> {
    let (d, t) = (g.head_dim, g.q_len);
    let rows = g.q_rows();
    let (o, lse) = o_lse.split_at(rows * d);
    let nq = rows * d;
    let nk = g.batch * g.kv_heads * g.k_len * d;
    let mut out = vec![T::of(0.0); nq + 2 * nk];
    if d == 0 || t == 0 {
        return Ok(out);
    }
    let d_o_slice = &d_o.storage.as_slice::<T>()?[d_o.offset..][..nq];
    let delta: Vec<T> = d_o_slice
        .par_chunks(d)
        .zip(o.par_chunks(d))
        .map(|(a, b)| dot(a, b))
        .collect();
    let scale = T::of(g.scale);
    let (dq, dkv) = out.split_at_mut(nq);
    let (dk, dv) = dkv.split_at_mut(nk);
    let group_rows = g.group() * t;
    let kv_len = g.k_len * d;
    dq.par_chunks_mut(group_rows * d)
        .zip(dk.par_chunks_mut(kv_len).zip(dv.par_chunks_mut(kv_len)))
        .enumerate()
        .try_for_each(|(task, (dq_group, (dk_group, dv_group)))| -> Result<()> {
            for block in g.blocks(task) {
                let (n, m) = (block.len, block.key_end);
                if m == 0 {
                    continue;
                }
                let local = (block.head % g.group()) * t + block.i0;
                let first_row = (block.batch * g.q_heads + block.head) * t + block.i0;
                let q_start = g.q_row(block.batch, block.head, block.i0);
                let kv_start = g.k_row(block.batch, block.kv_head, 0);
                let mut probs: Vec<T> = gemm(&q.rows(q_start, d), &k.rows_t(kv_start, d), n, m, d)?;
                g.probabilities(&block, &mut probs, Some(&lse[first_row..first_row + n]));
                let mut d_scores: Vec<T> =
                    gemm(&d_o.rows(q_start, d), &v.rows_t(kv_start, d), n, m, d)?;
                for (r, (ds_row, p_row)) in d_scores.chunks_mut(m).zip(probs.chunks(m)).enumerate()
                {
                    let delta_r = delta[first_row + r];
                    for (ds, &p) in ds_row.iter_mut().zip(p_row) {
                        *ds = p * (*ds - delta_r) * scale;
                    }
                }
                let probs = T::to_cpu_storage_owned(probs);
                let d_scores = T::to_cpu_storage_owned(d_scores);
                // dq's rows of this block are written by this block alone and start at zero,
                // so accumulating into them writes them; dk and dv sum over the query blocks.
                gemm_accumulate(
                    &mut dq_group[local * d..(local + n) * d],
                    &MatView::row_major(&d_scores, 0, m),
                    &k.rows(kv_start, d),
                    n,
                    d,
                    m,
                )?;
                gemm_accumulate(
                    &mut dk_group[..m * d],
                    &MatView::transposed(&d_scores, 0, m),
                    &q.rows(q_start, d),
                    m,
                    d,
                    n,
                )?;
                gemm_accumulate(
                    &mut dv_group[..m * d],
                    &MatView::transposed(&probs, 0, m),
                    &d_o.rows(q_start, d),
                    m,
                    d,
                    n,
                )?;
            }
            Ok(())
        })?;
    Ok(out)
}

/// Checks that `q`, `k`, `v` are contiguous and returns them as [`Input`]s.
fn inputs<'a>(
    (qs, ql): (&'a CpuStorage, &Layout),
    (ks, kl): (&'a CpuStorage, &Layout),
    (vs, vl): (&'a CpuStorage, &Layout),
    op: &str,
) -> Result<(Input<'a>, Input<'a>, Input<'a>)> {
    let input = |storage: &'a CpuStorage, layout: &Layout| -> Result<Input<'a>> {
        match layout.contiguous_offsets() {
            Some((offset, _)) => Ok(Input { storage, offset }),
            None => bail!("{op}: expected contiguous q, k, v, got layout {layout:?}"),
        }
    };
    Ok((input(qs, ql)?, input(ks, kl)?, input(vs, vl)?))
}

/// Forward op on `(q, k, v)`; output packs `[o, lse]` (f32 on cuda, whatever the dtype of q).
struct AttentionOp {
    spec: Spec,
}

/// Backward op on `(q, k, v)` with the forward output and its gradient; output packs
/// `[dq, dk, dv]`.
struct AttentionBackward {
    spec: Spec,
    saved: Tensor,
    grad: Tensor,
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.spec.host_geometry()?;
        let (q, k, v) = inputs((qs, ql), (ks, kl), (vs, vl), OP_NAME)?;
        let out = match qs {
            CpuStorage::F32(_) => CpuStorage::F32(forward::<f32>(g, q, k, v)?),
            CpuStorage::F64(_) => CpuStorage::F64(forward::<f64>(g, q, k, v)?),
            other => return Err(unsupported_dtype(OP_NAME, other)),
        };
        Ok((out, Shape::from(g.q_rows() * (g.head_dim + 1))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::attention::forward(OP_NAME, &self.spec, (qs, ql), (ks, kl), (vs, vl))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        saved: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &AttentionBackward {
                spec: self.spec.clone(),
                saved: saved.contiguous()?,
                grad: grad.contiguous()?,
            },
        )?;
        let (nq, nk) = (q.elem_count(), k.elem_count());
        let dq = packed.narrow(0, 0, nq)?.reshape(q.shape())?;
        let dk = packed.narrow(0, nq, nk)?.reshape(k.shape())?;
        let dv = packed.narrow(0, nq + nk, nk)?.reshape(v.shape())?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

impl CustomOp3 for AttentionBackward {
    fn name(&self) -> &'static str {
        "attention_backward"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let g = &self.spec.host_geometry()?;
        let qkv = inputs((qs, ql), (ks, kl), (vs, vl), name)?;
        let out = with_cpu_storage(&self.saved, name, |saved, saved_offset| {
            with_cpu_storage(&self.grad, name, |grad, grad_offset| {
                let d_o = Input {
                    storage: grad,
                    offset: grad_offset,
                };
                let saved_len = g.q_rows() * (g.head_dim + 1);
                Ok(match qs {
                    CpuStorage::F32(_) => {
                        let o_lse = &saved.as_slice::<f32>()?[saved_offset..][..saved_len];
                        CpuStorage::F32(backward::<f32>(g, qkv, o_lse, d_o)?)
                    }
                    CpuStorage::F64(_) => {
                        let o_lse = &saved.as_slice::<f64>()?[saved_offset..][..saved_len];
                        CpuStorage::F64(backward::<f64>(g, qkv, o_lse, d_o)?)
                    }
                    other => return Err(unsupported_dtype(name, other)),
                })
            })
        })?;
        Ok((
            out,
            Shape::from(ql.shape().elem_count() + 2 * kl.shape().elem_count()),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::attention::backward(
            self.name(),
            &self.spec,
            (&self.saved, &self.grad),
            (qs, ql),
            (ks, kl),
            (vs, vl),
        )
    }
}
