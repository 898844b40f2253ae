//! `y = x · Wᵀ (+ b)`, the projection of every linear layer, as one differentiable op.
//!
//! On the CPU the forward and the backward are each one node of the autograd graph: candle's
//! composition (reshape, transpose, matmul, broadcast bias add, reshape) costs a zero-filled
//! gradient buffer and an add pass over the activation for every one of those nodes in the
//! backward. Few-row products (decoding: a handful of rows against a whole weight matrix) use
//! `ops::few_rows_matmul`, which reads each weight row in place — a general gemm spends most of
//! its time packing the weight into panels on every call. Many-row products (training, long
//! prefills) and both products of the backward use the gemm crate's kernels (those under candle's
//! matmul) on the operands in place, through `ops::cpu::gemm`.

use super::cpu::{
    contiguous_slice, contiguous_start, cpu_float_operands, cpu_tensor, gemm, unsupported_dtype,
    with_cpu_storage, MatView,
};
use super::few_rows_matmul::few_rows_matmul;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;

const OP_NAME: &str = "linear";

/// Largest number of input rows sent to the few-row kernel; above it candle's gemm wins.
pub const FEW_ROWS_MAX: usize = 64;

/// `x · weightᵀ (+ bias)` for `x` of shape `[..., in]`, `weight` of shape `[out, in]` (the layout
/// of an HF linear layer) and an optional `bias` of shape `[out]`; the result is `[..., out]`,
/// differentiable in all three.
///
/// f32 and f64 CPU tensors run as one op forward and one backward (f32 with at most
/// [`FEW_ROWS_MAX`] rows through the few-row kernel); other devices and dtypes use candle's
/// matmul and broadcast add.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (outputs, inputs) = weight.dims2()?;
    let x_dims = x.dims();
    if x_dims.last() != Some(&inputs) {
        bail!("{OP_NAME}: x is {x_dims:?} but weight is [{outputs}, {inputs}]");
    }
    if let Some(bias) = bias {
        if bias.dims() != [outputs] {
            bail!(
                "{OP_NAME}: bias is {:?} but weight is [{outputs}, {inputs}]",
                bias.dims()
            );
        }
    }
    let mut operands = vec![x, weight];
    operands.extend(bias);
    if !cpu_float_operands(&operands) {
        return composed(x, weight, bias);
    }
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        None => x.apply_op2(&weight, Projection),
        Some(bias) => x.apply_op3(&weight, &bias.contiguous()?, Projection),
    }
}

/// The same product through candle's ops (reshape, matmul, broadcast add, reshape): the path
/// for other devices and dtypes, and the tests' reference for the op and its gradients.
fn composed(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (outputs, inputs) = weight.dims2()?;
    let rows = x.elem_count() / inputs.max(1);
    let y = x.reshape((rows, inputs))?.matmul(&weight.t()?)?;
    let y = match bias {
        Some(bias) => y.broadcast_add(bias)?,
        None => y,
    };
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("x has a last dim") = outputs;
    y.reshape(out_dims)
}

/// The CPU op: inputs `(x [..., in], weight [out, in])`, and `bias [out]` as a third input when
/// the layer has one; output `[..., out]`.
struct Projection;

