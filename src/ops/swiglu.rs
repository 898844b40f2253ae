//! The gated MLP activation `silu(gate) · up` of Qwen/Llama, fused: one pass forward and one pass
//! backward (candle's composition costs two passes forward and about ten backward, each over the
//! whole `[tokens, intermediate]` activation).

use super::cpu::{contiguous_slice, unsupported_dtype, widen_half, Real};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP_NAME: &str = "swiglu";

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// `silu(gate) · up` elementwise, for `gate` and `up` of the same shape; differentiable in both.
///
/// On the CPU, f32 and f64 run natively and bf16/f16 are computed in f32 and converted back;
/// other devices use candle's `silu` and `mul`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.shape() != up.shape() {
        bail!(
            "{OP_NAME}: gate {:?} and up {:?} must have the same shape",
            gate.dims(),
            up.dims()
        );
    }
    if gate.dtype() != up.dtype() {
        bail!(
            "{OP_NAME}: gate ({:?}) and up ({:?}) must share a dtype",
            gate.dtype(),
            up.dtype()
        );
    }
    if !gate.device().is_cpu() {
        return gate.silu()? * up;
    }
    let (gate32, dtype) = widen_half(gate)?;
    let (up32, _) = widen_half(up)?;
    gate32
        .contiguous()?
        .apply_op2(&up32.contiguous()?, Swiglu)?
        .to_dtype(dtype)
}

/// Forward op: inputs `(gate, up)`.
struct Swiglu;

/// Backward op: inputs `(gate, up, grad_y)`; output is `grad_gate` followed by `grad_up`, packed in
/// one 1-D buffer.
struct SwigluBackward;

/// `out[i] = σ(x[i]) = 1 / (1 + exp(-x[i]))`.
fn sigmoid_into<T: Real>(x: &[T], out: &mut [T]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = -v;
    }
    T::exp_in_place(out);
    for o in out.iter_mut() {
        *o = T::of(1.0) / (T::of(1.0) + *o);
    }
}

/// `silu(gate) · up` elementwise into a new buffer.
pub(super) fn forward<T: Real>(gate: &[T], up: &[T]) -> Vec<T> {
    let mut y = vec![T::of(0.0); gate.len()];
    y.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(y, (gate, up))| {
            // y holds σ(g) first (through the vectorised exp), then the product.
            sigmoid_into(gate, y);
            for ((y, &g), &u) in y.iter_mut().zip(gate).zip(up) {
                *y *= g * u;
            }
        });
    y
}

/// `d/dg [g·σ(g)·u] = u·σ(g)·(1 + g·(1 − σ(g)))`, `d/du = g·σ(g)`: `[grad_gate | grad_up]` in one
/// buffer.
pub(super) fn backward<T: Real>(gate: &[T], up: &[T], grad_y: &[T]) -> Vec<T> {
    let n = gate.len();
    let mut out = vec![T::of(0.0); 2 * n];
    let (grad_gate, grad_up) = out.split_at_mut(n);
    grad_gate
        .par_chunks_mut(CHUNK)
        .zip(grad_up.par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .zip(grad_y.par_chunks(CHUNK))
        .for_each(|(((dg, du), (gate, up)), gy)| {
            // du holds σ(g) first (through the vectorised exp).
            sigmoid_into(gate, du);
            for i in 0..gate.len() {
                let (g, u) = (gate[i], up[i]);
                let s = du[i];
                let silu = g * s;
                dg[i] = gy[i] * u * s * (T::of(1.0) + g * (T::of(1.0) - s));
                du[i] = gy[i] * silu;
            }
        });
    out
}

impl CustomOp2 for Swiglu {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = match gs {
            CpuStorage::F32(_) => CpuStorage::F32(forward::<f32>(
                contiguous_slice(gs, gl, OP_NAME)?,
                contiguous_slice(us, ul, OP_NAME)?,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(forward::<f64>(
                contiguous_slice(gs, gl, OP_NAME)?,
                contiguous_slice(us, ul, OP_NAME)?,
            )),
            other => return Err(unsupported_dtype(OP_NAME, other)),
        };
        Ok((y, gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = gate.contiguous()?.apply_op3_no_bwd(
            &up.contiguous()?,
            &grad_y.contiguous()?,
            &SwigluBackward,
        )?;
        let n = gate.elem_count();
        let grad_gate = packed.narrow(0, 0, n)?.reshape(gate.shape())?;
        let grad_up = packed.narrow(0, n, n)?.reshape(up.shape())?;
        Ok((Some(grad_gate), Some(grad_up)))
    }
}

impl CustomOp3 for SwigluBackward {
    fn name(&self) -> &'static str {
        "swiglu_backward"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let out = match gs {
            CpuStorage::F32(_) => CpuStorage::F32(backward::<f32>(
                contiguous_slice(gs, gl, name)?,
                contiguous_slice(us, ul, name)?,
                contiguous_slice(ys, yl, name)?,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(backward::<f64>(
                contiguous_slice(gs, gl, name)?,
                contiguous_slice(us, ul, name)?,
                contiguous_slice(ys, yl, name)?,
            )),
            other => return Err(unsupported_dtype(name, other)),
        };
        Ok((out, Shape::from(2 * gl.shape().elem_count())))
    }
}
