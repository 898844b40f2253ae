//! The input half of a gated MLP, `silu(x · W_gateᵀ) · (x · W_upᵀ)`, as one autograd node on
//! the CPU.
//!
//! Through [`linear`](fn@super::linear) and [`swiglu`](fn@super::swiglu) the backward hands
//! candle's gradient store the `[tokens, intermediate]` gradients of `gate` and `up` (each a
//! zero-filled buffer plus an add pass, the widest tensors of the layer) and two gradients of `x`
//! to add. Here the op keeps the gate and up pre-activations itself, and its backward turns the
//! activation's gradient into `x`'s gradient (one gemm, then a second accumulated into it) and the
//! two weights' gradients without any of that.

use super::cpu::{
    cpu_float_operands, cpu_tensor, gemm, gemm_accumulate, unsupported_dtype, with_cpu_storage,
    MatView, Real,
};
use super::linear::{linear, product};
use super::swiglu::{self, swiglu};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

const OP_NAME: &str = "swiglu_projection";

/// `silu(x · w_gateᵀ) · (x · w_upᵀ)` for `x` of shape `[..., in]` and both weights of shape
/// `[intermediate, in]`; the result is `[..., intermediate]`, differentiable in all three.
///
/// f32 and f64 CPU tensors run as one op forward and one backward; other devices and dtypes
/// compose [`linear`](fn@super::linear) and [`swiglu`](fn@super::swiglu).
pub fn swiglu_projection(x: &Tensor, w_gate: &Tensor, w_up: &Tensor) -> Result<Tensor> {
    let (intermediate, inputs) = w_gate.dims2()?;
    if w_up.dims() != w_gate.dims() {
        bail!(
            "{OP_NAME}: gate weight {:?} and up weight {:?} must have the same shape",
            w_gate.dims(),
            w_up.dims()
        );
    }
    if x.dims().last() != Some(&inputs) {
        bail!(
            "{OP_NAME}: x is {:?} but the weights are [{intermediate}, {inputs}]",
            x.dims()
        );
    }
    if !cpu_float_operands(&[x, w_gate, w_up]) {
        return swiglu(&linear(x, w_gate, None)?, &linear(x, w_up, None)?);
    }
    x.contiguous()?.apply_op3(
        &w_gate.contiguous()?,
        &w_up.contiguous()?,
        SwigluProjection::default(),
    )
}

/// The CPU op: inputs `(x, w_gate, w_up)`, output the activation. The forward keeps the gate and
/// up pre-activations for the backward (the composed path kept the same two tensors alive).
#[derive(Default)]
struct SwigluProjection {
    saved: Mutex<Option<PreActivations>>,
}

/// `x · w_gateᵀ` and `x · w_upᵀ`, row-major `[rows, intermediate]`.
struct PreActivations {
    gate: CpuStorage,
    up: CpuStorage,
}

/// `(rows, intermediate, inputs)` of the product.
fn dims(x: &Layout, weight: &Layout) -> Result<(usize, usize, usize)> {
    let (intermediate, inputs) = weight.shape().dims2()?;
    Ok((x.shape().elem_count() / inputs.max(1), intermediate, inputs))
}

impl SwigluProjection {
    fn forward<T: Real>(
        &self,
        x: (&CpuStorage, &Layout),
        w_gate: (&CpuStorage, &Layout),
        w_up: (&CpuStorage, &Layout),
    ) -> Result<Vec<T>> {
        let (rows, intermediate, inputs) = dims(x.1, w_gate.1)?;
        let gate: Vec<T> = product(x, w_gate, None, rows, intermediate, inputs)?;
        let up: Vec<T> = product(x, w_up, None, rows, intermediate, inputs)?;
        let activation = swiglu::forward(&gate, &up);
        *self.saved.lock().expect("the saved pre-activations' lock") = Some(PreActivations {
            gate: T::to_cpu_storage_owned(gate),
            up: T::to_cpu_storage_owned(up),
        });
        Ok(activation)
    }

    /// `(grad_x, grad_w_gate, grad_w_up)` as storages; each operand is a storage and the offset
    /// of its first element.
    fn backward<T: Real>(
        saved: &PreActivations,
        [x, w_gate, w_up, grad_activation]: [(&CpuStorage, usize); 4],
        (rows, intermediate, inputs): (usize, usize, usize),
    ) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
        let n = rows * intermediate;
        let gate = &saved.gate.as_slice::<T>()?[..n];
        let up = &saved.up.as_slice::<T>()?[..n];
        let (grad_storage, grad_at) = grad_activation;
        let grad_activation = &grad_storage.as_slice::<T>()?[grad_at..grad_at + n];
        // [grad_gate | grad_up], each row-major [rows, intermediate].
        let grads = T::to_cpu_storage_owned(swiglu::backward(gate, up, grad_activation));
        let grad_gate = MatView::row_major(&grads, 0, intermediate);
        let grad_up = MatView::row_major(&grads, n, intermediate);
        let mut grad_x: Vec<T> = gemm(
            &grad_gate,
            &MatView::row_major(w_gate.0, w_gate.1, inputs),
            rows,
            inputs,
            intermediate,
        )?;
        gemm_accumulate(
            &mut grad_x,
            &grad_up,
            &MatView::row_major(w_up.0, w_up.1, inputs),
            rows,
            inputs,
            intermediate,
        )?;
        let x_view = MatView::row_major(x.0, x.1, inputs);
        let grad_w_gate: Vec<T> = gemm(
            &MatView::transposed(&grads, 0, intermediate),
            &x_view,
            intermediate,
            inputs,
            rows,
        )?;
        let grad_w_up: Vec<T> = gemm(
            &MatView::transposed(&grads, n, intermediate),
            &x_view,
            intermediate,
            inputs,
            rows,
        )?;
        Ok((
            T::to_cpu_storage_owned(grad_x),
            T::to_cpu_storage_owned(grad_w_gate),
            T::to_cpu_storage_owned(grad_w_up),
        ))
    }
}

