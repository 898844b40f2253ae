//! Shared CPU helpers for the custom ops: the float trait the kernels are generic over,
//! access to contiguous storage slices, strided row offsets, and a gemm entry point that
//! reuses candle's CPU matmul on strided views without copying the operands.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Storage, Tensor, WithDType};
use rayon::prelude::*;
use std::ops::Neg;

/// Floating point element type the CPU kernels are written for (`f32` and `f64`).
pub(crate) trait Real: WithDType + Neg<Output = Self> {
    /// Negative infinity, used as the neutral element of `max`.
    const NEG_INFINITY: Self;
    /// Natural exponential.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// The larger of two values (NaN-propagation is not relied on).
    fn maximum(self, other: Self) -> Self;
    /// `values[i] = exp(values[i])` for a whole slice: f32 uses a polynomial that vectorises
    /// (within 2 ulp of libm, 0 below -87), f64 the libm `exp`.
    fn exp_in_place(values: &mut [Self]);
    /// Converts from `f64`, rounding when narrowing.
    fn of(v: f64) -> Self {
        Self::from_f64(v)
    }
}

macro_rules! impl_real {
    ($t:ty, $exp_in_place:path) => {
        impl Real for $t {
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn maximum(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            fn exp_in_place(values: &mut [Self]) {
                $exp_in_place(values)
            }
        }
    };
}
impl_real!(f32, super::fast_exp::exp_in_place);
impl_real!(f64, exp_in_place_f64);

fn exp_in_place_f64(values: &mut [f64]) {
    for v in values {
        *v = v.exp();
    }
}

/// Elements below which splitting work across rayon tasks costs more (waking a sleeping worker
/// takes microseconds) than it saves: decoding runs these ops on a handful of rows per step.
const MIN_ELEMENTS_PER_TASK: usize = 16_384;

/// Rows of `row_len` elements per rayon task, so no task gets less than
/// [`MIN_ELEMENTS_PER_TASK`] elements of work.
pub(crate) fn min_rows_per_task(row_len: usize) -> usize {
    (MIN_ELEMENTS_PER_TASK / row_len.max(1)).max(1)
}

/// The vector instruction sets the hand-written CPU kernels come in, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SimdLevel {
    /// Plain Rust, vectorised by the compiler for the build's baseline target (SSE2 on x86-64).
    Portable,
    /// AVX2 with FMA: 8 f32 lanes.
    Avx2,
    /// AVX-512F: 16 f32 lanes.
    Avx512,
}

impl SimdLevel {
    /// Every level this CPU can run, widest last (the kernels' tests run each of them).
    pub(crate) fn available() -> Vec<Self> {
        let mut levels = vec![Self::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                levels.push(Self::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f") {
                levels.push(Self::Avx512);
            }
        }
        levels
    }

    /// The widest level this CPU can run, found once (attention asks for every row of scores).
    pub(crate) fn widest() -> Self {
        static WIDEST: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
        *WIDEST.get_or_init(|| {
            *Self::available()
                .last()
                .expect("the portable level is always available")
        })
    }
}

/// Error for a dtype that the CPU kernel of `op` does not handle.
pub(crate) fn unsupported_dtype(op: &str, storage: &CpuStorage) -> candle_core::Error {
    let dtype = storage.dtype();
    candle_core::Error::Msg(format!(
        "{op}: unsupported dtype {dtype:?} on the cpu (f32 and f64 are supported; the public \
         wrappers convert bf16/f16 to f32)"
    ))
}

/// The element offset of a contiguous layout's first element, or an error naming `op`.
pub(crate) fn contiguous_start(layout: &Layout, op: &str) -> Result<usize> {
    match layout.contiguous_offsets() {
        Some((start, _)) => Ok(start),
        None => bail!("{op}: expected a contiguous input, got layout {layout:?}"),
    }
}

/// Returns the elements of a contiguous tensor as a slice, or an error naming `op`.
pub(crate) fn contiguous_slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [T]> {
    let start = contiguous_start(layout, op)?;
    Ok(&storage.as_slice::<T>()?[start..start + layout.shape().elem_count()])
}

