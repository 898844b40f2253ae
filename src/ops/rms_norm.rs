//! RMS normalisation over the last dimension with a learned per-channel weight, with a
//! hand-written backward giving gradients for both the input and the weight.

use super::cpu::{contiguous_slice, min_rows_per_task, unsupported_dtype, widen_half, Real};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP_NAME: &str = "rms_norm";

/// `y = x / sqrt(mean(x², last dim) + eps) * weight`, for `x` of any rank with last dim `d`
/// and `weight` of shape `[d]`. Differentiable w.r.t. `x` and `weight`.
///
/// On the CPU f32 and f64 run natively and bf16/f16 are computed in f32 and converted back;
/// on CUDA f32, bf16 and f16 run natively with f32 accumulation.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let d = match x.dims().last() {
        Some(&d) if d > 0 => d,
        _ => bail!(
            "{OP_NAME}: x must have a non-empty last dim, got {:?}",
            x.dims()
        ),
    };
    if weight.dims() != [d] {
        bail!(
            "{OP_NAME}: weight must have shape [{d}] to match x {:?}, got {:?}",
            x.dims(),
            weight.dims()
        );
    }
    if x.dtype() != weight.dtype() {
        bail!(
            "{OP_NAME}: x ({:?}) and weight ({:?}) must share a dtype",
            x.dtype(),
            weight.dtype()
        );
    }
    let (x32, dtype) = widen_half(x)?;
    let (w32, _) = widen_half(weight)?;
    let y = x32
        .contiguous()?
        .apply_op2(&w32.contiguous()?, RmsNorm { eps })?;
    y.to_dtype(dtype)
}

/// Forward op: inputs `(x, weight)`.
struct RmsNorm {
    eps: f64,
}

/// Backward op: inputs `(x, weight, grad_y)`; output is `grad_x` (flattened) followed by
/// `grad_weight`, packed in one 1-D buffer.
struct RmsNormBackward {
    eps: f64,
}

fn inverse_rms<T: Real>(row: &[T], eps: f64) -> T {
    let mut sum_sq = T::of(0.0);
    for &v in row {
        sum_sq += v * v;
    }
    T::of(1.0) / (sum_sq / T::of(row.len() as f64) + T::of(eps)).sqrt()
}

fn forward<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut y = vec![T::of(0.0); x.len()];
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .with_min_len(min_rows_per_task(d))
        .for_each(|(y_row, x_row)| {
            let r = inverse_rms(x_row, eps);
            for ((y, &x), &w) in y_row.iter_mut().zip(x_row).zip(w) {
                *y = x * r * w;
            }
        });
    y
}

/// Rows per rayon task when reducing the weight gradient.
const ROWS_PER_TASK: usize = 64;

fn backward<T: Real>(x: &[T], w: &[T], g: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let n = x.len();
    let mut out = vec![T::of(0.0); n + d];
    let (grad_x, grad_w) = out.split_at_mut(n);
    let block = ROWS_PER_TASK * d;
    let partial_grad_w = grad_x
        .par_chunks_mut(block)
        .zip(x.par_chunks(block).zip(g.par_chunks(block)))
        .map(|(gx_block, (x_block, g_block))| {
            let mut gw = vec![T::of(0.0); d];
            for ((gx_row, x_row), g_row) in gx_block
                .chunks_mut(d)
                .zip(x_block.chunks(d))
                .zip(g_block.chunks(d))
            {
                let r = inverse_rms(x_row, eps);
                // dot = Σ_j g_j w_j x_j
                let mut dot = T::of(0.0);
                for j in 0..d {
                    dot += g_row[j] * w[j] * x_row[j];
                    gw[j] += g_row[j] * x_row[j] * r;
                }
                let coef = r * r * r * dot / T::of(d as f64);
                for j in 0..d {
                    gx_row[j] = r * g_row[j] * w[j] - x_row[j] * coef;
                }
            }
            gw
        })
        .reduce(
            || vec![T::of(0.0); d],
            |mut a, b| {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
                a
            },
        );
    grad_w.copy_from_slice(&partial_grad_w);
    out
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = match xs {
            CpuStorage::F32(_) => CpuStorage::F32(forward::<f32>(
                contiguous_slice(xs, xl, OP_NAME)?,
                contiguous_slice(ws, wl, OP_NAME)?,
                self.eps,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(forward::<f64>(
                contiguous_slice(xs, xl, OP_NAME)?,
                contiguous_slice(ws, wl, OP_NAME)?,
                self.eps,
            )),
            other => return Err(unsupported_dtype(OP_NAME, other)),
        };
        Ok((y, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::rms_norm::forward(OP_NAME, self.eps, (xs, xl), (ws, wl))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &weight.contiguous()?,
            &grad_y.contiguous()?,
            &RmsNormBackward { eps: self.eps },
        )?;
        let n = x.elem_count();
        let grad_x = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let grad_w = packed.narrow(0, n, weight.elem_count())?;
        Ok((Some(grad_x), Some(grad_w)))
    }
}

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "rms_norm_backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let out = match xs {
            CpuStorage::F32(_) => CpuStorage::F32(backward::<f32>(
                contiguous_slice(xs, xl, name)?,
                contiguous_slice(ws, wl, name)?,
                contiguous_slice(gs, gl, name)?,
                self.eps,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(backward::<f64>(
                contiguous_slice(xs, xl, name)?,
                contiguous_slice(ws, wl, name)?,
                contiguous_slice(gs, gl, name)?,
                self.eps,
            )),
            other => return Err(unsupported_dtype(name, other)),
        };
        let len = xl.shape().elem_count() + wl.shape().elem_count();
        Ok((out, Shape::from(len)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::rms_norm::backward(self.name(), self.eps, (xs, xl), (ws, wl), (gs, gl))
    }
}
