// Shared helpers of the distill custom-op kernels: loads and stores that widen every storage
// type to f32 (all arithmetic is f32, or f64 where the CPU op uses f64), warp and block
// reductions, and the macro that instantiates one `extern "C"` entry point per storage type.
//
// Entry points are named `<kernel>_<suffix>` with suffix f32, bf16 or f16; the Rust side picks
// the name from the tensor's dtype (src/ops/cuda/mod.rs, `KernelFloat::SUFFIX`).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace distill {

constexpr unsigned FULL_WARP = 0xffffffffu;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

// Rounds to the nearest representable value (ties to even), as candle's `to_dtype` does.
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
    return __float2bfloat16(v);
}
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half(v); }

// Sum over the 32 lanes of a warp; every lane gets the result. All lanes must call it.
template <typename F> __device__ __forceinline__ F warp_sum(F v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_WARP, v, offset);
    return v;
}

// Maximum over the 32 lanes of a warp (NaN-ignoring, like Rust's `f32::max`).
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(FULL_WARP, v, offset));
    return v;
}

// Sum over a block whose size is a multiple of 32 (at most 1024); every thread gets the result.
// `scratch` is a shared array of at least 32 elements; the call may be repeated with it.
template <typename F> __device__ F block_sum(F v, F *scratch) {
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // a previous call may still be reading `scratch`
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    F total = lane < (blockDim.x >> 5) ? scratch[lane] : F(0);
    return warp_sum(total);
}

}  // namespace distill

// Instantiates `X(T, suffix)` for every storage type the kernels accept.
#define DISTILL_FOR_EACH_FLOAT(X) \
    X(float, f32)                 \
    X(__nv_bfloat16, bf16)        \
    X(__half, f16)
