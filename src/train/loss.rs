//! Token-level losses from hidden states and the output projection, through the fused selective
//! log-softmax (and, for the SFT loss on the CPU, `linear_cross_entropy`): the logits exist a
//! bounded chunk at a time, never as the whole `N × V` once that exceeds the chunk. The projection
//! accumulates and the log-softmax runs in f32 at least (a bf16/f16 model's hidden states and head
//! enter the matmuls as they are, with f32 accumulation; f64 stays f64), so log-probs, entropies and
//! losses are never half precision: bf16's 8-bit mantissa would round a log-prob of −8 by up to
//! 0.03, which is a 3% error in a GRPO probability ratio.

use candle_core::{DType, Tensor};

use crate::model::Result;
use crate::ops::{
    linear_cross_entropy, selective_log_softmax_f32, SelectiveLogSoftmax,
    DEFAULT_LOGITS_CHUNK_ELEMENTS, DEFAULT_VOCAB_CHUNK, IGNORE_TARGET,
};

/// `log p(ids[t + 1])` at every position `t < T - 1`, `[B, T - 1]` (f32 for half-precision models),
/// for hidden states `[B, T, d]`.
/// Targets where `target_mask` `[B, T]` is 0 are skipped (log-prob 0, no gradient); differentiable
/// with respect to `hidden` and `lm_head`.
pub fn next_token_log_probs(
    hidden: &Tensor,
    lm_head: &Tensor,
    ids: &Tensor,
    target_mask: &Tensor,
) -> Result<Tensor> {
    Ok(next_token_log_probs_and_entropy(hidden, lm_head, ids, target_mask, 1.0)?.logp)
}

/// [`next_token_log_probs`] of the distribution at `temperature` — `log_softmax(logits / T)`, the
/// distribution a sampler at temperature `T` draws from, as TRL's GRPO computes its ratios and KL —
/// together with the entropy of each such distribution, `[B, T - 1]`. The head is divided by `T`
/// in f32 (at least) before the fused selective log-softmax, which equals dividing the logits.
pub fn next_token_log_probs_and_entropy(
    hidden: &Tensor,
    lm_head: &Tensor,
    ids: &Tensor,
    target_mask: &Tensor,
    temperature: f64,
) -> Result<SelectiveLogSoftmax> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(crate::model::ModelError::Invalid(format!(
            "log-probs at temperature {temperature}: the temperature must be positive and finite"
        )));
    }
    let t = hidden.dims3()?.1;
    // At temperature 1 half-precision inputs go in as they are: the op multiplies them with f32
    // accumulation and returns f32, so widening them first would change nothing but the speed
    // (f32 matmuls instead of the GPU's tensor cores). Dividing the head by a temperature is done
    // in f32.
    let inputs = hidden.narrow(1, 0, t - 1)?;
    let (inputs, head) = if temperature == 1.0 {
        (inputs, lm_head.clone())
    } else {
        (
            at_least_f32(&inputs)?,
            (at_least_f32(lm_head)? / temperature)?,
        )
    };
    Ok(selective_log_softmax_f32(
        &inputs,
        &head,
        &next_token_targets(ids, target_mask)?,
        DEFAULT_VOCAB_CHUNK,
    )?)
}

/// `ids[t + 1]` for every position `t < T - 1`, `[B, T - 1]`, with [`IGNORE_TARGET`] where
/// `target_mask[t + 1]` is 0.
fn next_token_targets(ids: &Tensor, target_mask: &Tensor) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let targets = ids.narrow(1, 1, t - 1)?;
    let keep = target_mask.narrow(1, 1, t - 1)?.ne(0.0)?;
    let ignored = Tensor::full(IGNORE_TARGET, (b, t - 1), ids.device())?;
    Ok(keep.where_cond(&targets.contiguous()?, &ignored)?)
}

/// Mean negative log-likelihood of the next token (an f32 scalar, f64 for an f64 model) over
/// positions where `loss_mask` `[B, T]` is non-zero (weighted by it). `hidden` is `[B, T, d]` for
/// ids `[B, T]`: position `t` predicts `t + 1`. On the CPU the loss's forward also computes its
/// gradients ([`linear_cross_entropy`]).
pub fn next_token_loss(
    hidden: &Tensor,
    lm_head: &Tensor,
    ids: &Tensor,
    loss_mask: &Tensor,
) -> Result<Tensor> {
    let t = hidden.dim(1)?;
    let weights = loss_mask.narrow(1, 1, t - 1)?.to_dtype(DType::F64)?;
    let count = weights.sum_all()?.to_scalar::<f64>()?.max(1.0);
    Ok(linear_cross_entropy(
        &hidden.narrow(1, 0, t - 1)?,
        lm_head,
        &next_token_targets(ids, loss_mask)?,
        &(weights / count)?,
        DEFAULT_LOGITS_CHUNK_ELEMENTS,
    )?)
}

/// `t` widened to f32 when it is f16 or bf16 (a differentiable cast), otherwise `t` itself.
fn at_least_f32(t: &Tensor) -> Result<Tensor> {
    Ok(match t.dtype() {
        DType::F16 | DType::BF16 => t.to_dtype(DType::F32)?,
        _ => t.clone(),
    })
}
