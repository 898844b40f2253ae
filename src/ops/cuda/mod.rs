//! CUDA paths of the custom ops (feature `cuda`): the launch code called by each op struct's
//! `cuda_fwd`, one module per op family, and the helpers they share.
//!
//! The kernels are in `kernels/<family>.cu` (one file per op family, helpers in
//! `kernels/common.cuh`). `build.rs` compiles each file to PTX with nvcc; the PTX is embedded
//! here and JIT-loaded on first use through `CudaDevice::get_or_load_custom_func`. Kernels read
//! and write f32, bf16 or f16 storage and accumulate in f32 (the GRPO loss in f64, as on the
//! CPU). Saved statistics (attention's `[o, lse]`, the selective log-softmax's
//! `[logp, entropy, lse]`, the GRPO loss and metrics) are always f32, whatever the input dtype:
//! the public wrappers convert them back to the input dtype, as they do on the CPU.
//!
//! Every kernel writes every element of the buffers it returns, so outputs are allocated
//! uninitialised. Inputs must be contiguous (the wrappers make them so), like on the CPU.

pub(super) mod attention;
mod gemm;
pub(super) mod grpo_loss;
pub(super) mod rms_norm;
pub(super) mod rope;
pub(super) mod selective_log_softmax;
pub(super) mod softmax;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublas::sys::cudaDataType;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, DeviceRepr, LaunchArgs, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result, Storage, WithDType};
use half::{bf16, f16};
use std::sync::Arc;

/// One PTX module: the name the device caches it under, and its text.
pub(super) struct Module {
    name: &'static str,
    ptx: &'static str,
}

/// The PTX that build.rs compiled from `kernels/<file>.cu`.
macro_rules! ptx_module {
    ($file:literal) => {
        $crate::ops::cuda::Module::new(
            concat!("distill_", $file),
            include_str!(concat!(env!("OUT_DIR"), "/", $file, ".ptx")),
        )
    };
}
use ptx_module;

impl Module {
    /// A module cached as `name`, compiled from `ptx`.
    pub(super) const fn new(name: &'static str, ptx: &'static str) -> Self {
        Self { name, ptx }
    }
}

/// Storage types the kernels are instantiated for.
pub(super) trait KernelFloat: CudaDType + DeviceRepr + ValidAsZeroBits + WithDType {
    /// Suffix of the kernel entry points for this type (`rms_norm_fwd_bf16`).
    const SUFFIX: &'static str;
    /// The type as cuBLAS names it.
    const CUBLAS: cudaDataType;
}

impl KernelFloat for f32 {
    const SUFFIX: &'static str = "f32";
    const CUBLAS: cudaDataType = cudaDataType::CUDA_R_32F;
}

impl KernelFloat for bf16 {
    const SUFFIX: &'static str = "bf16";
    const CUBLAS: cudaDataType = cudaDataType::CUDA_R_16BF;
}

impl KernelFloat for f16 {
    const SUFFIX: &'static str = "f16";
    const CUBLAS: cudaDataType = cudaDataType::CUDA_R_16F;
}

/// Runs `$body` with the type alias `$t` set to the [`KernelFloat`] matching `$dtype`, or
/// returns an error naming `$op` for any other dtype.
macro_rules! with_float_type {
    ($dtype:expr, $op:expr, $t:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            candle_core::DType::F16 => {
                type $t = half::f16;
                $body
            }
            other => candle_core::bail!(
                "{}: unsupported dtype {other:?} on cuda (f32, bf16 and f16 are supported)",
                $op
            ),
        }
    };
}
use with_float_type;

/// A kernel loaded on a device, launched on the device's stream.
pub(super) struct Kernel {
    func: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    /// Entry point `name` of `module`, loading the module on first use.
    pub(super) fn load(dev: &CudaDevice, module: &Module, name: &str) -> Result<Self> {
        let func = dev
            .get_or_load_custom_func(name, module.name, module.ptx)?
            .into_cuda_function();
        Ok(Self {
            func,
            stream: dev.cuda_stream(),
        })
    }

    /// The per-type entry point `<base>_<suffix>` of `module`.
    pub(super) fn load_for<T: KernelFloat>(
        dev: &CudaDevice,
        module: &Module,
        base: &str,
    ) -> Result<Self> {
        Self::load(dev, module, &format!("{base}_{}", T::SUFFIX))
    }

    /// Allows `bytes` of dynamic shared memory per block (needed above 48 KiB).
    pub(super) fn allow_shared_memory(&self, bytes: u32) -> Result<()> {
        use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
        if bytes > 48 * 1024 {
            self.func
                .set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
                .w()?;
        }
        Ok(())
    }

