//! Launches of `kernels/selective_log_softmax.cu` around cuBLAS gemms: per vocabulary chunk,
//! the logits `[N, chunk]` (f32) are one gemm; the forward folds them into per-row running
//! statistics, the backward turns them into the logits' gradient (in the input dtype) and two
//! more gemms accumulate the gradients of hidden (f32, converted at the end) and lm_head.
//! Extra memory: the f32 logits and the gradient of one chunk, plus an f32 copy of grad hidden.

use super::gemm::{gemm, GemmShape};
use super::{
    alloc, blocks, config, contiguous, launch, ptx_module, storage, stride_blocks, tensor_view,
    to_u32, with_float_type, zeros, Kernel, Module,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::{bail, CudaStorage, Layout, Result, Shape, Tensor};

/// The PTX of `kernels/selective_log_softmax.cu`.
pub(super) const MODULE: Module = ptx_module!("selective_log_softmax");

/// Threads per block; the per-row statistics kernel runs one warp per row.
const THREADS: u32 = 256;

/// `(hidden [N, d], lm_head [V, d], targets [N])` as handed to `cuda_fwd`.
type Inputs<'a> = [(&'a CudaStorage, &'a Layout); 3];

/// Row-major `logits [n, c] = hidden [n, d] · lm_head[c0..c0 + c]ᵀ` (column-major:
/// `logitsᵀ = W_c · hiddenᵀ`).
fn logits_shape(n: usize, d: usize, c: usize) -> GemmShape {
    GemmShape {
        trans_a: true,
        trans_b: false,
        m: c,
        n,
        k: d,
        lda: d,
        ldb: d,
        ldc: c,
        beta: 0.0,
    }
}

/// Forward: packed f32 `[logp (N), entropy (N), lse (N)]`. Fails, like the CPU op, when a
/// target is neither ignored nor below `vocab` (checked on the device, read back once).
pub(in crate::ops) fn forward(
    op: &str,
    vocab: usize,
    vocab_chunk: usize,
    [(hs, hl), (ws, wl), (ts, tl)]: Inputs<'_>,
) -> Result<(CudaStorage, Shape)> {
    let (n, d) = hl.shape().dims2()?;
    with_float_type!(hs.dtype(), op, T => {
        let dev = hs.device();
        let hidden = contiguous::<T>(hs, hl, op)?;
        let lm_head = contiguous::<T>(ws, wl, op)?;
        let targets = contiguous::<u32>(ts, tl, op)?;
        let mut out = alloc::<f32>(dev, 3 * n)?;
        if n == 0 {
            return Ok((storage(dev, out), Shape::from(0)));
        }
        let (n32, vocab32) = (to_u32(n, op, "rows")?, to_u32(vocab, op, "vocab")?);
        let row_grid = (blocks(n, THREADS as usize, op)?, 1);
        let mut first_bad = dev.clone_htod(&[u64::MAX])?;
        {
            let kernel = Kernel::load(dev, &MODULE, "sls_check_targets")?;
            let mut args = kernel.builder();
            args.arg(&targets).arg(&n32).arg(&vocab32).arg(&mut first_bad);
            launch(args, config(row_grid, THREADS, 0))?;
        }
        let mut stats = alloc::<f32>(dev, 4 * n)?;
        {
            let kernel = Kernel::load(dev, &MODULE, "sls_init_stats")?;
            let mut args = kernel.builder();
            args.arg(&mut stats).arg(&n32);
            launch(args, config(row_grid, THREADS, 0))?;
        }
        let chunk = vocab_chunk.min(vocab).max(1);
        let mut logits = alloc::<f32>(dev, n * chunk)?;
        let update = Kernel::load(dev, &MODULE, "sls_update_stats")?;
        for (c0, c) in crate::ops::spans(vocab, chunk) {
            let w_chunk = lm_head.slice(c0 * d..(c0 + c) * d);
            gemm(dev, op, &logits_shape(n, d, c), &w_chunk, &hidden, &mut logits.slice_mut(..n * c))?;
            let (c32, c0_32) = (c as u32, c0 as u32);
            let mut args = update.builder();
            args.arg(&logits).arg(&targets).arg(&mut stats).arg(&n32).arg(&c32).arg(&c0_32);
            launch(args, config((blocks(n, (THREADS / 32) as usize, op)?, 1), THREADS, 0))?;
        }
        {
            let kernel = Kernel::load(dev, &MODULE, "sls_finalize")?;
            let mut args = kernel.builder();
            args.arg(&stats).arg(&targets).arg(&mut out).arg(&n32);
            launch(args, config(row_grid, THREADS, 0))?;
        }
        let bad = dev.clone_dtoh(&first_bad)?[0];
        if bad != u64::MAX {
            bail!("{op}: target {} out of range for vocab {vocab}", bad as u32);
        }
        Ok((storage(dev, out), Shape::from(3 * n)))
    })
}

/// Backward: packed `[grad_hidden (N·d), grad_lm_head (V·d)]` in the dtype of hidden, from the
/// forward's packed output `saved` and its gradient `grad` (both f32).
pub(in crate::ops) fn backward(
    op: &str,
    vocab: usize,
    vocab_chunk: usize,
    (saved, grad): (&Tensor, &Tensor),
    [(hs, hl), (ws, wl), (ts, tl)]: Inputs<'_>,
) -> Result<(CudaStorage, Shape)> {
    let (n, d) = hl.shape().dims2()?;
    let out_len = n * d + vocab * d;
    with_float_type!(hs.dtype(), op, T => {
        let dev = hs.device();
        let hidden = contiguous::<T>(hs, hl, op)?;
        let lm_head = contiguous::<T>(ws, wl, op)?;
        let targets = contiguous::<u32>(ts, tl, op)?;
        if n == 0 || d == 0 {
            return Ok((storage(dev, zeros::<T>(dev, out_len)?), Shape::from(out_len)));
        }
        let (saved_guard, saved_layout) = saved.storage_and_layout();
        let saved = tensor_view::<f32>(&saved_guard, saved_layout, op, "the saved output")?;
        let (grad_guard, grad_layout) = grad.storage_and_layout();
        let grad = tensor_view::<f32>(&grad_guard, grad_layout, op, "the output gradient")?;
        if saved.len() < 3 * n || grad.len() < 2 * n {
            bail!("{op}: saved output or gradient shorter than 3 × {n}");
        }
        let n32 = to_u32(n, op, "rows")?;
        let chunk = vocab_chunk.min(vocab).max(1);
        let mut logits = alloc::<f32>(dev, n * chunk)?;
        let mut d_logits = alloc::<T>(dev, n * chunk)?;
        let mut grad_hidden = zeros::<f32>(dev, n * d)?;
        let mut out = alloc::<T>(dev, out_len)?;
        let grad_logits = Kernel::load_for::<T>(dev, &MODULE, "sls_grad_logits")?;
        for (c0, c) in crate::ops::spans(vocab, chunk) {
            let w_chunk = lm_head.slice(c0 * d..(c0 + c) * d);
            gemm(dev, op, &logits_shape(n, d, c), &w_chunk, &hidden, &mut logits.slice_mut(..n * c))?;
            let (c32, c0_32) = (c as u32, c0 as u32);
            let mut args = grad_logits.builder();
            args.arg(&logits).arg(&targets).arg(&saved).arg(&grad).arg(&mut d_logits);
            args.arg(&n32).arg(&c32).arg(&c0_32);
            launch(args, config((stride_blocks(n * c, THREADS as usize), 1), THREADS, 0))?;
            let dz = d_logits.slice(..n * c);
            // grad_hidden [n, d] += dz [n, c] · W_c [c, d]  (column-major: W_cᵀ-view · dzᵀ-view)
            let accumulate = GemmShape { trans_a: false, trans_b: false, m: d, n, k: c, lda: d, ldb: c, ldc: d, beta: 1.0 };
            gemm(dev, op, &accumulate, &w_chunk, &dz, &mut grad_hidden.slice_mut(..))?;
            // grad_lm_head[c0..c0 + c] [c, d] = dzᵀ [c, n] · hidden [n, d]
            let weight = GemmShape { trans_a: false, trans_b: true, m: d, n: c, k: n, lda: d, ldb: c, ldc: d, beta: 0.0 };
            let rows = n * d + c0 * d..n * d + (c0 + c) * d;
            gemm(dev, op, &weight, &hidden, &dz, &mut out.slice_mut(rows))?;
        }
        {
            let kernel = Kernel::load_for::<T>(dev, &MODULE, "sls_cast")?;
            let len = (n * d) as u64;
            let mut head = out.slice_mut(..n * d);
            let mut args = kernel.builder();
            args.arg(&grad_hidden).arg(&mut head).arg(&len);
            launch(args, config((stride_blocks(n * d, THREADS as usize), 1), THREADS, 0))?;
        }
        Ok((storage(dev, out), Shape::from(out_len)))
    })
}
