//! `y = x · Wᵀ` for the few-row products of decoding (a handful of rows against a whole weight
//! matrix), where a general gemm spends most of its time packing the weight into panels on every
//! call. This kernel reads each weight row in place, once per block of input rows, while the input
//! rows stay in L1; the weight is blocked so a block is reused from L2 across row groups.
//!
//! Many-row products (training, long prefills) go to candle's matmul, which is faster there.

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP_NAME: &str = "linear";

/// Largest number of input rows sent to the few-row kernel; above it candle's gemm wins.
pub const FEW_ROWS_MAX: usize = 64;

/// Products smaller than this run on the calling thread: waking the pool costs more than the
/// tens of microseconds they take.
const PARALLEL_MIN_MULTIPLY_ADDS: usize = 1 << 20;

/// Weight rows per block: the block is reused from cache by every group of input rows.
const WEIGHT_ROWS_PER_BLOCK: usize = 32;

/// `x · weightᵀ` for `x` of shape `[m, k]` and `weight` of shape `[n, k]` (the layout of an HF
/// linear layer), differentiable in both. f32 CPU tensors with at most [`FEW_ROWS_MAX`] rows use
/// the few-row kernel; everything else is candle's matmul.
pub fn linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (m, _) = x.dims2()?;
    let uses_kernel = m <= FEW_ROWS_MAX
        && matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && weight.rank() == 2;
    if uses_kernel {
        x.contiguous()?
            .apply_op2(&weight.contiguous()?, FewRowsMatmul)
    } else {
        x.matmul(&weight.t()?)
    }
}

/// Forward op: inputs `(x [m, k], weight [n, k])`, output `[m, n]`.
struct FewRowsMatmul;

impl CustomOp2 for FewRowsMatmul {
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
        let (m, k) = xl.shape().dims2()?;
        let (n, wk) = wl.shape().dims2()?;
        if k != wk {
            candle_core::bail!("{OP_NAME}: x is [{m}, {k}] but weight is [{n}, {wk}]");
        }
        let x = super::cpu::contiguous_slice::<f32>(xs, xl, OP_NAME)?;
        let w = super::cpu::contiguous_slice::<f32>(ws, wl, OP_NAME)?;
        Ok((
            CpuStorage::F32(few_rows_matmul(x, w, m, n, k)),
            (m, n).into(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_x = grad_y.matmul(weight)?;
        let grad_weight = grad_y.t()?.matmul(x)?;
        Ok((Some(grad_x), Some(grad_weight)))
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
    use super::*;

    #[test]
    fn matches_candle_matmul_on_odd_shapes() -> Result<()> {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 37, 13),
            (5, 67, 29),
            (8, 96, 256),
            (33, 65, 19),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
            let ours = linear(&x, &w)?;
            let reference = x.matmul(&w.t()?)?;
            let diff = (ours - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = reference.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            assert!(diff / scale < 1e-5, "{m}×{n}×{k}: rel {}", diff / scale);
        }
        Ok(())
    }

    #[test]
    fn keeps_gradients_for_tracked_operands() -> Result<()> {
        let x = candle_core::Var::randn(0f32, 1.0, (3, 7), &Device::Cpu)?;
        let w = candle_core::Var::randn(0f32, 1.0, (5, 7), &Device::Cpu)?;
        let grads = linear(&x, &w)?.sum_all()?.backward()?;
        let expected_x = Tensor::ones((3, 5), DType::F32, &Device::Cpu)?.matmul(&w)?;
        let got_x = grads.get(&x).expect("x has a gradient");
        let diff = (got_x - expected_x)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5);
        let expected_w = Tensor::ones((5, 3), DType::F32, &Device::Cpu)?.matmul(&x)?;
        let got_w = grads.get(&w).expect("weight has a gradient");
        let diff = (got_w - expected_w)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5);
        Ok(())
    }
}
