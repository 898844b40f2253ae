//! Shared CPU helpers for the custom ops: the float trait the kernels are generic over,
//! access to contiguous storage slices, strided row offsets, and a gemm entry point that
//! reuses candle's CPU matmul on strided views without copying the operands.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Storage, Tensor, WithDType};
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

/// Error for a dtype that the CPU kernel of `op` does not handle.
pub(crate) fn unsupported_dtype(op: &str, storage: &CpuStorage) -> candle_core::Error {
    let dtype = storage.dtype();
    candle_core::Error::Msg(format!(
        "{op}: unsupported dtype {dtype:?} on the cpu (f32 and f64 are supported; the public \
         wrappers convert bf16/f16 to f32)"
    ))
}

/// Returns the elements of a contiguous tensor as a slice, or an error naming `op`.
pub(crate) fn contiguous_slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: expected a contiguous input, got layout {layout:?}"),
    }
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

    fn layout(&self, rows: usize, cols: usize) -> Layout {
        Layout::new(
            Shape::from((rows, cols)),
            vec![self.row_stride, self.col_stride],
            self.offset,
        )
    }
}

/// `lhs [m, k] @ rhs [k, n]` as a new row-major `m × n` vector, using candle's CPU gemm
/// (multi-threaded) directly on the strided views.
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
    let out = lhs.storage.matmul(
        rhs.storage,
        (1, m, n, k),
        &lhs.layout(m, k),
        &rhs.layout(k, n),
    )?;
    T::cpu_storage_data(out)
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
