//! Selective log-softmax fused with the output projection: `log softmax(h Wᵀ)[n, target_n]`
//! (and the per-token entropy) computed by streaming over vocabulary chunks, so the `N × V`
//! logits never exist in full. The backward recomputes each chunk's logits from the saved
//! log-sum-exp and accumulates the gradients of the hidden states and of the projection.

use super::cpu::{
    contiguous_slice, contiguous_start, gemm, gemm_accumulate, unsupported_dtype, widen_half,
    MatView, Real,
};
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP_NAME: &str = "selective_log_softmax";

/// Target id meaning "ignore this position": its log-prob and entropy are 0 and it gets no
/// gradient.
pub const IGNORE_TARGET: u32 = u32::MAX;

/// Default number of vocabulary rows processed per chunk.
pub const DEFAULT_VOCAB_CHUNK: usize = 4096;

/// Outputs of [`selective_log_softmax`], both shaped like the targets.
#[derive(Clone, Debug)]
pub struct SelectiveLogSoftmax {
    /// `log softmax(h Wᵀ)[target]`, 0 at ignored positions. Differentiable.
    pub logp: Tensor,
    /// Entropy of `softmax(h Wᵀ)` per position, 0 at ignored positions. Differentiable.
    pub entropy: Tensor,
}

/// Log-probability of each target under `softmax(hidden · lm_headᵀ)`, streamed over chunks of
/// `vocab_chunk` vocabulary rows.
///
/// Shapes: `hidden [.., d]`, `lm_head [V, d]`, `targets [..]` (u32, same leading dims as
/// `hidden`; [`IGNORE_TARGET`] marks ignored positions — to apply a separate boolean mask,
/// set masked targets to [`IGNORE_TARGET`] first). Gradients flow to `hidden` and `lm_head`
/// through both outputs. Peak extra memory is about two `N × vocab_chunk` buffers plus the
/// gradients. CPU: f32/f64 native, bf16/f16 computed in f32. CUDA: f32, bf16 and f16 native,
/// the logits of each chunk in f32 (cuBLAS with f32 output); a target out of range is detected
/// on the device and read back once per call.
pub fn selective_log_softmax(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    vocab_chunk: usize,
) -> Result<SelectiveLogSoftmax> {
    let out = selective_log_softmax_f32(hidden, lm_head, targets, vocab_chunk)?;
    Ok(SelectiveLogSoftmax {
        logp: out.logp.to_dtype(hidden.dtype())?,
        entropy: out.entropy.to_dtype(hidden.dtype())?,
    })
}

/// [`selective_log_softmax`] with the log-probs and entropies in f32 whatever the inputs' dtype
/// (f64 for f64 inputs): half-precision hidden states and head go into the matmuls as they are
/// (on CUDA, bf16/f16 operands with f32 accumulation, the tensor cores' path), and nothing of the
/// result is rounded to half precision.
pub fn selective_log_softmax_f32(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    vocab_chunk: usize,
) -> Result<SelectiveLogSoftmax> {
    let hidden_dims = hidden.dims();
    let d = match hidden_dims.last() {
        Some(&d) => d,
        None => bail!("{OP_NAME}: hidden must be [.., d], got a scalar"),
    };
    let (vocab, w_d) = match lm_head.dims() {
        &[v, w_d] => (v, w_d),
        dims => bail!("{OP_NAME}: lm_head must be [V, d], got {dims:?}"),
    };
    if w_d != d || targets.dims() != &hidden_dims[..hidden_dims.len() - 1] {
        bail!(
            "{OP_NAME}: expected hidden [.., d], lm_head [V, d], targets [..]; got hidden {hidden_dims:?}, lm_head {:?}, targets {:?}",
            lm_head.dims(),
            targets.dims()
        );
    }
    if targets.dtype() != DType::U32 {
        bail!("{OP_NAME}: targets must be u32, got {:?}", targets.dtype());
    }
    if hidden.dtype() != lm_head.dtype() {
        bail!(
            "{OP_NAME}: hidden ({:?}) and lm_head ({:?}) must share a dtype",
            hidden.dtype(),
            lm_head.dtype()
        );
    }
    if vocab_chunk == 0 {
        bail!("{OP_NAME}: vocab_chunk must be at least 1");
    }
    let n = targets.elem_count();
    let (h32, _) = widen_half(hidden)?;
    let (w32, _) = widen_half(lm_head)?;
    let packed = h32.reshape((n, d))?.contiguous()?.apply_op3(
        &w32.contiguous()?,
        &targets.flatten_all()?.contiguous()?,
        SelectiveLogSoftmaxOp { vocab, vocab_chunk },
    )?;
    let logp = packed.narrow(0, 0, n)?.reshape(targets.shape())?;
    let entropy = packed.narrow(0, n, n)?.reshape(targets.shape())?;
    // The packed output is f32 (f64 for f64 inputs) on every device.
    Ok(SelectiveLogSoftmax { logp, entropy })
}

