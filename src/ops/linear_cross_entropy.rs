//! The supervised fine-tuning loss head as one CPU op whose forward also computes the gradients:
//! `−Σₙ wₙ · log softmax(h Wᵀ)[n, targetₙ]` for hidden states `h [N, d]` and the output
//! projection `W [V, d]`.
//!
//! [`selective_log_softmax`](fn@super::selective_log_softmax) never holds the `N × V` logits: its
//! forward streams them once for the log-sum-exp and its backward streams them again, so a step
//! multiplies `N × V × d` four times (logits, recomputed logits, the hidden states' gradient, the
//! head's gradient). A loss is the last node of the graph, and its weights `wₙ` are known in the
//! forward, so this op takes `R` rows at a time, holds their logits for the whole vocabulary
//! (at most `logits_chunk_elements` of them), turns them into `wₙ · (softmax − onehot)` in place
//! and multiplies that into both gradients at once: three `N × V × d` products, and the backward
//! only scales the kept gradients by the loss's upstream gradient (1 for a loss that is
//! backpropagated directly). The price is the head's gradient, `V × d`, held from the forward to
//! the backward (the backward would allocate it anyway) and read and written once per row chunk.

use super::cpu::{
    contiguous_start, cpu_float_operands, cpu_tensor, gemm, gemm_accumulate, min_rows_per_task,
    unsupported_dtype, MatView, Real,
};
use super::selective_log_softmax::{
    check_targets, selective_log_softmax_f32, DEFAULT_VOCAB_CHUNK, IGNORE_TARGET,
};
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

const OP_NAME: &str = "linear_cross_entropy";

/// Default bound on the logits a row chunk holds at once: 2²⁶ elements (256 MiB in f32), which is
/// 441 rows of Qwen2.5's 151,936-token vocabulary. Fewer rows would read and write the head's
/// gradient more often; the bound keeps the buffer well under the step's other memory.
pub const DEFAULT_LOGITS_CHUNK_ELEMENTS: usize = 1 << 26;

/// `−Σₙ weights[n] · log softmax(hidden · lm_headᵀ)[n, targets[n]]`, a scalar of `hidden`'s
/// dtype (f32 for half-precision inputs), differentiable in `hidden` and `lm_head`.
///
/// Shapes: `hidden [.., d]`, `lm_head [V, d]`, `targets [..]` (u32, the leading dims of
/// `hidden`; [`IGNORE_TARGET`] positions contribute nothing), `weights [..]` (any float dtype,
/// the same shape; read on the host). The mean loss over the counted targets is `weights = mask /
/// count`.
///
/// When the loss needs gradients and all operands are f32 or f64 on the CPU, one op computes the
/// loss and both gradients in its forward, `logits_chunk_elements / V` rows at a time (see the
/// module docs); otherwise (other devices and dtypes, or nothing to differentiate) the loss is
/// the weighted sum of [`selective_log_softmax_f32`]'s log-probs.
pub fn linear_cross_entropy(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    logits_chunk_elements: usize,
) -> Result<Tensor> {
    let (vocab, d) = match lm_head.dims() {
        &[v, d] => (v, d),
        dims => bail!("{OP_NAME}: lm_head must be [V, d], got {dims:?}"),
    };
    let hidden_dims = hidden.dims();
    let leading = &hidden_dims[..hidden_dims.len().saturating_sub(1)];
    if hidden_dims.last() != Some(&d) || targets.dims() != leading || weights.dims() != leading {
        bail!(
            "{OP_NAME}: expected hidden [.., d], lm_head [V, d], targets and weights [..]; got \
             hidden {hidden_dims:?}, lm_head {:?}, targets {:?}, weights {:?}",
            lm_head.dims(),
            targets.dims(),
            weights.dims()
        );
    }
    let needs_gradients = hidden.track_op() || lm_head.track_op();
    if !needs_gradients || !cpu_float_operands(&[hidden, lm_head]) {
        let logp = selective_log_softmax_f32(hidden, lm_head, targets, DEFAULT_VOCAB_CHUNK)?.logp;
        let weights = weights.to_dtype(logp.dtype())?;
        return (logp * weights)?.sum_all()?.neg();
    }
    let targets = targets.flatten_all()?.to_vec1::<u32>()?;
    check_targets(OP_NAME, &targets, vocab)?;
    let weights = weights
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let rows = targets.len();
    let op = LinearCrossEntropy {
        targets,
        weights,
        rows_per_chunk: (logits_chunk_elements / vocab.max(1)).max(1),
        saved: Mutex::new(None),
    };
    hidden
        .reshape((rows, d))?
        .contiguous()?
        .apply_op2(&lm_head.contiguous()?, op)
}

