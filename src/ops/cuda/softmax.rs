//! Launches of `kernels/softmax.cu`: softmax over the last dim with an optional broadcast
//! additive mask and causal structure, and its backward; one warp per row.

use super::{
    alloc, blocks, config, contiguous, launch, ptx_module, storage, with_float_type, Kernel,
    Module, NULL,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
use candle_core::{bail, CudaStorage, Layout, Result, Shape};

/// The PTX of `kernels/softmax.cu`.
pub(super) const MODULE: Module = ptx_module!("softmax");

/// Rows (warps) per block.
const WARPS: usize = 8;

/// Most leading (all but the last) dims a mask layout may have.
const MAX_LEAD_DIMS: usize = 8;

/// Where the additive mask's rows live: leading dims and strides of its (broadcast) layout,
/// its start offset and the stride of its last dim. Mirrors `MaskLayout` in softmax.cu.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct MaskLayout {
    rank: u32,
    pad: u32,
    dims: [u64; MAX_LEAD_DIMS],
    strides: [u64; MAX_LEAD_DIMS],
    start: u64,
    col_stride: u64,
}

// SAFETY: plain old data with the C layout of the kernel's struct.
unsafe impl DeviceRepr for MaskLayout {}

impl MaskLayout {
    fn of(layout: &Layout, op: &str) -> Result<Self> {
        let (dims, strides) = (layout.dims(), layout.stride());
        let lead = dims.len().saturating_sub(1);
        if lead > MAX_LEAD_DIMS {
            bail!(
                "{op}: masks of rank {} exceed the cuda kernel's limit of {}",
                dims.len(),
                MAX_LEAD_DIMS + 1
            );
        }
        let mut m = MaskLayout {
            rank: lead as u32,
            start: layout.start_offset() as u64,
            col_stride: strides.last().map_or(0, |&s| s as u64),
            ..Default::default()
        };
        for a in 0..lead {
            m.dims[a] = dims[a] as u64;
            m.strides[a] = strides[a] as u64;
        }
        Ok(m)
    }
}

/// Forward: softmax of contiguous `x [.., Tq, Tk]` plus the optional additive `mask` (any
/// layout broadcasting to `x`), with causal structure when `causal_offset = Some(Tk - Tq)`.
pub(in crate::ops) fn forward(
    op: &str,
    causal_offset: Option<usize>,
    (xs, xl): (&CudaStorage, &Layout),
    mask: Option<(&CudaStorage, &Layout)>,
) -> Result<(CudaStorage, Shape)> {
    let dims = xl.dims();
    let tk = dims.last().copied().unwrap_or(1);
    let tq = if dims.len() >= 2 {
        dims[dims.len() - 2]
    } else {
        1
    };
    let causal = match causal_offset {
        None => -1i32,
        Some(offset) => match i32::try_from(offset) {
            Ok(v) => v,
            Err(_) => bail!("{op}: causal offset {offset} too large for the cuda kernel"),
        },
    };
    with_float_type!(xs.dtype(), op, T => {
        let dev = xs.device();
        let x = contiguous::<T>(xs, xl, op)?;
        let mut y = alloc::<T>(dev, x.len())?;
        if x.is_empty() {
            return Ok((storage(dev, y), xl.shape().clone()));
        }
        let rows = (x.len() / tk) as u64;
        let (tk32, tq32) = (super::to_u32(tk, op, "last dim")?, super::to_u32(tq, op, "rows")?);
        let kernel = Kernel::load_for::<T>(dev, &MODULE, "softmax_fwd")?;
        let cfg = config((blocks(rows as usize, WARPS, op)?, 1), 32 * WARPS as u32, 0);
        match mask {
            Some((ms, ml)) => {
                if ms.dtype() != xs.dtype() {
                    bail!("{op}: mask dtype {:?} differs from the scores' {:?}", ms.dtype(), xs.dtype());
                }
                let mask_layout = MaskLayout::of(ml, op)?;
                let mask = ms.as_cuda_slice::<T>()?;
                let mut args = kernel.builder();
                args.arg(&x).arg(mask).arg(&mask_layout).arg(&mut y);
                args.arg(&rows).arg(&tk32).arg(&tq32).arg(&causal);
                launch(args, cfg)?;
            }
            None => {
                let mask_layout = MaskLayout::default();
                let mut args = kernel.builder();
                args.arg(&x).arg(&NULL).arg(&mask_layout).arg(&mut y);
                args.arg(&rows).arg(&tk32).arg(&tq32).arg(&causal);
                launch(args, cfg)?;
            }
        }
        Ok((storage(dev, y), xl.shape().clone()))
    })
}

/// Backward: `dx = y ⊙ (g - Σ g ⊙ y)` over the last dim of contiguous `y`, `g`.
pub(in crate::ops) fn backward(
    op: &str,
    (ys, yl): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let tk = yl.dims().last().copied().unwrap_or(1);
    with_float_type!(ys.dtype(), op, T => {
        let dev = ys.device();
        let y = contiguous::<T>(ys, yl, op)?;
        let g = contiguous::<T>(gs, gl, op)?;
        let mut dx = alloc::<T>(dev, y.len())?;
        if !y.is_empty() {
            let rows = (y.len() / tk) as u64;
            let tk32 = super::to_u32(tk, op, "last dim")?;
            let kernel = Kernel::load_for::<T>(dev, &MODULE, "softmax_bwd")?;
            let mut args = kernel.builder();
            args.arg(&y).arg(&g).arg(&mut dx).arg(&rows).arg(&tk32);
            launch(args, config((blocks(rows as usize, WARPS, op)?, 1), 32 * WARPS as u32, 0))?;
        }
        Ok((storage(dev, dx), yl.shape().clone()))
    })
}
