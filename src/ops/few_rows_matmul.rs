//! The few-row product `y = x · wᵀ` of decoding: a handful of input rows against a whole weight
//! matrix `w [n, k]` in the layout of an HF linear layer. Each weight row is read in place, once
//! per block of input rows, while the input rows stay in L1; a general gemm would spend most of its
//! time packing the weight into panels on every call.
//!
//! Every output is a dot product along `k`, so the kernels keep a tile of input rows × weight rows
//! of vector accumulators and sum each one's lanes at the end. The kernel is picked at run time:
//! AVX-512 (16 lanes, and a tree that sums sixteen accumulators' lanes at once, which matters when
//! `k` is short, as in a small model's output layer), else AVX2/FMA, else portable code.

use super::cpu::SimdLevel;
use rayon::prelude::*;

/// Products smaller than this run on the calling thread: waking the pool costs more than the
/// tens of microseconds they take.
const PARALLEL_MIN_MULTIPLY_ADDS: usize = 1 << 20;

/// Weight rows per block: the block is reused from cache by every group of input rows.
const WEIGHT_ROWS_PER_BLOCK: usize = 32;

/// `x [m, k] · w [n, k]ᵀ` into a new row-major `[m, n]` buffer, on the fastest kernel the CPU has.
pub(super) fn few_rows_matmul(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    few_rows_matmul_on(SimdLevel::widest(), x, w, m, n, k)
}

/// [`few_rows_matmul`] on a given instruction-set level, which the CPU must support.
fn few_rows_matmul_on(
    level: SimdLevel,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    assert!(
        x.len() >= m * k && w.len() >= n * k,
        "few_rows_matmul: {m} × {k} input and {n} × {k} weight do not fit slices of {} and {}",
        x.len(),
        w.len()
    );
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
        block_product(level, x, m, k, w, first..last, &out);
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

    /// Writes `y[row, column..column + 4]`.
    ///
    /// # Safety
    /// As [`Self::write`], for each of the four columns.
    unsafe fn write_four(&self, row: usize, column: usize, values: &[f32; 4]) {
        std::ptr::copy_nonoverlapping(
            values.as_ptr(),
            self.ptr.add(row * self.row_len + column),
            4,
        );
    }
}