/// The CPU op: inputs `(hidden [N, d], lm_head [V, d])`, output the scalar loss; the forward keeps
/// the loss's gradients for the backward.
struct LinearCrossEntropy {
    targets: Vec<u32>,
    weights: Vec<f64>,
    rows_per_chunk: usize,
    saved: Mutex<Option<Gradients>>,
}

/// The loss's gradients with respect to the hidden states `[N, d]` and the head `[V, d]`.
struct Gradients {
    hidden: CpuStorage,
    lm_head: CpuStorage,
}

impl LinearCrossEntropy {
    /// The loss, with the gradients saved for the backward.
    fn forward<T: Real>(
        &self,
        (hs, hl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
    ) -> Result<T> {
        let (n, d) = hl.shape().dims2()?;
        let (vocab, _) = wl.shape().dims2()?;
        let hidden_at = contiguous_start(hl, OP_NAME)?;
        let lm_head_at = contiguous_start(wl, OP_NAME)?;
        let mut grad_hidden = vec![T::of(0.0); n * d];
        let mut grad_lm_head: Vec<T> = Vec::new();
        let mut loss = 0f64;
        for (r0, r) in super::spans(n, self.rows_per_chunk) {
            let rows = MatView::row_major(hs, hidden_at + r0 * d, d);
            let mut scores: Vec<T> =
                gemm(&rows, &MatView::transposed(ws, lm_head_at, d), r, vocab, d)?;
            loss += scores
                .par_chunks_mut(vocab)
                .zip(&self.targets[r0..r0 + r])
                .zip(&self.weights[r0..r0 + r])
                .with_min_len(min_rows_per_task(vocab))
                .map(|((row, &target), &weight)| loss_row_and_gradient(row, target, weight))
                .sum::<f64>();
            let scores = T::to_cpu_storage_owned(scores);
            let score_grads = MatView::row_major(&scores, 0, vocab);
            gemm_accumulate(
                &mut grad_hidden[r0 * d..(r0 + r) * d],
                &score_grads,
                &MatView::row_major(ws, lm_head_at, d),
                r,
                d,
                vocab,
            )?;
            let score_grads_t = MatView::transposed(&scores, 0, vocab);
            // The first chunk writes the head's gradient, the others add into it.
            if r0 == 0 {
                grad_lm_head = gemm(&score_grads_t, &rows, vocab, d, r)?;
            } else {
                gemm_accumulate(&mut grad_lm_head, &score_grads_t, &rows, vocab, d, r)?;
            }
        }
        if n == 0 {
            grad_lm_head = vec![T::of(0.0); vocab * d];
        }
        *self.saved.lock().expect("the saved gradients' lock") = Some(Gradients {
            hidden: T::to_cpu_storage_owned(grad_hidden),
            lm_head: T::to_cpu_storage_owned(grad_lm_head),
        });
        Ok(T::from_f64(loss))
    }
}

/// One row's loss `−w · log softmax(z)[target]`, turning the logits `z` in place into the loss's
/// gradient with respect to them, `w · (softmax(z) − onehot(target))` (zeros for an ignored
/// target or a zero weight).
fn loss_row_and_gradient<T: Real>(z: &mut [T], target: u32, weight: f64) -> f64 {
    if target == IGNORE_TARGET || weight == 0.0 {
        z.fill(T::of(0.0));
        return 0.0;
    }
    let t = target as usize;
    let target_logit = z[t];
    let max = z.iter().fold(T::NEG_INFINITY, |m, &v| m.maximum(v));
    z.iter_mut().for_each(|v| *v -= max);
    T::exp_in_place(z);
    let sum = z.iter().fold(T::of(0.0), |s, &e| s + e);
    let log_prob = (target_logit - max - sum.ln()).to_f64();
    let scale = T::of(weight) / sum;
    z.iter_mut().for_each(|e| *e *= scale);
    z[t] -= T::of(weight);
    -weight * log_prob
}

impl CustomOp2 for LinearCrossEntropy {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        hs: &CpuStorage,
        hl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let loss = match hs {
            CpuStorage::F32(_) => CpuStorage::F32(vec![self.forward::<f32>((hs, hl), (ws, wl))?]),
            CpuStorage::F64(_) => CpuStorage::F64(vec![self.forward::<f64>((hs, hl), (ws, wl))?]),
            other => return Err(unsupported_dtype(OP_NAME, other)),
        };
        Ok((loss, Shape::from(())))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        lm_head: &Tensor,
        _loss: &Tensor,
        grad_loss: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(saved) = self.saved.lock().expect("the saved gradients' lock").take() else {
            bail!("{OP_NAME}: the forward's gradients were already used by an earlier backward");
        };
        let scale = grad_loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let scaled = |storage: CpuStorage, shape: &Shape| -> Result<Tensor> {
            let gradient = cpu_tensor(storage, shape)?;
            if scale == 1.0 {
                Ok(gradient)
            } else {
                gradient.affine(scale, 0.0)
            }
        };
        Ok((
            Some(scaled(saved.hidden, hidden.shape())?),
            Some(scaled(saved.lm_head, lm_head.shape())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpu::{assert_gradients_match, max_relative_error};
    use super::*;
    use candle_core::{Device, Var};

    /// The loss and the gradients of hidden and head equal those of the weighted sum of
    /// `selective_log_softmax`'s log-probs, with ignored targets, fractional and zero weights and
    /// an upstream gradient other than 1, in one row chunk and in several (the last one short),
    /// f32 and f64.
    #[test]
    fn matches_the_selective_log_softmax_composition() -> Result<()> {
        let dev = Device::Cpu;
        let (batch, t, d, vocab) = (3, 13, 16, 53);
        let targets: Vec<u32> = (0..batch * t)
            .map(|i| match i % 7 {
                3 => IGNORE_TARGET,
                _ => ((i * 31) % vocab) as u32,
            })
            .collect();
        let weights: Vec<f32> = (0..batch * t)
            .map(|i| {
                if i % 11 == 5 {
                    0.0
                } else {
                    0.25 + (i % 4) as f32 * 0.5
                }
            })
            .collect();
        let targets = Tensor::from_vec(targets, (batch, t), &dev)?;
        let weights = Tensor::from_vec(weights, (batch, t), &dev)?;
        for dtype in [DType::F32, DType::F64] {
            for rows_per_chunk in [10, batch * t] {
                let var = |dims: &[usize]| -> Result<Var> {
                    Var::from_tensor(&Tensor::randn(0f32, 2.0, dims, &dev)?.to_dtype(dtype)?)
                };
                let hidden = var(&[batch, t, d])?;
                let lm_head = var(&[vocab, d])?;
                let ours = linear_cross_entropy(
                    &hidden,
                    &lm_head,
                    &targets,
                    &weights,
                    rows_per_chunk * vocab,
                )?;
                let logp = selective_log_softmax_f32(&hidden, &lm_head, &targets, 7)?.logp;
                let reference = (logp * weights.to_dtype(dtype)?)?.sum_all()?.neg()?;
                let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                let case = format!("{dtype:?}, {rows_per_chunk} rows per chunk");
                let error = max_relative_error(&ours, &reference)?;
                assert!(error < tolerance, "{case}: loss rel {error}");
                let ours = ours.affine(2.5, 0.0)?.backward()?;
                let reference = reference.affine(2.5, 0.0)?.backward()?;
                let vars = [("hidden", &hidden), ("lm_head", &lm_head)];
                assert_gradients_match(&ours, &reference, &vars, tolerance, &case)?;
            }
        }
        Ok(())
    }

    /// Without anything to differentiate the loss is the same number, computed without the
    /// gradients.
    #[test]
    fn a_loss_without_gradients_is_the_same_loss() -> Result<()> {
        let dev = Device::Cpu;
        let hidden = Var::randn(0f32, 1.0, (5, 8), &dev)?;
        let lm_head = Var::randn(0f32, 1.0, (11, 8), &dev)?;
        let targets = Tensor::new(&[1u32, 4, IGNORE_TARGET, 10, 0], &dev)?;
        let weights = Tensor::new(&[0.5f32, 1.0, 1.0, 2.0, 0.1], &dev)?;
        let tracked = linear_cross_entropy(&hidden, &lm_head, &targets, &weights, 22)?;
        let detached = linear_cross_entropy(
            &hidden.as_tensor().detach(),
            &lm_head.as_tensor().detach(),
            &targets,
            &weights,
            22,
        )?;
        let error = max_relative_error(&tracked, &detached)?;
        assert!(error < 1e-6, "rel {error}");
        Ok(())
    }

    #[test]
    fn rejects_a_target_outside_the_vocabulary() -> Result<()> {
        let dev = Device::Cpu;
        let hidden = Var::zeros((2, 4), DType::F32, &dev)?;
        let lm_head = Tensor::zeros((6, 4), DType::F32, &dev)?;
        let targets = Tensor::new(&[1u32, 6], &dev)?;
        let weights = Tensor::ones(2, DType::F32, &dev)?;
        let error = linear_cross_entropy(&hidden, &lm_head, &targets, &weights, 100)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("target 6 out of range for vocab 6"),
            "{error}"
        );
        Ok(())
    }
}
