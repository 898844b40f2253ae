//! Launch of `kernels/rope.cu`: one thread per rotated channel pair, forward or inverse.

use super::{
    alloc, config, contiguous, launch, ptx_module, storage, stride_blocks, to_u32, with_float_type,
    Kernel, Module,
};
use crate::ops::rope::RopeLayout;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::{CudaStorage, Layout, Result, Shape};

/// The PTX of `kernels/rope.cu`.
pub(super) const MODULE: Module = ptx_module!("rope");

/// Threads per block.
const THREADS: u32 = 256;

/// Rotates contiguous `x [B, H, T, D]` by `cos`/`sin` (`[B, T, D/2]` or `[T, D/2]`), by the
/// opposite angles when `inverse`.
pub(in crate::ops) fn rotate(
    op: &str,
    layout: RopeLayout,
    inverse: bool,
    (xs, xl): (&CudaStorage, &Layout),
    (cs, cl): (&CudaStorage, &Layout),
    (ss, sl): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let (b, h, t, d) = xl.shape().dims4()?;
    with_float_type!(xs.dtype(), op, T => {
        let dev = xs.device();
        let x = contiguous::<T>(xs, xl, op)?;
        let cos = contiguous::<T>(cs, cl, op)?;
        let sin = contiguous::<T>(ss, sl, op)?;
        let half = d / 2;
        let mut y = alloc::<T>(dev, x.len())?;
        let pairs = x.len() / 2;
        if pairs > 0 {
            let kernel = Kernel::load_for::<T>(dev, &MODULE, "rope")?;
            let sizes = [
                to_u32(b, op, "batch")?,
                to_u32(h, op, "heads")?,
                to_u32(t, op, "length")?,
                to_u32(half, op, "head dim")?,
                u32::from(cos.len() == b * t * half),
                u32::from(layout == RopeLayout::Interleaved),
                u32::from(inverse),
            ];
            let mut args = kernel.builder();
            args.arg(&x).arg(&cos).arg(&sin).arg(&mut y);
            for size in &sizes {
                args.arg(size);
            }
            launch(args, config((stride_blocks(pairs, THREADS as usize), 1), THREADS, 0))?;
        }
        Ok((storage(dev, y), xl.shape().clone()))
    })
}