/// `y[i, j] = x[i] · w[j]` for every input row `i` and every weight row `j` in `columns`.
fn block_product(
    level: SimdLevel,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    columns: std::ops::Range<usize>,
    out: &OutputColumns,
) {
    match level {
        // SAFETY (both): the caller picked a level the CPU supports; `columns` is this task's.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { avx512::block_product(x, m, k, w, columns, out) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { avx2::block_product(x, m, k, w, columns, out) },
        _ => {
            for j in columns {
                let w_row = &w[j * k..(j + 1) * k];
                for i in 0..m {
                    // SAFETY: `j` belongs to this task's block; `i < m`, `j < n`.
                    unsafe { out.write(i, j, dot(&x[i * k..(i + 1) * k], w_row)) };
                }
            }
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
        // Plain loops, no closures: a closure does not inherit `target_feature`, so it is not
        // inlined here (the `array::from_fn` closures this used were out-of-line calls in profiles).
        let mut acc = [[_mm256_setzero_ps(); MR]; NR];
        let mut x_rows: [&[f32]; MR] = [&[]; MR];
        for (c, row) in x_rows.iter_mut().enumerate() {
            *row = &x[(i + c) * k..(i + c + 1) * k];
        }
        let mut w_rows: [&[f32]; NR] = [&[]; NR];
        for (r, row) in w_rows.iter_mut().enumerate() {
            *row = &w[(j + r) * k..(j + r + 1) * k];
        }
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! AVX-512F micro-kernels: up to 4 input rows by 4 weight rows, sixteen accumulators of
    //! sixteen lanes, whose lane sums come out of one reduction tree as one vector.
    use super::OutputColumns;
    use std::arch::x86_64::*;

    /// Lanes per vector.
    const LANES: usize = 16;

    /// AVX-512 version of [`super::block_product`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F, and no other task may write `columns`.
    #[target_feature(enable = "avx512f")]
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
                1 => tile::<1>(x, i, k, w, columns.clone(), out),
                2 => tile::<2>(x, i, k, w, columns.clone(), out),
                3 => tile::<3>(x, i, k, w, columns.clone(), out),
                _ => tile::<4>(x, i, k, w, columns.clone(), out),
            }
            i += 4;
        }
    }

    /// Input rows `i..i + MR` against every weight row of `columns`, four at a time.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const MR: usize>(
        x: &[f32],
        i: usize,
        k: usize,
        w: &[f32],
        columns: std::ops::Range<usize>,
        out: &OutputColumns,
    ) {
        // Plain loops, no closures: a closure does not inherit `target_feature`, so an intrinsic
        // inside one becomes a call.
        let mut x_rows = [x.as_ptr(); MR];
        for (c, row) in x_rows.iter_mut().enumerate() {
            *row = x[(i + c) * k..(i + c + 1) * k].as_ptr();
        }
        let mut j = columns.start;
        while j + 4 <= columns.end {
            let sums = micro::<MR, 4>(&x_rows, k, w, j);
            for (c, row_sums) in sums[..MR].iter().enumerate() {
                out.write_four(i + c, j, row_sums);
            }
            j += 4;
        }
        while j < columns.end {
            let sums = micro::<MR, 1>(&x_rows, k, w, j);
            for (c, row_sums) in sums[..MR].iter().enumerate() {
                out.write(i + c, j, row_sums[0]);
            }
            j += 1;
        }
    }

    /// `result[c][r]` is `x_rows[c] · w[j + r]` (`c < MR ≤ 4`, `r < NR ≤ 4`): each input row's
    /// sums are four consecutive outputs.
    #[target_feature(enable = "avx512f")]
    unsafe fn micro<const MR: usize, const NR: usize>(
        x_rows: &[*const f32; MR],
        k: usize,
        w: &[f32],
        j: usize,
    ) -> [[f32; 4]; 4] {
        let mut w_rows = [w.as_ptr(); NR];
        for (r, row) in w_rows.iter_mut().enumerate() {
            *row = w[(j + r) * k..(j + r + 1) * k].as_ptr();
        }
        let mut acc = [_mm512_setzero_ps(); 16];
        let full = k / LANES * LANES;
        let mut p = 0;
        while p < full {
            let mut wv = [_mm512_setzero_ps(); NR];
            for r in 0..NR {
                wv[r] = _mm512_loadu_ps(w_rows[r].add(p));
            }
            for c in 0..MR {
                let xv = _mm512_loadu_ps(x_rows[c].add(p));
                for r in 0..NR {
                    acc[4 * c + r] = _mm512_fmadd_ps(xv, wv[r], acc[4 * c + r]);
                }
            }
            p += LANES;
        }
        if p < k {
            // The last `k - p` elements, with the lanes past the row's end neither read nor added.
            let mask: __mmask16 = ((1u32 << (k - p)) - 1) as __mmask16;
            let mut wv = [_mm512_setzero_ps(); NR];
            for r in 0..NR {
                wv[r] = _mm512_maskz_loadu_ps(mask, w_rows[r].add(p));
            }
            for c in 0..MR {
                let xv = _mm512_maskz_loadu_ps(mask, x_rows[c].add(p));
                for r in 0..NR {
                    acc[4 * c + r] = _mm512_fmadd_ps(xv, wv[r], acc[4 * c + r]);
                }
            }
        }
        lane_sums(&acc)
    }

    /// `result[q / 4][q % 4]` is the sum of the sixteen lanes of `v[q]`: a tree of 30 shuffles
    /// and 15 adds, where summing each vector on its own takes 4 shuffles, 4 adds and a scalar
    /// move apiece.
    #[target_feature(enable = "avx512f")]
    unsafe fn lane_sums(v: &[__m512; 16]) -> [[f32; 4]; 4] {
        // Level 1: pairs (a, b) → per 128-bit lane [a0+a2, b0+b2, a1+a3, b1+b3].
        let mut pairs = [_mm512_setzero_ps(); 8];
        for (q, pair) in pairs.iter_mut().enumerate() {
            let (a, b) = (v[2 * q], v[2 * q + 1]);
            *pair = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        }
        // Level 2: pairs of pairs → per 128-bit lane the partial sums of four vectors, in order.
        let mut quads = [_mm512_setzero_ps(); 4];
        for (q, quad) in quads.iter_mut().enumerate() {
            let (a, b) = (
                _mm512_castps_pd(pairs[2 * q]),
                _mm512_castps_pd(pairs[2 * q + 1]),
            );
            *quad = _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
            );
        }
        // Levels 3 and 4: add the four 128-bit lanes of each quad; 128-bit lane L of the result
        // holds vectors 4L..4L + 4.
        let sums = lane_quarters_added(
            lane_quarters_added(quads[0], quads[1]),
            lane_quarters_added(quads[2], quads[3]),
        );
        let mut result = [[0f32; 4]; 4];
        _mm512_storeu_ps(result.as_mut_ptr().cast(), sums);
        result
    }

    /// 128-bit lanes `[a0 + a1, a2 + a3, b0 + b1, b2 + b3]` of two vectors of four lanes each.
    #[target_feature(enable = "avx512f")]
    unsafe fn lane_quarters_added(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x · wᵀ` in f64, one dot product at a time.
    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                    .sum();
            }
        }
        y
    }

    /// Every kernel the CPU has gives `x · wᵀ`: every remainder of input rows (the tile is 4), of
    /// weight rows (tiles of 4 or 3, blocks of 32) and of the inner dimension (vectors of 8 or
    /// 16 lanes), and a product large enough to run in parallel.
    #[test]
    fn every_kernel_computes_the_product() {
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let shapes = [
            (1, 1, 1),
            (1, 5, 15),
            (2, 7, 16),
            (3, 33, 17),
            (4, 4, 31),
            (5, 65, 128),
            (6, 37, 100),
            (7, 70, 47),
            (9, 3, 200),
            (32, 300, 128),
            (64, 1100, 33),
        ];
        for level in SimdLevel::available() {
            for &(m, n, k) in &shapes {
                let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
                let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
                let ours = few_rows_matmul_on(level, &x, &w, m, n, k);
                let expected = reference(&x, &w, m, n, k);
                for (q, (&y, &e)) in ours.iter().zip(&expected).enumerate() {
                    let scale = (k as f64).sqrt().max(1.0);
                    assert!(
                        (f64::from(y) - e).abs() <= 1e-5 * scale,
                        "{level:?} {m}×{n}×{k}: y[{}, {}] = {y}, expected {e}",
                        q / n,
                        q % n
                    );
                }
            }
        }
    }
}
