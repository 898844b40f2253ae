// Softmax over the last dim (`tk` entries per row), optionally with an additive mask read
// through a broadcast (strided) layout and/or causal structure, and its backward
// dx = y ⊙ (dy - Σ dy ⊙ y); mirrors src/ops/softmax.rs.
//
// Mapping: one warp per row, SOFTMAX_WARPS warps per block (the Rust side launches
// ceil(rows / warps) blocks of 32·warps threads). Lanes stride over the row; max and sum are
// warp reductions. A row whose visible entries are all -inf is written as zeros; entries
// beyond the causal limit are written as zeros. Every element of every row is written.
#include "common.cuh"

using namespace distill;

// Leading dims and strides of the broadcast mask's layout (`rank` ≤ 8 leading dims), plus its
// start offset and the stride of the last dim. Same layout as `MaskLayout` in
// src/ops/cuda/softmax.rs.
struct MaskLayout {
    uint32_t rank;
    uint32_t pad;
    uint64_t dims[8];
    uint64_t strides[8];
    uint64_t start;
    uint64_t col_stride;
};

// Element offset in the mask of entry 0 of `row` (row-major index over the leading dims).
__device__ size_t mask_row_offset(const MaskLayout &m, size_t row) {
    size_t offset = m.start;
    for (int a = (int)m.rank - 1; a >= 0; --a) {
        offset += (row % m.dims[a]) * m.strides[a];
        row /= m.dims[a];
    }
    return offset;
}

// `mask` may be null (no additive mask). `causal_offset` < 0 means no causal structure;
// otherwise row r (query r % tq) sees entries j < min(r % tq + causal_offset + 1, tk).
template <typename T>
__device__ void softmax_fwd(const T *x, const T *mask, MaskLayout ml, T *y, uint64_t rows,
                            uint32_t tk, uint32_t tq, int32_t causal_offset) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const uint32_t lane = threadIdx.x & 31;
    if (row >= rows) return;  // uniform per warp
    const uint32_t visible =
        causal_offset >= 0 ? min((uint32_t)(row % tq) + (uint32_t)causal_offset + 1, tk) : tk;
    const T *xr = x + row * tk;
    T *yr = y + row * tk;
    const size_t mrow = mask ? mask_row_offset(ml, row) : 0;
    auto value = [&](uint32_t j) {
        float v = to_float(xr[j]);
        if (mask) v += to_float(mask[mrow + j * ml.col_stride]);
        return v;
    };
    float max = -INFINITY;
    for (uint32_t j = lane; j < visible; j += 32) max = fmaxf(max, value(j));
    max = warp_max(max);
    if (max == -INFINITY) {  // every entry masked
        for (uint32_t j = lane; j < tk; j += 32) yr[j] = from_float<T>(0.f);
        return;
    }
    float sum = 0.f;
    for (uint32_t j = lane; j < visible; j += 32) sum += expf(value(j) - max);
    const float inv = 1.f / warp_sum(sum);
    for (uint32_t j = lane; j < tk; j += 32)
        yr[j] = from_float<T>(j < visible ? expf(value(j) - max) * inv : 0.f);
}

template <typename T>
__device__ void softmax_bwd(const T *y, const T *g, T *dx, uint64_t rows, uint32_t tk) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const uint32_t lane = threadIdx.x & 31;
    if (row >= rows) return;
    const size_t base = row * tk;
    float dot = 0.f;
    for (uint32_t j = lane; j < tk; j += 32) dot += to_float(y[base + j]) * to_float(g[base + j]);
    dot = warp_sum(dot);
    for (uint32_t j = lane; j < tk; j += 32)
        dx[base + j] = from_float<T>(to_float(y[base + j]) * (to_float(g[base + j]) - dot));
}

#define SOFTMAX_ENTRIES(T, S)                                                                  \
    extern "C" __global__ void softmax_fwd_##S(const T *x, const T *mask, MaskLayout ml, T *y, \
                                               uint64_t rows, uint32_t tk, uint32_t tq,       \
                                               int32_t causal_offset) {                       \
        softmax_fwd<T>(x, mask, ml, y, rows, tk, tq, causal_offset);                          \
    }                                                                                         \
    extern "C" __global__ void softmax_bwd_##S(const T *y, const T *g, T *dx, uint64_t rows,  \
                                               uint32_t tk) {                                 \
        softmax_bwd<T>(y, g, dx, rows, tk);                                                   \
    }

DISTILL_FOR_EACH_FLOAT(SOFTMAX_ENTRIES)
