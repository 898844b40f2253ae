//! Rotary position embedding with per-(batch row, position) angles, in both pairing
//! layouts, with a backward w.r.t. the rotated input (the angles are constants).

use super::cpu::{contiguous_slice, min_rows_per_task, unsupported_dtype, widen_half, Real};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP_NAME: &str = "rope";

/// Which channels of a head are rotated together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// HF / Qwen / Llama (`rotate_half`): channel `i` pairs with `i + D/2`.
    HalfSplit,
    /// Meta original / llama2.c: channel `2i` pairs with `2i + 1`.
    Interleaved,
}

/// Rotates `x [B, H, T, D]` by the angles whose cosines and sines are `cos`, `sin`.
///
/// `cos`/`sin` have shape `[B, T, D/2]` (each batch row has its own positions: left padding,
/// packed sequences) or `[T, D/2]` (shared by all rows). Pair `p` (channels `(p, p + D/2)` for
/// [`RopeLayout::HalfSplit`], `(2p, 2p + 1)` for [`RopeLayout::Interleaved`]) is rotated by
/// `cos[.., t, p]`, `sin[.., t, p]`: `(a, b) -> (a·cos - b·sin, b·cos + a·sin)`.
///
/// Differentiable w.r.t. `x` only. CPU: f32/f64 native, bf16/f16 computed in f32; CUDA: f32,
/// bf16 and f16 native.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, layout: RopeLayout) -> Result<Tensor> {
    let (b, _h, t, d) = match x.dims() {
        &[b, h, t, d] => (b, h, t, d),
        dims => bail!("{OP_NAME}: x must be [B, H, T, D], got {dims:?}"),
    };
    if d == 0 || d % 2 != 0 {
        bail!(
            "{OP_NAME}: head dim must be even and non-zero, got x {:?}",
            x.dims()
        );
    }
    let shared_ok = cos.dims() == [t, d / 2];
    let per_row_ok = cos.dims() == [b, t, d / 2];
    if !(shared_ok || per_row_ok) || cos.dims() != sin.dims() {
        bail!(
            "{OP_NAME}: cos/sin must be [B, T, D/2] = [{b}, {t}, {}] or [T, D/2], got cos {:?} sin {:?} for x {:?}",
            d / 2,
            cos.dims(),
            sin.dims(),
            x.dims()
        );
    }
    if x.dtype() != cos.dtype() || x.dtype() != sin.dtype() {
        bail!(
            "{OP_NAME}: x, cos and sin must share a dtype, got {:?}, {:?}, {:?}",
            x.dtype(),
            cos.dtype(),
            sin.dtype()
        );
    }
    let (x32, dtype) = widen_half(x)?;
    let (cos32, _) = widen_half(cos)?;
    let (sin32, _) = widen_half(sin)?;
    let y = x32.contiguous()?.apply_op3(
        &cos32.contiguous()?,
        &sin32.contiguous()?,
        Rope {
            layout,
            inverse: false,
        },
    )?;
    y.to_dtype(dtype)
}

/// Forward op (inputs `(x, cos, sin)`); with `inverse` it rotates by the opposite angle,
/// which is exactly the backward of the forward rotation.
struct Rope {
    layout: RopeLayout,
    inverse: bool,
}

fn rotate<T: Real>(
    x: &[T],
    cos: &[T],
    sin: &[T],
    (b, h, t, d): (usize, usize, usize, usize),
    layout: RopeLayout,
    inverse: bool,
) -> Vec<T> {
    let half = d / 2;
    let per_row_angles = cos.len() == b * t * half;
    let mut y = vec![T::of(0.0); x.len()];
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .with_min_len(min_rows_per_task(d))
        .enumerate()
        .for_each(|(row, (y_row, x_row))| {
            let pos = row % t;
            let batch = row / (h * t);
            let angle_row = if per_row_angles { batch * t + pos } else { pos };
            let c = &cos[angle_row * half..(angle_row + 1) * half];
            let s = &sin[angle_row * half..(angle_row + 1) * half];
            for p in 0..half {
                let (i, j) = match layout {
                    RopeLayout::HalfSplit => (p, p + half),
                    RopeLayout::Interleaved => (2 * p, 2 * p + 1),
                };
                let sin_p = if inverse { -s[p] } else { s[p] };
                let (a, bb) = (x_row[i], x_row[j]);
                y_row[i] = a * c[p] - bb * sin_p;
                y_row[j] = bb * c[p] + a * sin_p;
            }
        });
    y
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        if self.inverse {
            "rope_backward"
        } else {
            OP_NAME
        }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let dims = xl.shape().dims4()?;
        let y = match xs {
            CpuStorage::F32(_) => CpuStorage::F32(rotate::<f32>(
                contiguous_slice(xs, xl, name)?,
                contiguous_slice(cs, cl, name)?,
                contiguous_slice(ss, sl, name)?,
                dims,
                self.layout,
                self.inverse,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(rotate::<f64>(
                contiguous_slice(xs, xl, name)?,
                contiguous_slice(cs, cl, name)?,
                contiguous_slice(ss, sl, name)?,
                dims,
                self.layout,
                self.inverse,
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
        cs: &candle_core::CudaStorage,
        cl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let name = self.name();
        super::cuda::rope::rotate(
            name,
            self.layout,
            self.inverse,
            (xs, xl),
            (cs, cl),
            (ss, sl),
        )
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad_x = grad_y.contiguous()?.apply_op3_no_bwd(
            &cos.contiguous()?,
            &sin.contiguous()?,
            &Rope {
                layout: self.layout,
                inverse: !self.inverse,
            },
        )?;
        Ok((Some(grad_x), None, None))
    }
}
