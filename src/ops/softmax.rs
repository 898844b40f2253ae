//! Softmax over the last dimension, plain and masked (additive mask and/or causal structure
//! applied inside the kernel), with a hand-written backward `dx = y ⊙ (dy - Σ dy ⊙ y)`.

use super::cpu::{
    contiguous_slice, min_rows_per_task, strided_row_offsets, unsupported_dtype, widen_half, Real,
};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP_NAME: &str = "softmax_last_dim";
const MASKED_OP_NAME: &str = "masked_softmax";

/// Softmax over the last dim of `x` (any rank ≥ 1). Differentiable w.r.t. `x`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.rank() == 0 {
        bail!("{OP_NAME}: x must have at least one dim, got a scalar");
    }
    let (x32, dtype) = widen_half(x)?;
    x32.contiguous()?
        .apply_op1(Softmax {
            causal_offset: None,
        })?
        .to_dtype(dtype)
}

/// Masking applied by [`masked_softmax`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SoftmaxMask<'a> {
    /// Additive mask broadcastable to the scores' shape (e.g. `[Tq, Tk]` or `[B, 1, Tq, Tk]`),
    /// same dtype as the scores; `-inf` entries are masked out. It is a constant: no gradient
    /// flows into it.
    pub additive: Option<&'a Tensor>,
    /// Causal structure on the last two dims `[.., Tq, Tk]`, with the queries aligned to the
    /// end of the keys: query `i` may see key `j` iff `j <= i + (Tk - Tq)`.
    pub causal: bool,
}

/// Softmax over the last dim of attention-like scores `[.., Tq, Tk]` with the masking of
/// `mask` applied inside the kernel (no masked copy of the scores is built). Masked entries
/// get probability 0; a row with every entry masked yields all zeros (never NaN) and a zero
/// gradient. Differentiable w.r.t. `scores` only.
pub fn masked_softmax(scores: &Tensor, mask: SoftmaxMask<'_>) -> Result<Tensor> {
    let dims = scores.dims();
    if dims.len() < 2 && mask.causal {
        bail!("{MASKED_OP_NAME}: causal masking needs scores [.., Tq, Tk], got {dims:?}");
    }
    if dims.is_empty() {
        bail!("{MASKED_OP_NAME}: scores must have at least one dim, got a scalar");
    }
    let causal_offset = if mask.causal {
        let (tq, tk) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        if tq > tk {
            bail!("{MASKED_OP_NAME}: causal masking needs Tq <= Tk, got scores {dims:?}");
        }
        Some(tk - tq)
    } else {
        None
    };
    let (x32, dtype) = widen_half(scores)?;
    let x32 = x32.contiguous()?;
    let y = match mask.additive {
        None => x32.apply_op1(Softmax { causal_offset })?,
        Some(additive) => {
            if additive.dtype() != scores.dtype() {
                bail!(
                    "{MASKED_OP_NAME}: additive mask dtype {:?} differs from scores dtype {:?}",
                    additive.dtype(),
                    scores.dtype()
                );
            }
            let (m32, _) = widen_half(additive)?;
            let m32 = m32.broadcast_as(scores.shape()).map_err(|e| {
                candle_core::Error::Msg(format!(
                    "{MASKED_OP_NAME}: mask {:?} does not broadcast to scores {dims:?}: {e}",
                    additive.dims()
                ))
            })?;
            x32.apply_op2(&m32, MaskedSoftmax { causal_offset })?
        }
    };
    y.to_dtype(dtype)
}

/// Softmax with optional causal structure (`causal_offset = Tk - Tq`).
struct Softmax {
    causal_offset: Option<usize>,
}

/// Softmax of `scores + additive_mask`, optional causal structure.
struct MaskedSoftmax {
    causal_offset: Option<usize>,
}

/// Backward op: inputs `(y, grad_y)`, output `grad_x`.
struct SoftmaxBackward;

/// Where a row's mask values live inside the mask storage.
struct MaskRows<'a, T> {
    data: &'a [T],
    row_offsets: Vec<usize>,
    stride: usize,
}

