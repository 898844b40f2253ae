//! Launches of `kernels/rms_norm.cu`: the forward, and the backward as a row kernel (grad x
//! and each row's inverse RMS) plus a deterministic two-pass column reduction (grad weight).

use super::{
    alloc, blocks, config, contiguous, launch, ptx_module, storage, to_u32, with_float_type, zeros,
    Kernel, Module,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::{CudaStorage, Layout, Result, Shape};

/// The PTX of `kernels/rms_norm.cu`.
pub(super) const MODULE: Module = ptx_module!("rms_norm");

/// Threads per block of the row and column kernels.
const THREADS: u32 = 256;

/// At most this many row chunks in the weight-gradient reduction.
const MAX_CHUNKS: usize = 1024;

/// Forward: `y = x·r·w` for contiguous `x [.., d]`, `w [d]`.
pub(in crate::ops) fn forward(
    op: &str,
    eps: f64,
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    with_float_type!(xs.dtype(), op, T => {
        let dev = xs.device();
        let x = contiguous::<T>(xs, xl, op)?;
        let w = contiguous::<T>(ws, wl, op)?;
        let d = w.len();
        let rows = x.len() / d;
        let mut y = alloc::<T>(dev, x.len())?;
        if rows > 0 {
            let kernel = Kernel::load_for::<T>(dev, &MODULE, "rms_norm_fwd")?;
            let (d32, eps) = (to_u32(d, op, "last dim")?, eps as f32);
            let mut args = kernel.builder();
            args.arg(&x).arg(&w).arg(&mut y).arg(&d32).arg(&eps);
            launch(args, config((blocks(rows, 1, op)?, 1), THREADS, 0))?;
        }
        Ok((storage(dev, y), xl.shape().clone()))
    })
}

/// Backward: packed `[grad_x (rows·d), grad_w (d)]` for contiguous `x`, `w`, `grad_y`.
pub(in crate::ops) fn backward(
    op: &str,
    eps: f64,
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    with_float_type!(xs.dtype(), op, T => {
        let dev = xs.device();
        let x = contiguous::<T>(xs, xl, op)?;
        let w = contiguous::<T>(ws, wl, op)?;
        let g = contiguous::<T>(gs, gl, op)?;
        let (n, d) = (x.len(), w.len());
        let rows = n / d;
        let d32 = to_u32(d, op, "last dim")?;
        if rows == 0 {
            // No rows: grad_w is an empty sum.
            return Ok((storage(dev, zeros::<T>(dev, d)?), Shape::from(d)));
        }
        let mut out = alloc::<T>(dev, n + d)?;
        let mut inv_rms = alloc::<f32>(dev, rows)?;
        {
            let kernel = Kernel::load_for::<T>(dev, &MODULE, "rms_norm_bwd_rows")?;
            let mut grad_x = out.slice_mut(0..n);
            let eps = eps as f32;
            let mut args = kernel.builder();
            args.arg(&x).arg(&w).arg(&g).arg(&mut grad_x).arg(&mut inv_rms).arg(&d32).arg(&eps);
            launch(args, config((blocks(rows, 1, op)?, 1), THREADS, 0))?;
        }
        let rows_per_chunk = rows.div_ceil(MAX_CHUNKS).max(1);
        let chunks = rows.div_ceil(rows_per_chunk);
        let mut partial = alloc::<f32>(dev, chunks * d)?;
        let column_blocks = blocks(d, THREADS as usize, op)?;
        {
            let kernel = Kernel::load_for::<T>(dev, &MODULE, "rms_norm_bwd_weight_partial")?;
            let (rows32, per_chunk32) =
                (to_u32(rows, op, "row count")?, to_u32(rows_per_chunk, op, "chunk")?);
            let mut args = kernel.builder();
            args.arg(&x).arg(&g).arg(&inv_rms).arg(&mut partial);
            args.arg(&rows32).arg(&d32).arg(&per_chunk32);
            let chunks32 = to_u32(chunks, op, "chunk count")?;
            launch(args, config((column_blocks, chunks32), THREADS, 0))?;
        }
        {
            let kernel = Kernel::load_for::<T>(dev, &MODULE, "rms_norm_bwd_weight_final")?;
            let mut grad_w = out.slice_mut(n..n + d);
            let chunks32 = to_u32(chunks, op, "chunk count")?;
            let mut args = kernel.builder();
            args.arg(&partial).arg(&mut grad_w).arg(&d32).arg(&chunks32);
            launch(args, config((column_blocks, 1), THREADS, 0))?;
        }
        Ok((storage(dev, out), Shape::from(n + d)))
    })
}
