//! A column-major `C = op(A)·op(B) + beta·C` through cuBLAS `GemmEx` with f32 compute, on the
//! device's cuBLAS handle (bound to the device stream, like the kernels). The operands may be
//! f32, bf16 or f16 and C may be f32 whatever they are, so half-precision inputs use the
//! tensor cores while the result keeps f32 precision.

use super::KernelFloat;
use candle_core::cuda_backend::cudarc::cublas::result::gemm_ex;
use candle_core::cuda_backend::cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t,
};
use candle_core::cuda_backend::cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, Result};
use std::ffi::c_void;

/// Sizes of one column-major gemm: `op(A)` is `m × k`, `op(B)` is `k × n`, `C` is `m × n`.
pub(super) struct GemmShape {
    /// Whether A is stored transposed (`k × m`, leading dim `lda`).
    pub trans_a: bool,
    /// Whether B is stored transposed (`n × k`, leading dim `ldb`).
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    /// 0 overwrites C, 1 accumulates into it.
    pub beta: f32,
}

/// Elements a column-major `rows × cols` matrix with leading dim `ld` spans.
fn extent(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        ld * (cols - 1) + rows
    }
}

impl GemmShape {
    /// Checks the leading dims and that every operand holds the elements the gemm touches.
    fn check(&self, op: &str, lens: (usize, usize, usize)) -> Result<()> {
        let (a_rows, a_cols) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (b_rows, b_cols) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        let fits = self.lda >= a_rows.max(1)
            && self.ldb >= b_rows.max(1)
            && self.ldc >= self.m.max(1)
            && lens.0 >= extent(a_rows, a_cols, self.lda)
            && lens.1 >= extent(b_rows, b_cols, self.ldb)
            && lens.2 >= extent(self.m, self.n, self.ldc);
        if !fits {
            bail!(
                "{op}: internal error: gemm operands do not match m={} n={} k={}",
                self.m,
                self.n,
                self.k
            );
        }
        Ok(())
    }
}

fn int(value: usize, op: &str) -> Result<i32> {
    match i32::try_from(value) {
        Ok(v) => Ok(v),
        Err(_) => bail!("{op}: matrix size {value} exceeds cuBLAS's 32-bit sizes"),
    }
}

fn operation(transposed: bool) -> cublasOperation_t {
    if transposed {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// `c = op(a)·op(b) + beta·c` with the sizes of `s`.
pub(super) fn gemm<A: KernelFloat, C: KernelFloat>(
    dev: &CudaDevice,
    op: &str,
    s: &GemmShape,
    a: &CudaView<'_, A>,
    b: &CudaView<'_, A>,
    c: &mut CudaViewMut<'_, C>,
) -> Result<()> {
    s.check(op, (a.len(), b.len(), c.len()))?;
    let (m, n, k) = (int(s.m, op)?, int(s.n, op)?, int(s.k, op)?);
    let (lda, ldb, ldc) = (int(s.lda, op)?, int(s.ldb, op)?, int(s.ldc, op)?);
    let stream = dev.cuda_stream();
    let blas = dev.cublas_handle();
    let (a_ptr, _a_sync) = a.device_ptr(&stream);
    let (b_ptr, _b_sync) = b.device_ptr(&stream);
    let (c_ptr, _c_sync) = c.device_ptr_mut(&stream);
    let (alpha, beta) = (1.0f32, s.beta);
    // SAFETY: the operands hold every element the gemm reads or writes (checked above), the
    // scalars are f32 as CUBLAS_COMPUTE_32F requires, and the handle runs on the stream the
    // pointers were recorded on.
    unsafe {
        gemm_ex(
            *blas.handle(),
            operation(s.trans_a),
            operation(s.trans_b),
            m,
            n,
            k,
            (&alpha as *const f32).cast::<c_void>(),
            a_ptr as *const c_void,
            A::CUBLAS,
            lda,
            b_ptr as *const c_void,
            A::CUBLAS,
            ldb,
            (&beta as *const f32).cast::<c_void>(),
            c_ptr as *mut c_void,
            C::CUBLAS,
            ldc,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .w()
}