fn forward<T: Real>(
    x: &[T],
    dims: &[usize],
    causal_offset: Option<usize>,
    mask: Option<&MaskRows<'_, T>>,
) -> Vec<T> {
    let tk = *dims.last().unwrap_or(&1);
    let tq = if dims.len() >= 2 {
        dims[dims.len() - 2]
    } else {
        1
    };
    let mut y = vec![T::of(0.0); x.len()];
    if tk == 0 {
        return y;
    }
    y.par_chunks_mut(tk)
        .zip(x.par_chunks(tk))
        .with_min_len(min_rows_per_task(tk))
        .enumerate()
        .for_each(|(row, (y_row, x_row))| {
            let visible = match causal_offset {
                Some(offset) => (row % tq + offset + 1).min(tk),
                None => tk,
            };
            let mut max = T::NEG_INFINITY;
            for j in 0..visible {
                let mut v = x_row[j];
                if let Some(m) = mask {
                    v += m.data[m.row_offsets[row] + j * m.stride];
                }
                y_row[j] = v;
                max = max.maximum(v);
            }
            if max == T::NEG_INFINITY {
                // Every entry masked: leave the row at zero.
                y_row[..visible].fill(T::of(0.0));
                return;
            }
            for v in &mut y_row[..visible] {
                *v -= max;
            }
            T::exp_in_place(&mut y_row[..visible]);
            let sum = y_row[..visible].iter().fold(T::of(0.0), |a, &v| a + v);
            let inv = T::of(1.0) / sum;
            for v in &mut y_row[..visible] {
                *v *= inv;
            }
        });
    y
}

fn backward<T: Real>(y: &[T], g: &[T], tk: usize) -> Vec<T> {
    let mut dx = vec![T::of(0.0); y.len()];
    if tk == 0 {
        return dx;
    }
    dx.par_chunks_mut(tk)
        .zip(y.par_chunks(tk).zip(g.par_chunks(tk)))
        .with_min_len(min_rows_per_task(tk))
        .for_each(|(dx_row, (y_row, g_row))| {
            let mut dot = T::of(0.0);
            for (&y, &g) in y_row.iter().zip(g_row) {
                dot += y * g;
            }
            for ((dx, &y), &g) in dx_row.iter_mut().zip(y_row).zip(g_row) {
                *dx = y * (g - dot);
            }
        });
    dx
}

fn softmax_bwd(y: &Tensor, grad_y: &Tensor) -> Result<Tensor> {
    y.contiguous()?
        .apply_op2_no_bwd(&grad_y.contiguous()?, &SoftmaxBackward)
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        if self.causal_offset.is_some() {
            MASKED_OP_NAME
        } else {
            OP_NAME
        }
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let dims = xl.dims();
        let y = match xs {
            CpuStorage::F32(_) => CpuStorage::F32(forward::<f32>(
                contiguous_slice(xs, xl, name)?,
                dims,
                self.causal_offset,
                None,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(forward::<f64>(
                contiguous_slice(xs, xl, name)?,
                dims,
                self.causal_offset,
                None,
            )),
            other => return Err(unsupported_dtype(name, other)),
        };
        Ok((y, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::softmax::forward(self.name(), self.causal_offset, (xs, xl), None)
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(softmax_bwd(y, grad_y)?))
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        MASKED_OP_NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = xl.dims();
        let (row_offsets, stride) = strided_row_offsets(ml);
        let y = match (xs, ms) {
            (CpuStorage::F32(_), CpuStorage::F32(mask)) => {
                let mask = MaskRows {
                    data: mask.as_slice(),
                    row_offsets,
                    stride,
                };
                CpuStorage::F32(forward::<f32>(
                    contiguous_slice(xs, xl, MASKED_OP_NAME)?,
                    dims,
                    self.causal_offset,
                    Some(&mask),
                ))
            }
            (CpuStorage::F64(_), CpuStorage::F64(mask)) => {
                let mask = MaskRows {
                    data: mask.as_slice(),
                    row_offsets,
                    stride,
                };
                CpuStorage::F64(forward::<f64>(
                    contiguous_slice(xs, xl, MASKED_OP_NAME)?,
                    dims,
                    self.causal_offset,
                    Some(&mask),
                ))
            }
            (other, _) => return Err(unsupported_dtype(MASKED_OP_NAME, other)),
        };
        Ok((y, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ms: &candle_core::CudaStorage,
        ml: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::softmax::forward(MASKED_OP_NAME, self.causal_offset, (xs, xl), Some((ms, ml)))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _mask: &Tensor,
        y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(softmax_bwd(y, grad_y)?), None))
    }
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax_backward"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let tk = *yl.dims().last().unwrap_or(&1);
        let dx = match ys {
            CpuStorage::F32(_) => CpuStorage::F32(backward::<f32>(
                contiguous_slice(ys, yl, name)?,
                contiguous_slice(gs, gl, name)?,
                tk,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(backward::<f64>(
                contiguous_slice(ys, yl, name)?,
                contiguous_slice(gs, gl, name)?,
                tk,
            )),
            other => return Err(unsupported_dtype(name, other)),
        };
        Ok((dx, yl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::softmax::backward(self.name(), (ys, yl), (gs, gl))
    }
}