impl Projection {
    fn forward(
        x: (&CpuStorage, &Layout),
        weight: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (outputs, inputs) = weight.1.shape().dims2()?;
        let rows = x.1.shape().elem_count() / inputs.max(1);
        let mut out_dims = x.1.dims().to_vec();
        *out_dims.last_mut().expect("x has a last dim") = outputs;
        let product = match (x.0, weight.0) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(product::<f32>(x, weight, bias, rows, outputs, inputs)?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(product::<f64>(x, weight, bias, rows, outputs, inputs)?)
            }
            (other, _) => return Err(unsupported_dtype(OP_NAME, other)),
        };
        Ok((product, Shape::from(out_dims)))
    }

    /// `(grad_x, grad_weight)`: `grad_y · W` in `x`'s shape and `grad_yᵀ · x` as `[out, in]`,
    /// each one gemm on the operands in place.
    fn input_and_weight_grads(
        x: &Tensor,
        weight: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (outputs, inputs) = weight.dims2()?;
        let rows = x.elem_count() / inputs.max(1);
        let grad_y = grad_y.contiguous()?;
        let grads = |xs: &CpuStorage, x_at: usize| {
            with_cpu_storage(weight, OP_NAME, |ws, w_at| {
                with_cpu_storage(&grad_y, OP_NAME, |gs, g_at| {
                    let grad_x = MatView::row_major(gs, g_at, outputs).times(
                        &MatView::row_major(ws, w_at, inputs),
                        rows,
                        inputs,
                        outputs,
                    )?;
                    let grad_weight = MatView::transposed(gs, g_at, outputs).times(
                        &MatView::row_major(xs, x_at, inputs),
                        outputs,
                        inputs,
                        rows,
                    )?;
                    Ok((grad_x, grad_weight))
                })
            })
        };
        let (grad_x, grad_weight) = with_cpu_storage(x, OP_NAME, grads)?;
        Ok((
            cpu_tensor(grad_x, x.shape())?,
            cpu_tensor(grad_weight, (outputs, inputs))?,
        ))
    }

    /// The bias gradient: the sum of `grad_y`'s rows.
    fn bias_grad(grad_y: &Tensor, outputs: usize) -> Result<Tensor> {
        let grad_y = grad_y.contiguous()?;
        let len = grad_y.elem_count();
        let sums = with_cpu_storage(&grad_y, OP_NAME, |gs, g_at| match gs {
            CpuStorage::F32(_) => row_sums::<f32>(gs, g_at, len, outputs),
            CpuStorage::F64(_) => row_sums::<f64>(gs, g_at, len, outputs),
            other => Err(unsupported_dtype(OP_NAME, other)),
        })?;
        cpu_tensor(sums, outputs)
    }
}

/// The sum of the `len / row_len` rows of `row_len` elements that start at element `start`.
fn row_sums<T: WithDType>(
    storage: &CpuStorage,
    start: usize,
    len: usize,
    row_len: usize,
) -> Result<CpuStorage> {
    let data = &storage.as_slice::<T>()?[start..start + len];
    let mut sums = vec![T::zero(); row_len];
    for row in data.chunks_exact(row_len.max(1)) {
        for (sum, &v) in sums.iter_mut().zip(row) {
            *sum += v;
        }
    }
    Ok(T::to_cpu_storage_owned(sums))
}

/// `x · weightᵀ (+ bias)` over `rows` rows, as a new row-major `[rows, outputs]` buffer.
pub(super) fn product<T: WithDType>(
    (xs, xl): (&CpuStorage, &Layout),
    (ws, wl): (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
    rows: usize,
    outputs: usize,
    inputs: usize,
) -> Result<Vec<T>> {
    let mut y = match (xs, ws) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) if rows <= FEW_ROWS_MAX => {
            let y = few_rows_matmul(
                contiguous_slice(xs, xl, OP_NAME)?,
                contiguous_slice(ws, wl, OP_NAME)?,
                rows,
                outputs,
                inputs,
            );
            T::cpu_storage_data(CpuStorage::F32(y))?
        }
        _ => gemm(
            &MatView::row_major(xs, contiguous_start(xl, OP_NAME)?, inputs),
            &MatView::transposed(ws, contiguous_start(wl, OP_NAME)?, inputs),
            rows,
            outputs,
            inputs,
        )?,
    };
    if let Some((bs, bl)) = bias {
        let bias = contiguous_slice::<T>(bs, bl, OP_NAME)?;
        let rows_per_task = super::cpu::min_rows_per_task(outputs);
        y.par_chunks_mut(outputs.max(1) * rows_per_task)
            .for_each(|chunk| {
                for row in chunk.chunks_mut(outputs) {
                    for (v, &b) in row.iter_mut().zip(bias) {
                        *v += b;
                    }
                }
            });
    }
    Ok(y)
}

