//! `y = x · Wᵀ (+ b)`, the projection of every linear layer, as one differentiable op.
//!
//! On the CPU the forward and the backward are each one node of the autograd graph: candle's
//! composition (reshape, transpose, matmul, broadcast bias add, reshape) costs a zero-filled
//! gradient buffer and an add pass over the activation for every one of those nodes in the
//! backward. Few-row products (decoding: a handful of rows against a whole weight matrix) use
//! a kernel that reads each weight row in place, once per block of input rows, while the input
//! rows stay in L1 — a general gemm spends most of its time packing the weight into panels on
//! every call. Many-row products (training, long prefills) and both products of the backward use
//! the gemm crate's kernels (those under candle's matmul) on the operands in place, through
//! `ops::cpu::gemm`.

use super::cpu::{
    contiguous_slice, contiguous_start, cpu_float_operands, cpu_tensor, gemm, unsupported_dtype,
    with_cpu_storage, MatView,
};
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;

const OP_NAME: &str = "linear";

/// Largest number of input rows sent to the few-row kernel; above it candle's gemm wins.
pub const FEW_ROWS_MAX: usize = 64;

/// Products smaller than this run on the calling thread: waking the pool costs more than the
/// tens of microseconds they take.
const PARALLEL_MIN_MULTIPLY_ADDS: usize = 1 << 20;

/// Weight rows per block: the block is reused from cache by every group of input rows.
const WEIGHT_ROWS_PER_BLOCK: usize = 32;

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

/// `x [m, k] · w [n, k]ᵀ` into a new row-major `[m, n]` buffer.
fn few_rows_matmul(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    let out = OutputColumns {
        ptr: y.as_mut_ptr(),
        row_len: n,
    };
    let blocks = n.div_ceil(WEIGHT_ROWS_PER_BLOCK);
    let run_block = |block: usize| {
        let first = block * WEIGHT_ROWS_PER_BLOCK;
        let last = (first + WEIGHT_ROWS_PER_BLOCK).min(n);
        block_product(x, m, k, w, first..last, &out);
    };
    if m * n * k >= PARALLEL_MIN_MULTIPLY_ADDS {
        (0..blocks).into_par_iter().for_each(run_block);
    } else {
        (0..blocks).for_each(run_block);
    }
    y
}

/// The `[m, n]` output, shared by the tasks: each task writes only the columns of its own block
/// of weight rows, so writes never overlap.
struct OutputColumns {
    ptr: *mut f32,
    row_len: usize,
}

// SAFETY: tasks write disjoint column ranges of the buffer, which outlives the parallel loop.
unsafe impl Sync for OutputColumns {}

impl OutputColumns {
    /// Writes `y[row, column]`.
    ///
    /// # Safety
    /// `row` and `column` are in bounds and no other task writes this column.
    unsafe fn write(&self, row: usize, column: usize, value: f32) {
        *self.ptr.add(row * self.row_len + column) = value;
    }
}

/// `y[i, j] = x[i] · w[j]` for every input row `i` and every weight row `j` in `columns`.
fn block_product(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    columns: std::ops::Range<usize>,
    out: &OutputColumns,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above); `columns` is this task's.
        unsafe { avx2::block_product(x, m, k, w, columns, out) };
        return;
    }
    for j in columns {
        let w_row = &w[j * k..(j + 1) * k];
        for i in 0..m {
            // SAFETY: `j` belongs to this task's block; `i < m`, `j < n`.
            unsafe { out.write(i, j, dot(&x[i * k..(i + 1) * k], w_row)) };
        }
    }
}

