// RMS norm over the last dim `d` of `x [rows, d]` with weight `w [d]`, forward and backward,
// mirroring src/ops/rms_norm.rs: r = 1 / sqrt(mean(x²) + eps), y = x·r·w,
// grad_x = r·g·w - x·r³·(Σ g·w·x)/d, grad_w = Σ_rows g·x·r.
//
// Mapping: the row kernels run one block per row (blockDim.x threads striding over the d
// channels, Σ reduced with block_sum). The weight gradient is a column reduction over rows:
// `rms_norm_bwd_weight_partial` gives each (column block, row chunk) pair one block, one thread
// per column, and writes one f32 partial sum per chunk; `rms_norm_bwd_weight_final` adds the
// chunks of each column in a fixed order (deterministic, no atomics).
#include "common.cuh"

using namespace distill;

template <typename T>
__device__ float inverse_rms(const T *row, uint32_t d, float eps, float *scratch) {
    float sum_sq = 0.f;
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float v = to_float(row[j]);
        sum_sq += v * v;
    }
    sum_sq = block_sum(sum_sq, scratch);
    return 1.f / sqrtf(sum_sq / (float)d + eps);
}

// Grid: rows blocks. Writes y[row, :].
template <typename T>
__device__ void rms_norm_fwd(const T *x, const T *w, T *y, uint32_t d, float eps) {
    __shared__ float scratch[32];
    const size_t offset = (size_t)blockIdx.x * d;
    const float r = inverse_rms(x + offset, d, eps, scratch);
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x)
        y[offset + j] = from_float<T>(to_float(x[offset + j]) * r * to_float(w[j]));
}

// Grid: rows blocks. Writes grad_x[row, :] and the row's r into inv_rms[row] (f32).
template <typename T>
__device__ void rms_norm_bwd_rows(const T *x, const T *w, const T *g, T *grad_x, float *inv_rms,
                                  uint32_t d, float eps) {
    __shared__ float scratch[32];
    const size_t offset = (size_t)blockIdx.x * d;
    const float r = inverse_rms(x + offset, d, eps, scratch);
    float dot = 0.f;
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x)
        dot += to_float(g[offset + j]) * to_float(w[j]) * to_float(x[offset + j]);
    dot = block_sum(dot, scratch);
    const float coef = r * r * r * dot / (float)d;
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float gx = r * to_float(g[offset + j]) * to_float(w[j]) - to_float(x[offset + j]) * coef;
        grad_x[offset + j] = from_float<T>(gx);
    }
    if (threadIdx.x == 0) inv_rms[blockIdx.x] = r;
}

// Grid: (ceil(d / blockDim.x), chunks). Thread = column j; block y = rows
// [chunk·rows_per_chunk, ...). Writes partial[chunk, j] = Σ g·x·r over the chunk's rows.
template <typename T>
__device__ void rms_norm_bwd_weight_partial(const T *x, const T *g, const float *inv_rms,
                                            float *partial, uint32_t rows, uint32_t d,
                                            uint32_t rows_per_chunk) {
    const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    const uint32_t first = blockIdx.y * rows_per_chunk;
    const uint32_t last = min(rows, first + rows_per_chunk);
    float acc = 0.f;
    for (uint32_t row = first; row < last; ++row) {
        const size_t idx = (size_t)row * d + j;
        acc += to_float(g[idx]) * to_float(x[idx]) * inv_rms[row];
    }
    partial[(size_t)blockIdx.y * d + j] = acc;
}

// Grid: ceil(d / blockDim.x) blocks, thread = column j. grad_w[j] = Σ_chunk partial[chunk, j].
template <typename T>
__device__ void rms_norm_bwd_weight_final(const float *partial, T *grad_w, uint32_t d,
                                          uint32_t chunks) {
    const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    float acc = 0.f;
    for (uint32_t c = 0; c < chunks; ++c) acc += partial[(size_t)c * d + j];
    grad_w[j] = from_float<T>(acc);
}

#define RMS_NORM_ENTRIES(T, S)                                                                  \
    extern "C" __global__ void rms_norm_fwd_##S(const T *x, const T *w, T *y, uint32_t d,      \
                                                float eps) {                                   \
        rms_norm_fwd<T>(x, w, y, d, eps);                                                      \
    }                                                                                          \
    extern "C" __global__ void rms_norm_bwd_rows_##S(const T *x, const T *w, const T *g,       \
                                                     T *grad_x, float *inv_rms, uint32_t d,    \
                                                     float eps) {                              \
        rms_norm_bwd_rows<T>(x, w, g, grad_x, inv_rms, d, eps);                                \
    }                                                                                          \
    extern "C" __global__ void rms_norm_bwd_weight_partial_##S(                                \
        const T *x, const T *g, const float *inv_rms, float *partial, uint32_t rows,           \
        uint32_t d, uint32_t rows_per_chunk) {                                                 \
        rms_norm_bwd_weight_partial<T>(x, g, inv_rms, partial, rows, d, rows_per_chunk);       \
    }                                                                                          \
    extern "C" __global__ void rms_norm_bwd_weight_final_##S(const float *partial, T *grad_w,  \
                                                             uint32_t d, uint32_t chunks) {    \
        rms_norm_bwd_weight_final<T>(partial, grad_w, d, chunks);                              \
    }

DISTILL_FOR_EACH_FLOAT(RMS_NORM_ENTRIES)
