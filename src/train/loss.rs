//! Token-level losses computed from hidden states and the output projection, chunked over rows so
//! the full N×V logits are never materialised at once in the forward pass.

use candle_core::{DType, Tensor, D};

use crate::model::Result;

/// Rows of hidden states turned into logits at a time.
pub const DEFAULT_ROW_CHUNK: usize = 256;

/// `log p(target)` per row: `hidden` `[N, d]`, `lm_head` `[V, d]`, `targets` `[N]` (u32) → `[N]`.
/// Differentiable with respect to `hidden` and `lm_head`.
pub fn token_log_probs(
    hidden: &Tensor,
    lm_head: &Tensor,
    targets: &Tensor,
    row_chunk: usize,
) -> Result<Tensor> {
    let n = hidden.dim(0)?;
    let chunk = row_chunk.max(1);
    let mut parts = Vec::with_capacity(n.div_ceil(chunk));
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let logits = hidden.narrow(0, start, len)?.matmul(&lm_head.t()?)?;
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let shifted = logits.broadcast_sub(&max)?;
        let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let target = targets.narrow(0, start, len)?.unsqueeze(1)?;
        let picked = shifted.gather(&target, 1)?;
        parts.push((picked - log_z)?.squeeze(1)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Mean negative log-likelihood of the next token over positions where `loss_mask` `[B, T]` is 1.
/// `hidden` is `[B, T, d]` for ids `[B, T]`: position `t` predicts id `t + 1`.
pub fn next_token_loss(
    hidden: &Tensor,
    lm_head: &Tensor,
    ids: &Tensor,
    loss_mask: &Tensor,
) -> Result<Tensor> {
    let (b, t, d) = hidden.dims3()?;
    let inputs = hidden.narrow(1, 0, t - 1)?.reshape((b * (t - 1), d))?;
    let targets = ids.narrow(1, 1, t - 1)?.flatten_all()?;
    let weights = loss_mask
        .narrow(1, 1, t - 1)?
        .flatten_all()?
        .to_dtype(hidden.dtype())?;
    let log_probs = token_log_probs(&inputs, lm_head, &targets, DEFAULT_ROW_CHUNK)?;
    let count = weights
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?
        .max(1.0);
    Ok(((log_probs * weights)?.sum_all()?.neg()? / count)?)
}