    /// An argument list for one launch.
    pub(super) fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

/// Launches `args` with `cfg`; the caller guarantees that the arguments match the kernel's
/// signature (types and order).
pub(super) fn launch(mut args: LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    // SAFETY: each call site pushes exactly the parameters of the `extern "C"` entry point it
    // loaded, in order, with matching types (device buffers as CudaSlice/CudaView, scalars as
    // u32/u64/i32/f32, structs as #[repr(C)] mirrors of the kernel's structs).
    unsafe { args.launch(cfg) }.w()?;
    Ok(())
}

/// `grid` blocks of `block` threads with `shared` bytes of dynamic shared memory.
pub(super) fn config(grid: (u32, u32), block: u32, shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: shared,
    }
}

/// Number of blocks of `per_block` items covering `items` (at least 1), as a grid dimension.
pub(super) fn blocks(items: usize, per_block: usize, op: &str) -> Result<u32> {
    to_u32(items.div_ceil(per_block).max(1), op, "grid size")
}

/// Blocks for a grid-stride loop over `items`: enough to fill the GPU, capped.
pub(super) fn stride_blocks(items: usize, per_block: usize) -> u32 {
    items.div_ceil(per_block).clamp(1, 65_535) as u32
}

/// `value` as a kernel's u32 size parameter, or an error naming `op` and `what`.
pub(super) fn to_u32(value: usize, op: &str, what: &str) -> Result<u32> {
    match u32::try_from(value) {
        Ok(v) => Ok(v),
        Err(_) => bail!("{op}: {what} {value} exceeds the cuda kernels' 32-bit sizes"),
    }
}

/// The elements of a contiguous `storage` of type `T`, or an error naming `op`.
pub(super) fn contiguous<'a, T: CudaDType + WithDType>(
    storage: &'a CudaStorage,
    layout: &Layout,
    op: &str,
) -> Result<CudaView<'a, T>> {
    if storage.dtype() != T::DTYPE {
        bail!(
            "{op}: expected a {:?} input, got {:?}",
            T::DTYPE,
            storage.dtype()
        );
    }
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: expected a contiguous input, got layout {layout:?}");
    };
    Ok(storage.as_cuda_slice::<T>()?.slice(start..end))
}

/// The elements of a contiguous tensor's `storage` (obtained with `storage_and_layout`) of
/// type `T`, or an error naming `op` and the tensor (`what`) if it is not on a cuda device.
pub(super) fn tensor_view<'a, T: CudaDType + WithDType>(
    storage: &'a Storage,
    layout: &Layout,
    op: &str,
    what: &str,
) -> Result<CudaView<'a, T>> {
    match storage {
        Storage::Cuda(cuda) => contiguous(cuda, layout, op),
        _ => bail!("{op}: {what} must be on the cuda device of the inputs"),
    }
}

/// An uninitialised device buffer of `len` elements, for kernels that write all of them. At
/// least one element is allocated (the driver rejects empty allocations); a buffer for an
/// empty tensor is never read.
pub(super) fn alloc<T: DeviceRepr>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every caller launches kernels that write all `len` elements before the buffer
    // is read or returned (see each kernel's mapping comment).
    unsafe { dev.alloc::<T>(len.max(1)) }
}

/// A device copy of `values` (one default element when empty: the driver rejects empty
/// allocations).
pub(super) fn upload<T: DeviceRepr + Default + Copy + 'static>(
    dev: &CudaDevice,
    values: &[T],
) -> Result<CudaSlice<T>> {
    if values.is_empty() {
        dev.clone_htod(&[T::default()])
    } else {
        dev.clone_htod(values)
    }
}

/// A zero-filled device buffer of `len` elements (at least one is allocated).
pub(super) fn zeros<T: DeviceRepr + ValidAsZeroBits>(
    dev: &CudaDevice,
    len: usize,
) -> Result<CudaSlice<T>> {
    dev.alloc_zeros::<T>(len.max(1))
}

/// Wraps a finished output buffer as candle storage.
pub(super) fn storage<T: CudaDType>(dev: &CudaDevice, slice: CudaSlice<T>) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, dev.clone())
}

/// A device null pointer, for an optional buffer argument that is absent.
pub(super) const NULL: u64 = 0;

/// Pushes the optional buffer `view`, or a null pointer when it is absent.
pub(super) fn arg_or_null<'a, 'b: 'a, 'c: 'b>(
    args: &mut LaunchArgs<'a>,
    view: &'b Option<CudaView<'c, u32>>,
) {
    match view {
        Some(view) => args.arg(view),
        None => args.arg(&NULL),
    };
}

/// The embedded PTX of every kernel file as `(module name, PTX text)`, e.g. to report its
/// `.version` and `.target` lines.
pub fn ptx_modules() -> [(&'static str, &'static str); 6] {
    [
        &rms_norm::MODULE,
        &rope::MODULE,
        &softmax::MODULE,
        &attention::MODULE,
        &selective_log_softmax::MODULE,
        &grpo_loss::MODULE,
    ]
    .map(|m| (m.name, m.ptx))
}