/// Supervised fine-tuning loss: mean of `-logp` over the positions whose target is not
/// [`IGNORE_TARGET`] (0 when every position is ignored). Scalar, differentiable. The count of
/// non-ignored targets is read on the host.
pub fn sft_loss(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    vocab_chunk: usize,
) -> Result<Tensor> {
    let out = selective_log_softmax(hidden, lm_head, targets, vocab_chunk)?;
    let counted = targets
        .flatten_all()?
        .to_vec1::<u32>()?
        .iter()
        .filter(|&&t| t != IGNORE_TARGET)
        .count();
    out.logp
        .sum_all()?
        .affine(-1.0 / counted.max(1) as f64, 0.0)
}

/// An error naming `op` for the first target of `targets` that is neither [`IGNORE_TARGET`] nor
/// below `vocab`.
pub(super) fn check_targets(op: &str, targets: &[u32], vocab: usize) -> Result<()> {
    match targets
        .iter()
        .find(|&&t| t != IGNORE_TARGET && t as usize >= vocab)
    {
        Some(&bad) => bail!("{op}: target {bad} out of range for vocab {vocab}"),
        None => Ok(()),
    }
}

/// Forward op: inputs `(hidden [N, d], lm_head [V, d], targets [N])`; output packs
/// `[logp (N), entropy (N), log-sum-exp (N)]` in one 1-D buffer.
struct SelectiveLogSoftmaxOp {
    vocab: usize,
    vocab_chunk: usize,
}

/// Backward op: inputs `(hidden, lm_head, targets)`, plus the forward's packed output and its
/// packed gradient; output packs `[grad_hidden (N·d), grad_lm_head (V·d)]`.
struct SelectiveLogSoftmaxBackward {
    vocab: usize,
    vocab_chunk: usize,
    saved: Tensor,
    grad: Tensor,
}

/// Per-row running statistics of the streamed softmax, relative to the running max.
#[derive(Clone, Copy)]
struct RowStats<T> {
    max: T,
    /// Σ exp(z - max)
    sum: T,
    /// Σ exp(z - max) · (z - max)
    weighted: T,
    target_logit: T,
}

/// Shape information shared by the forward and backward kernels.
struct Problem<'a> {
    hidden: MatView<'a>,
    lm_head: &'a CpuStorage,
    lm_head_offset: usize,
    targets: &'a [u32],
    n: usize,
    d: usize,
    vocab: usize,
    vocab_chunk: usize,
}

impl Problem<'_> {
    /// `[d, c]` view of the transposed lm_head rows `c0..c0 + c`.
    fn lm_head_chunk_t(&self, c0: usize) -> MatView<'_> {
        MatView::transposed(self.lm_head, self.lm_head_offset + c0 * self.d, self.d)
    }

    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> {
        super::spans(self.vocab, self.vocab_chunk)
    }
}

