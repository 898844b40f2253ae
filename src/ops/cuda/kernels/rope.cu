// Rotary position embedding of `x [B, H, T, D]` by angles `cos`/`sin` of shape `[B, T, D/2]`
// (per_row = 1) or `[T, D/2]` (per_row = 0), mirroring src/ops/rope.rs. Pair p of a row is
// channels (p, p + D/2) for the half-split layout and (2p, 2p + 1) for the interleaved one;
// `(a, b) -> (a·cos - b·sin, b·cos + a·sin)`, with sin negated when `inverse` (the backward).
//
// Mapping: one thread per pair (grid-stride loop over B·H·T·D/2 pairs); each thread reads its
// two channels and writes both, so every output element is written exactly once.
#include "common.cuh"

using namespace distill;

template <typename T>
__device__ void rope(const T *x, const T *cos, const T *sin, T *y, uint32_t batch, uint32_t heads,
                     uint32_t seq, uint32_t half, uint32_t per_row, uint32_t interleaved,
                     uint32_t inverse) {
    const size_t pairs = (size_t)batch * heads * seq * half;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < pairs; idx += stride) {
        const size_t row = idx / half;  // index over B·H·T
        const uint32_t p = (uint32_t)(idx % half);
        const size_t pos = row % seq;
        const size_t b = row / ((size_t)heads * seq);
        const size_t angle_row = per_row ? b * seq + pos : pos;
        const float c = to_float(cos[angle_row * half + p]);
        float s = to_float(sin[angle_row * half + p]);
        if (inverse) s = -s;
        const size_t base = row * 2 * half;
        const size_t i = base + (interleaved ? 2 * p : p);
        const size_t j = base + (interleaved ? 2 * p + 1 : p + half);
        const float a = to_float(x[i]), bb = to_float(x[j]);
        y[i] = from_float<T>(a * c - bb * s);
        y[j] = from_float<T>(bb * c + a * s);
    }
}

#define ROPE_ENTRY(T, S)                                                                         \
    extern "C" __global__ void rope_##S(const T *x, const T *cos, const T *sin, T *y,          \
                                        uint32_t batch, uint32_t heads, uint32_t seq,          \
                                        uint32_t half, uint32_t per_row, uint32_t interleaved, \
                                        uint32_t inverse) {                                    \
        rope<T>(x, cos, sin, y, batch, heads, seq, half, per_row, interleaved, inverse);       \
    }

DISTILL_FOR_EACH_FLOAT(ROPE_ENTRY)