impl CustomOp3 for SwigluProjection {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, intermediate, _) = dims(xl, gl)?;
        let mut out_dims = xl.dims().to_vec();
        *out_dims.last_mut().expect("x has a last dim") = intermediate;
        let operands = ((xs, xl), (gs, gl), (us, ul));
        let activation = match xs {
            CpuStorage::F32(_) => {
                CpuStorage::F32(self.forward::<f32>(operands.0, operands.1, operands.2)?)
            }
            CpuStorage::F64(_) => {
                CpuStorage::F64(self.forward::<f64>(operands.0, operands.1, operands.2)?)
            }
            other => return Err(unsupported_dtype(OP_NAME, other)),
        };
        Ok((activation, Shape::from(out_dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w_gate: &Tensor,
        w_up: &Tensor,
        _activation: &Tensor,
        grad_activation: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let guard = self.saved.lock().expect("the saved pre-activations' lock");
        let Some(saved) = guard.as_ref() else {
            bail!("{OP_NAME}: backward without the forward's pre-activations");
        };
        let (intermediate, inputs) = w_gate.dims2()?;
        let rows = x.elem_count() / inputs.max(1);
        let sizes = (rows, intermediate, inputs);
        let grad_activation = grad_activation.contiguous()?;
        let grads = with_cpu_storage(x, OP_NAME, |xs, x_at| {
            with_cpu_storage(w_gate, OP_NAME, |gs, g_at| {
                with_cpu_storage(w_up, OP_NAME, |us, u_at| {
                    with_cpu_storage(&grad_activation, OP_NAME, |ds, d_at| {
                        let operands = [(xs, x_at), (gs, g_at), (us, u_at), (ds, d_at)];
                        match ds {
                            CpuStorage::F32(_) => Self::backward::<f32>(saved, operands, sizes),
                            CpuStorage::F64(_) => Self::backward::<f64>(saved, operands, sizes),
                            other => Err(unsupported_dtype(OP_NAME, other)),
                        }
                    })
                })
            })
        })?;
        let (grad_x, grad_w_gate, grad_w_up) = grads;
        Ok((
            Some(cpu_tensor(grad_x, x.shape())?),
            Some(cpu_tensor(grad_w_gate, (intermediate, inputs))?),
            Some(cpu_tensor(grad_w_up, (intermediate, inputs))?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpu::{assert_gradients_match, max_relative_error};
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The activation and the gradients of x and both weights equal those of the composition
    /// `swiglu(linear(x, w_gate), linear(x, w_up))`, for few rows (the decode kernel) and many
    /// (the per-thread gemm blocks), f32 and f64.
    #[test]
    fn matches_the_composition_with_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for (batch, t, inputs, intermediate) in [(1, 3, 16, 40), (2, 150, 64, 130)] {
                let var = |dims: &[usize]| -> Result<Var> {
                    Var::from_tensor(&Tensor::randn(0f32, 1.0, dims, &dev)?.to_dtype(dtype)?)
                };
                let x = var(&[batch, t, inputs])?;
                let w_gate = var(&[intermediate, inputs])?;
                let w_up = var(&[intermediate, inputs])?;
                let probe =
                    Tensor::randn(0f32, 1.0, (batch, t, intermediate), &dev)?.to_dtype(dtype)?;
                let ours = swiglu_projection(&x, &w_gate, &w_up)?;
                let reference = swiglu(&linear(&x, &w_gate, None)?, &linear(&x, &w_up, None)?)?;
                let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                let case = format!("{dtype:?} {batch}×{t}×{inputs}→{intermediate}");
                let error = max_relative_error(&ours, &reference)?;
                assert!(error < tolerance, "{case}: activation rel {error}");
                let ours = (ours * &probe)?.sum_all()?.backward()?;
                let reference = (reference * &probe)?.sum_all()?.backward()?;
                let vars = [("x", &x), ("w_gate", &w_gate), ("w_up", &w_up)];
                assert_gradients_match(&ours, &reference, &vars, tolerance, &case)?;
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_weights() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 5), DType::F32, &dev)?;
        let w = Tensor::zeros((3, 5), DType::F32, &dev)?;
        let other = Tensor::zeros((4, 5), DType::F32, &dev)?;
        let error = swiglu_projection(&x, &w, &other).unwrap_err().to_string();
        assert!(
            error.contains("[3, 5]") && error.contains("[4, 5]"),
            "{error}"
        );
        let error = swiglu_projection(&x, &w.t()?, &w.t()?)
            .unwrap_err()
            .to_string();
        assert!(error.contains("x is [2, 5]"), "{error}");
        Ok(())
    }
}