/// Portable dot product with eight independent partial sums (vectorises on any target).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut partial = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for l in 0..8 {
            partial[l] += ca[l] * cb[l];
        }
    }
    partial.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2/FMA micro-kernels: `MR` input rows by `NR` weight rows, `MR × NR` accumulators of
    //! eight lanes each; the input rows are FMA memory operands, so 4 × 3 uses 15 registers.
    use super::OutputColumns;
    use std::arch::x86_64::*;

    /// AVX2 version of [`super::block_product`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA, and no other task may write `columns`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block_product(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[f32],
        columns: std::ops::Range<usize>,
        out: &OutputColumns,
    ) {
        let mut i = 0;
        while i < m {
            match m - i {
                1 => tile::<1, 4>(x, i, k, w, columns.clone(), out),
                2 => tile::<2, 4>(x, i, k, w, columns.clone(), out),
                3 => tile::<3, 4>(x, i, k, w, columns.clone(), out),
                _ => tile::<4, 3>(x, i, k, w, columns.clone(), out),
            }
            i += 4;
        }
    }

    /// Input rows `i..i + MR` against every weight row of `columns`, `NR` at a time.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const MR: usize, const NR: usize>(
        x: &[f32],
        i: usize,
        k: usize,
        w: &[f32],
        columns: std::ops::Range<usize>,
        out: &OutputColumns,
    ) {
        let mut j = columns.start;
        while j + NR <= columns.end {
            let sums = micro::<MR, NR>(x, i, k, w, j);
            for (r, row_sums) in sums.iter().enumerate() {
                for (c, &s) in row_sums.iter().enumerate() {
                    out.write(i + c, j + r, s);
                }
            }
            j += NR;
        }
        while j < columns.end {
            let sums = micro::<MR, 1>(x, i, k, w, j);
            for (c, &s) in sums[0].iter().enumerate() {
                out.write(i + c, j, s);
            }
            j += 1;
        }
    }

    /// `result[r][c] = x[i + c] · w[j + r]`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn micro<const MR: usize, const NR: usize>(
        x: &[f32],
        i: usize,
        k: usize,
        w: &[f32],
        j: usize,
    ) -> [[f32; MR]; NR] {
        // No closures in the loop: a closure does not inherit `target_feature`, so an intrinsic
        // inside one becomes a call.
        let mut acc = [[_mm256_setzero_ps(); MR]; NR];
        let x_rows: [&[f32]; MR] = std::array::from_fn(|c| &x[(i + c) * k..(i + c + 1) * k]);
        let w_rows: [&[f32]; NR] = std::array::from_fn(|r| &w[(j + r) * k..(j + r + 1) * k]);
        let full = k / 8 * 8;
        let mut p = 0;
        while p < full {
            let mut wv = [_mm256_setzero_ps(); NR];
            for r in 0..NR {
                wv[r] = _mm256_loadu_ps(w_rows[r].as_ptr().add(p));
            }
            for c in 0..MR {
                let xv = _mm256_loadu_ps(x_rows[c].as_ptr().add(p));
                for r in 0..NR {
                    acc[r][c] = _mm256_fmadd_ps(xv, wv[r], acc[r][c]);
                }
            }
            p += 8;
        }
        let mut result = [[0f32; MR]; NR];
        for r in 0..NR {
            if MR == 4 {
                let sums = sum_lanes_of_four(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
                result[r][..4].copy_from_slice(&sums);
            } else {
                for c in 0..MR {
                    result[r][c] = horizontal_sum(acc[r][c]);
                }
            }
            for c in 0..MR {
                for q in full..k {
                    result[r][c] += x_rows[c][q] * w_rows[r][q];
                }
            }
        }
        result
    }

    /// The lane sums of four vectors at once (three horizontal adds and one add instead of four
    /// separate reductions).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum_lanes_of_four(a: __m256, b: __m256, c: __m256, d: __m256) -> [f32; 4] {
        let pairs = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        let sums = _mm_add_ps(
            _mm256_castps256_ps128(pairs),
            _mm256_extractf128_ps(pairs, 1),
        );
        let mut out = [0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), sums);
        out
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn horizontal_sum(v: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
        let single = _mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1));
        _mm_cvtss_f32(single)
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