fn forward<T: Real>(p: &Problem<'_>) -> Result<Vec<T>> {
    check_targets(OP_NAME, p.targets, p.vocab)?;
    let n = p.n;
    let mut stats = vec![
        RowStats {
            max: T::NEG_INFINITY,
            sum: T::of(0.0),
            weighted: T::of(0.0),
            target_logit: T::of(0.0),
        };
        n
    ];
    for (c0, c) in p.chunks() {
        let logits: Vec<T> = gemm(&p.hidden, &p.lm_head_chunk_t(c0), n, c, p.d)?;
        stats
            .par_iter_mut()
            .zip(logits.par_chunks(c).zip(p.targets.par_iter()))
            .for_each(|(st, (z, &target))| {
                let chunk_max = z.iter().fold(T::NEG_INFINITY, |m, &v| m.maximum(v));
                let new_max = st.max.maximum(chunk_max);
                if st.sum > T::of(0.0) {
                    // Rebase Σ e·(z - m_old) and Σ e onto the new max.
                    let scale = (st.max - new_max).exp();
                    st.weighted = scale * (st.weighted + (st.max - new_max) * st.sum);
                    st.sum *= scale;
                }
                let mut shifted = [T::of(0.0); EXP_BLOCK];
                let mut e = [T::of(0.0); EXP_BLOCK];
                for block in z.chunks(EXP_BLOCK) {
                    let len = block.len();
                    for (s, &zj) in shifted.iter_mut().zip(block) {
                        *s = zj - new_max;
                    }
                    e[..len].copy_from_slice(&shifted[..len]);
                    T::exp_in_place(&mut e[..len]);
                    for (&e, &s) in e[..len].iter().zip(&shifted[..len]) {
                        st.sum += e;
                        st.weighted += e * s;
                    }
                }
                st.max = new_max;
                let t = target as usize;
                if target != IGNORE_TARGET && (c0..c0 + c).contains(&t) {
                    st.target_logit = z[t - c0];
                }
            });
    }
    let mut out = vec![T::of(0.0); 3 * n];
    for (r, (st, &target)) in stats.iter().zip(p.targets).enumerate() {
        let log_sum = st.sum.ln();
        out[2 * n + r] = st.max + log_sum;
        if target != IGNORE_TARGET {
            out[r] = st.target_logit - st.max - log_sum;
            out[n + r] = log_sum - st.weighted / st.sum;
        }
    }
    Ok(out)
}

/// Logits exponentiated at a time (stack buffers of the vectorised `exp`).
const EXP_BLOCK: usize = 256;

fn backward<T: Real>(p: &Problem<'_>, saved: &[T], grad: &[T]) -> Result<Vec<T>> {
    let (n, d) = (p.n, p.d);
    let entropy = &saved[n..2 * n];
    let lse = &saved[2 * n..3 * n];
    let (grad_logp, grad_entropy) = (&grad[..n], &grad[n..2 * n]);
    let mut out = vec![T::of(0.0); n * d + p.vocab * d];
    let (grad_hidden, grad_lm_head) = out.split_at_mut(n * d);
    for (c0, c) in p.chunks() {
        let mut dz: Vec<T> = gemm(&p.hidden, &p.lm_head_chunk_t(c0), n, c, d)?;
        dz.par_chunks_mut(c).enumerate().for_each(|(r, z_row)| {
            let target = p.targets[r];
            if target == IGNORE_TARGET {
                z_row.fill(T::of(0.0));
                return;
            }
            let (g_logp, g_ent, h, lse) = (grad_logp[r], grad_entropy[r], entropy[r], lse[r]);
            let mut prob = [T::of(0.0); EXP_BLOCK];
            for block in z_row.chunks_mut(EXP_BLOCK) {
                let len = block.len();
                for (z, p) in block.iter_mut().zip(prob.iter_mut()) {
                    *z -= lse;
                    *p = *z;
                }
                T::exp_in_place(&mut prob[..len]);
                for (z, &prob) in block.iter_mut().zip(&prob[..len]) {
                    let log_prob = *z;
                    // d logp/dz = onehot - p ; d H/dz = -p (log p + H)
                    *z = -g_logp * prob - g_ent * prob * (log_prob + h);
                }
            }
            let t = target as usize;
            if (c0..c0 + c).contains(&t) {
                z_row[t - c0] += g_logp;
            }
        });
        let dz = T::to_cpu_storage_owned(dz);
        let dz_view = MatView::row_major(&dz, 0, c);
        let lm_head_chunk = MatView::row_major(p.lm_head, p.lm_head_offset + c0 * d, d);
        gemm_accumulate(grad_hidden, &dz_view, &lm_head_chunk, n, d, c)?;
        // The chunk's rows of the head's gradient start at zero: accumulating writes them.
        let dz_t = MatView::transposed(&dz, 0, c);
        gemm_accumulate(
            &mut grad_lm_head[c0 * d..(c0 + c) * d],
            &dz_t,
            &p.hidden,
            c,
            d,
            n,
        )?;
    }
    Ok(out)
}