impl CustomOp2 for Projection {
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
        Self::forward((xs, xl), (ws, wl), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (grad_x, grad_weight) = Self::input_and_weight_grads(x, weight, grad_y)?;
        Ok((Some(grad_x), Some(grad_weight)))
    }
}

impl CustomOp3 for Projection {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::forward((xs, xl), (ws, wl), Some((bs, bl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_x, grad_weight) = Self::input_and_weight_grads(x, weight, grad_y)?;
        let grad_bias = Self::bias_grad(grad_y, weight.dim(0)?)?;
        Ok((Some(grad_x), Some(grad_weight), Some(grad_bias)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpu::{assert_gradients_match, max_relative_error};
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn matches_candle_matmul_on_odd_shapes() -> Result<()> {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 37, 13),
            (5, 67, 29),
            (8, 96, 256),
            (33, 65, 19),
            (65, 33, 17),
            (300, 70, 45),
            // Large enough to be cut into one block of rows (then of columns) per thread.
            (300, 70, 64),
            (70, 300, 64),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
            let b = Tensor::randn(0f32, 1.0, n, &Device::Cpu)?;
            let error = max_relative_error(&linear(&x, &w, None)?, &composed(&x, &w, None)?)?;
            assert!(error < 1e-5, "{m}×{n}×{k}: rel {error}");
            let error =
                max_relative_error(&linear(&x, &w, Some(&b))?, &composed(&x, &w, Some(&b))?)?;
            assert!(error < 1e-5, "{m}×{n}×{k} with bias: rel {error}");
        }
        Ok(())
    }

    /// Gradients of x, weight and bias equal those of candle's composition, for a batched input
    /// on both kernels (few rows, many rows), f32 and f64, with and without bias.
    #[test]
    fn gradients_match_the_composition() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            // The last case's products are cut into one block per thread.
            for (batch, t, inputs, outputs) in [(1, 3, 24, 40), (4, 50, 24, 40), (2, 150, 64, 130)]
            {
                for with_bias in [false, true] {
                    let x = Var::randn(0f32, 1.0, (batch, t, inputs), &dev)?;
                    let w = Var::randn(0f32, 1.0, (outputs, inputs), &dev)?;
                    let b = Var::randn(0f32, 1.0, outputs, &dev)?;
                    let (x, w, b) = (
                        Var::from_tensor(&x.to_dtype(dtype)?)?,
                        Var::from_tensor(&w.to_dtype(dtype)?)?,
                        Var::from_tensor(&b.to_dtype(dtype)?)?,
                    );
                    let bias = with_bias.then_some(b.as_tensor());
                    // A non-uniform upstream gradient, so a transposed or misplaced one shows.
                    let probe =
                        Tensor::randn(0f32, 1.0, (batch, t, outputs), &dev)?.to_dtype(dtype)?;
                    let ours = (linear(&x, &w, bias)? * &probe)?.sum_all()?.backward()?;
                    let reference = (composed(&x, &w, bias)? * &probe)?.sum_all()?.backward()?;
                    let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                    let mut vars = vec![("x", &x), ("weight", &w)];
                    if with_bias {
                        vars.push(("bias", &b));
                    }
                    let case = format!("{dtype:?} {batch}×{t} bias={with_bias}");
                    assert_gradients_match(&ours, &reference, &vars, tolerance, &case)?;
                }
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 5), DType::F32, &dev)?;
        let w = Tensor::zeros((3, 4), DType::F32, &dev)?;
        let error = linear(&x, &w, None).unwrap_err().to_string();
        assert!(
            error.contains("[2, 5]") && error.contains("[3, 4]"),
            "{error}"
        );
        let w = Tensor::zeros((3, 5), DType::F32, &dev)?;
        let b = Tensor::zeros(4, DType::F32, &dev)?;
        let error = linear(&x, &w, Some(&b)).unwrap_err().to_string();
        assert!(error.contains("bias is [4]"), "{error}");
        Ok(())
    }
}