/// Borrows the CPU storage of a contiguous `tensor` and runs `f` on it and the element
/// offset of the tensor's first element.
pub(crate) fn with_cpu_storage<R>(
    tensor: &Tensor,
    op: &str,
    f: impl FnOnce(&CpuStorage, usize) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = tensor.storage_and_layout();
    let Some((start, _)) = layout.contiguous_offsets() else {
        bail!("{op}: expected a contiguous tensor, got layout {layout:?}");
    };
    match &*storage {
        Storage::Cpu(cpu) => f(cpu, start),
        _ => bail!("{op}: expected a cpu tensor"),
    }
}

/// Offsets of the first element of every row (all dims but the last) of a strided layout,
/// and the stride of the last dim. Used to read broadcast masks without materialising them.
pub(crate) fn strided_row_offsets(layout: &Layout) -> (Vec<usize>, usize) {
    let dims = layout.dims();
    let strides = layout.stride();
    let rank = dims.len();
    let last_stride = if rank == 0 { 0 } else { strides[rank - 1] };
    let lead = if rank == 0 {
        &[][..]
    } else {
        &dims[..rank - 1]
    };
    let rows: usize = lead.iter().product();
    let mut offsets = Vec::with_capacity(rows);
    let mut index = vec![0usize; lead.len()];
    for _ in 0..rows {
        let offset: usize = index.iter().zip(strides).map(|(i, s)| i * s).sum();
        offsets.push(layout.start_offset() + offset);
        for axis in (0..lead.len()).rev() {
            index[axis] += 1;
            if index[axis] < lead[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    (offsets, last_stride)
}

/// A matrix operand for [`gemm`]: a storage plus the strided `[rows, cols]` view into it.
pub(crate) struct MatView<'a> {
    /// Storage holding the elements.
    storage: &'a CpuStorage,
    /// Element offset of `(0, 0)`.
    offset: usize,
    /// Stride between consecutive rows.
    row_stride: usize,
    /// Stride between consecutive columns.
    col_stride: usize,
}

impl<'a> MatView<'a> {
    /// Row-major matrix with rows of `row_len` elements, starting at element `offset`.
    pub fn row_major(storage: &'a CpuStorage, offset: usize, row_len: usize) -> Self {
        Self {
            storage,
            offset,
            row_stride: row_len,
            col_stride: 1,
        }
    }

    /// Transpose of the row-major matrix with rows of `row_len` elements at `offset`.
    pub fn transposed(storage: &'a CpuStorage, offset: usize, row_len: usize) -> Self {
        Self {
            storage,
            offset,
            row_stride: 1,
            col_stride: row_len,
        }
    }

    /// `self [m, k] @ rhs [k, n]` as a new row-major storage of the operands' dtype
    /// (f32 or f64), through [`gemm`].
    pub fn times(&self, rhs: &MatView<'_>, m: usize, n: usize, k: usize) -> Result<CpuStorage> {
        match self.storage {
            CpuStorage::F32(_) => Ok(CpuStorage::F32(gemm(self, rhs, m, n, k)?)),
            CpuStorage::F64(_) => Ok(CpuStorage::F64(gemm(self, rhs, m, n, k)?)),
            other => Err(unsupported_dtype("gemm", other)),
        }
    }

    /// The storage from the view's first element on, after checking that a `rows × cols` view
    /// stays inside it.
    fn checked_slice<T: WithDType>(&self, rows: usize, cols: usize) -> Result<&'a [T]> {
        let data = self.storage.as_slice::<T>()?;
        let last = self.offset + (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
        if last >= data.len() {
            bail!(
                "gemm: a {rows} × {cols} view at offset {} with strides ({}, {}) reaches element \
                 {last} of a {}-element storage",
                self.offset,
                self.row_stride,
                self.col_stride,
                data.len()
            );
        }
        Ok(&data[self.offset..])
    }
}

/// `lhs [m, k] @ rhs [k, n]` as a new row-major `m × n` vector, by the gemm crate (the kernels
/// under candle's CPU matmul, multi-threaded) directly on the strided views: no copy of the
/// operands and no zero-fill of the output, which the kernel writes whole.
pub(crate) fn gemm<T: WithDType>(
    lhs: &MatView<'_>,
    rhs: &MatView<'_>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<Vec<T>> {
    if m == 0 || n == 0 {
        return Ok(Vec::new());
    }
    if k == 0 {
        return Ok(vec![T::from_f64(0.0); m * n]);
    }
    let mut out: Vec<T> = Vec::with_capacity(m * n);
    // SAFETY: `out` has room for the `m × n` row-major result; with `accumulate` false the kernel
    // writes every element without reading any, so the length is set only after the call.
    unsafe {
        gemm_raw(out.as_mut_ptr(), lhs, rhs, m, n, k, false)?;
        out.set_len(m * n);
    }
    Ok(out)
}

/// `dst += lhs [m, k] @ rhs [k, n]` for a row-major `m × n` `dst`.
pub(crate) fn gemm_accumulate<T: WithDType>(
    dst: &mut [T],
    lhs: &MatView<'_>,
    rhs: &MatView<'_>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    if dst.len() != m * n {
        bail!(
            "gemm: the output holds {} elements, not {m} × {n}",
            dst.len()
        );
    }
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    // SAFETY: `dst` is an initialised row-major `m × n` buffer (checked above).
    unsafe { gemm_raw(dst.as_mut_ptr(), lhs, rhs, m, n, k, true) }
}

/// Products with fewer multiply-adds than this run on the calling thread.
const PARALLEL_MIN_MULTIPLY_ADDS: usize = 1 << 20;

/// Fewest output rows (or columns) a thread takes: several of the kernel's 16-row tiles.
const MIN_SPAN_PER_THREAD: usize = 64;

/// Part `part` of `0..total` cut into `parts` near-equal consecutive ranges.
fn split(total: usize, parts: usize, part: usize) -> std::ops::Range<usize> {
    total * part / parts..total * (part + 1) / parts
}

/// One `dst (+)= lhs · rhs` over raw checked operands, run by one thread per block of output
/// rows or columns. The gemm crate's own threading splits each product into many small tasks;
/// on two cores it reached 125–170 GFLOP/s at the training shapes where one single-threaded
/// kernel per half of the rows reached 173–187 (AMD EPYC, AVX2).
struct Product<T> {
    dst: *mut T,
    lhs: *const T,
    /// `(row, column)` strides of `lhs`.
    lhs_strides: (isize, isize),
    rhs: *const T,
    /// `(row, column)` strides of `rhs`.
    rhs_strides: (isize, isize),
    /// Columns of `dst` (its row stride) and of `rhs`.
    n: usize,
    /// The inner dimension.
    k: usize,
    accumulate: bool,
}

// SAFETY: the threads write disjoint blocks of `dst` and only read the operands, which outlive
// the parallel loop in `gemm_raw`.
unsafe impl<T> Sync for Product<T> {}

impl<T: WithDType> Product<T> {
    /// The block `rows × columns` of the product, single-threaded.
    fn run(&self, rows: std::ops::Range<usize>, columns: std::ops::Range<usize>) {
        let (lhs_rs, lhs_cs) = self.lhs_strides;
        let (rhs_rs, rhs_cs) = self.rhs_strides;
        let (r0, c0) = (rows.start as isize, columns.start as isize);
        // SAFETY: the block lies inside the product that `gemm_raw` checked against the views'
        // storages and the caller's `dst`; no other thread writes it.
        unsafe {
            gemm::gemm(
                rows.len(),
                columns.len(),
                self.k,
                self.dst.offset(r0 * self.n as isize + c0),
                1,
                self.n as isize,
                self.accumulate,
                self.lhs.offset(r0 * lhs_rs),
                lhs_cs,
                lhs_rs,
                self.rhs.offset(c0 * rhs_cs),
                rhs_cs,
                rhs_rs,
                T::from_f64(1.0),
                T::from_f64(1.0),
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }
}

/// The gemm crate's kernel on checked views: `dst = lhs · rhs`, or `dst += lhs · rhs` when
/// `accumulate`.
///
/// # Safety
/// `dst` must be valid for `m × n` row-major writes (and reads when `accumulate`), and not
/// overlap the operands; `m`, `n` and `k` must be non-zero.
unsafe fn gemm_raw<T: WithDType>(
    dst: *mut T,
    lhs: &MatView<'_>,
    rhs: &MatView<'_>,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<()> {
    if !matches!(T::DTYPE, DType::F16 | DType::F32 | DType::F64) {
        bail!("gemm: unsupported dtype {:?} on the cpu", T::DTYPE);
    }
    let lhs_data = lhs.checked_slice::<T>(m, k)?;
    let rhs_data = rhs.checked_slice::<T>(k, n)?;
    let product = Product {
        dst,
        lhs: lhs_data.as_ptr(),
        lhs_strides: (lhs.row_stride as isize, lhs.col_stride as isize),
        rhs: rhs_data.as_ptr(),
        rhs_strides: (rhs.row_stride as isize, rhs.col_stride as isize),
        n,
        k,
        accumulate,
    };
    let threads = rayon::current_num_threads();
    let parts = if m * n * k < PARALLEL_MIN_MULTIPLY_ADDS {
        1
    } else {
        threads.min(m.max(n) / MIN_SPAN_PER_THREAD).max(1)
    };
    if parts == 1 {
        product.run(0..m, 0..n);
    } else if m >= n {
        (0..parts)
            .into_par_iter()
            .for_each(|part| product.run(split(m, parts, part), 0..n));
    } else {
        (0..parts)
            .into_par_iter()
            .for_each(|part| product.run(0..m, split(n, parts, part)));
    }
    Ok(())
}

/// Whether the f32/f64 CPU kernels take these tensors as they are: all on the CPU, all f32 or all
/// f64.
pub(crate) fn cpu_float_operands(tensors: &[&Tensor]) -> bool {
    let Some(first) = tensors.first() else {
        return false;
    };
    let dtype = first.dtype();
    matches!(dtype, DType::F32 | DType::F64)
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == dtype)
}

/// A CPU tensor of `shape` over an f32 or f64 storage (the result of a kernel that runs outside
/// a custom op, such as a backward's gemm).
pub(crate) fn cpu_tensor(storage: CpuStorage, shape: impl Into<Shape>) -> Result<Tensor> {
    let device = candle_core::Device::Cpu;
    match storage {
        CpuStorage::F32(values) => Tensor::from_vec(values, shape, &device),
        CpuStorage::F64(values) => Tensor::from_vec(values, shape, &device),
        other => Err(unsupported_dtype("cpu_tensor", &other)),
    }
}

/// Largest |ours − reference| over the largest |reference| (at least 1), in f64: the ops' unit
/// tests compare a kernel with candle's composition of the same computation.
#[cfg(test)]
pub(crate) fn max_relative_error(ours: &Tensor, reference: &Tensor) -> Result<f64> {
    let diff = (ours - reference)?.abs()?.flatten_all()?.max(0)?;
    let scale = reference.abs()?.flatten_all()?.max(0)?;
    let diff = diff.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let scale = scale.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok(diff / scale.max(1.0))
}

/// Asserts that every named variable's gradient in `ours` is within `tolerance` (relative, see
/// [`max_relative_error`]) of its gradient in `reference`; `case` prefixes the failure message.
#[cfg(test)]
pub(crate) fn assert_gradients_match(
    ours: &candle_core::backprop::GradStore,
    reference: &candle_core::backprop::GradStore,
    vars: &[(&str, &candle_core::Var)],
    tolerance: f64,
    case: &str,
) -> Result<()> {
    for (name, var) in vars {
        let error = max_relative_error(
            ours.get(var).expect("op gradient"),
            reference.get(var).expect("reference gradient"),
        )?;
        assert!(error < tolerance, "{case}: {name} rel {error}");
    }
    Ok(())
}

/// Converts an f16/bf16 tensor on the CPU to f32 (the wrappers run the f32 kernels for half
/// types) and reports the original dtype so the result can be converted back. Tensors on a
/// cuda device are returned as they are: the CUDA kernels read and write half types natively.
pub(crate) fn widen_half(t: &Tensor) -> Result<(Tensor, DType)> {
    let dtype = t.dtype();
    match dtype {
        DType::BF16 | DType::F16 if !t.device().is_cuda() => Ok((t.to_dtype(DType::F32)?, dtype)),
        _ => Ok((t.clone(), dtype)),
    }
}
