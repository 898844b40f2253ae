//! Launches of `kernels/grpo_loss.cu`. The constants of the problem (old/ref log-probs,
//! advantages, mask, and each row's aggregation weight) live on the host, as on the CPU path,
//! and are uploaded for each launch; the forward reduces in one block, the backward runs one
//! thread per token.

use super::{
    alloc, config, contiguous, launch, ptx_module, storage, stride_blocks, upload, with_float_type,
    Kernel, Module, NULL,
};
use crate::ops::grpo_loss::Problem;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
use candle_core::{CudaDevice, CudaStorage, Layout, Result, Shape};

/// The PTX of `kernels/grpo_loss.cu`.
pub(super) const MODULE: Module = ptx_module!("grpo_loss");

/// Threads of the single forward block and per backward block.
const THREADS: u32 = 256;

/// Scalars of the problem; mirrors `GrpoParams` in grpo_loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct GrpoParams {
    eps_low: f64,
    eps_high: f64,
    beta: f64,
    per_token: f64,
    tokens: u64,
    seq_len: u32,
    has_ref: u32,
}

// SAFETY: plain old data with the C layout of the kernel's struct.
unsafe impl DeviceRepr for GrpoParams {}

/// The problem's constants on the device.
struct Constants {
    params: GrpoParams,
    old_logp: CudaSlice<f64>,
    ref_logp: Option<CudaSlice<f64>>,
    advantages: CudaSlice<f64>,
    mask: CudaSlice<u8>,
    row_weight: CudaSlice<f64>,
}

impl Constants {
    fn upload(dev: &CudaDevice, p: &Problem) -> Result<Self> {
        let total = p.mask.iter().filter(|&&m| m).count();
        let row_weight: Vec<f64> = (0..p.batch).map(|row| p.token_weight(row, total)).collect();
        let mask: Vec<u8> = p.mask.iter().map(|&m| u8::from(m)).collect();
        Ok(Self {
            params: GrpoParams {
                eps_low: p.config.eps_low,
                eps_high: p.config.eps_high,
                beta: p.config.beta,
                per_token: 1.0 / total.max(1) as f64,
                tokens: p.mask.len() as u64,
                seq_len: super::to_u32(p.seq_len.max(1), "grpo_loss", "length")?,
                has_ref: u32::from(p.ref_logp.is_some()),
            },
            old_logp: upload(dev, &p.old_logp)?,
            ref_logp: p.ref_logp.as_ref().map(|r| upload(dev, r)).transpose()?,
            advantages: upload(dev, &p.advantages)?,
            mask: upload(dev, &mask)?,
            row_weight: upload(dev, &row_weight)?,
        })
    }
}

/// Forward on contiguous `logp [B, T]`: f32 `[loss, clip_fraction, mean_kl, mean_ratio]`.
pub(in crate::ops) fn forward(
    op: &str,
    problem: &Problem,
    (ls, ll): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    with_float_type!(ls.dtype(), op, T => {
        let dev = ls.device();
        let logp = contiguous::<T>(ls, ll, op)?;
        let c = Constants::upload(dev, problem)?;
        let mut out = alloc::<f32>(dev, 4)?;
        let kernel = Kernel::load_for::<T>(dev, &MODULE, "grpo_fwd")?;
        let mut args = kernel.builder();
        args.arg(&logp).arg(&c.old_logp);
        match &c.ref_logp {
            Some(r) => args.arg(r),
            None => args.arg(&NULL),
        };
        args.arg(&c.advantages).arg(&c.mask).arg(&c.row_weight).arg(&mut out).arg(&c.params);
        launch(args, config((1, 1), THREADS, 0))?;
        Ok((storage(dev, out), Shape::from(4)))
    })
}

/// Backward: `grad_logp` in the dtype of `logp`, scaled by the loss's upstream gradient
/// (element 0 of the forward output's gradient `grad`, f32).
pub(in crate::ops) fn backward(
    op: &str,
    problem: &Problem,
    (gs, gl): (&CudaStorage, &Layout),
    (ls, ll): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    with_float_type!(ls.dtype(), op, T => {
        let dev = ls.device();
        let logp = contiguous::<T>(ls, ll, op)?;
        let upstream = contiguous::<f32>(gs, gl, op)?;
        let c = Constants::upload(dev, problem)?;
        let tokens = logp.len();
        let mut out = alloc::<T>(dev, tokens)?;
        if tokens > 0 {
            let kernel = Kernel::load_for::<T>(dev, &MODULE, "grpo_bwd")?;
            let mut args = kernel.builder();
            args.arg(&logp).arg(&c.old_logp);
            match &c.ref_logp {
                Some(r) => args.arg(r),
                None => args.arg(&NULL),
            };
            args.arg(&c.advantages).arg(&c.mask).arg(&c.row_weight);
            args.arg(&upstream).arg(&mut out).arg(&c.params);
            launch(args, config((stride_blocks(tokens, THREADS as usize), 1), THREADS, 0))?;
        }
        Ok((storage(dev, out), ll.shape().clone()))
    })
}