/// A storage with its layout, as handed to `cpu_fwd`.
type Operand<'a> = (&'a CpuStorage, &'a Layout);

fn problem<'a>(
    (hs, hl): Operand<'a>,
    (ws, wl): Operand<'a>,
    (ts, tl): Operand<'a>,
    vocab: usize,
    vocab_chunk: usize,
) -> Result<Problem<'a>> {
    let (n, d) = hl.shape().dims2()?;
    let h_start = contiguous_start(hl, OP_NAME)?;
    let w_start = contiguous_start(wl, OP_NAME)?;
    Ok(Problem {
        hidden: MatView::row_major(hs, h_start, d),
        lm_head: ws,
        lm_head_offset: w_start,
        targets: contiguous_slice::<u32>(ts, tl, OP_NAME)?,
        n,
        d,
        vocab,
        vocab_chunk,
    })
}

impl CustomOp3 for SelectiveLogSoftmaxOp {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        hs: &CpuStorage,
        hl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = problem((hs, hl), (ws, wl), (ts, tl), self.vocab, self.vocab_chunk)?;
        let out = match hs {
            CpuStorage::F32(_) => CpuStorage::F32(forward::<f32>(&p)?),
            CpuStorage::F64(_) => CpuStorage::F64(forward::<f64>(&p)?),
            other => return Err(unsupported_dtype(OP_NAME, other)),
        };
        Ok((out, Shape::from(3 * p.n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        hs: &candle_core::CudaStorage,
        hl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        ts: &candle_core::CudaStorage,
        tl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let inputs = [(hs, hl), (ws, wl), (ts, tl)];
        super::cuda::selective_log_softmax::forward(OP_NAME, self.vocab, self.vocab_chunk, inputs)
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        lm_head: &Tensor,
        targets: &Tensor,
        saved: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = hidden.contiguous()?.apply_op3_no_bwd(
            &lm_head.contiguous()?,
            &targets.contiguous()?,
            &SelectiveLogSoftmaxBackward {
                vocab: self.vocab,
                vocab_chunk: self.vocab_chunk,
                saved: saved.contiguous()?,
                grad: grad.contiguous()?,
            },
        )?;
        let nd = hidden.elem_count();
        let grad_hidden = packed.narrow(0, 0, nd)?.reshape(hidden.shape())?;
        let grad_lm_head = packed
            .narrow(0, nd, lm_head.elem_count())?
            .reshape(lm_head.shape())?;
        Ok((Some(grad_hidden), Some(grad_lm_head), None))
    }
}

impl CustomOp3 for SelectiveLogSoftmaxBackward {
    fn name(&self) -> &'static str {
        "selective_log_softmax_backward"
    }

    fn cpu_fwd(
        &self,
        hs: &CpuStorage,
        hl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = problem((hs, hl), (ws, wl), (ts, tl), self.vocab, self.vocab_chunk)?;
        let out = match hs {
            CpuStorage::F32(_) => CpuStorage::F32(backward::<f32>(
                &p,
                &self.saved.to_vec1::<f32>()?,
                &self.grad.to_vec1::<f32>()?,
            )?),
            CpuStorage::F64(_) => CpuStorage::F64(backward::<f64>(
                &p,
                &self.saved.to_vec1::<f64>()?,
                &self.grad.to_vec1::<f64>()?,
            )?),
            other => return Err(unsupported_dtype(self.name(), other)),
        };
        Ok((out, Shape::from(p.n * p.d + p.vocab * p.d)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        hs: &candle_core::CudaStorage,
        hl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        ts: &candle_core::CudaStorage,
        tl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::selective_log_softmax::backward(
            self.name(),
            self.vocab,
            self.vocab_chunk,
            (&self.saved, &self.grad),
            [(hs, hl), (ws, wl), (ts, tl)],
        )
    }
}
