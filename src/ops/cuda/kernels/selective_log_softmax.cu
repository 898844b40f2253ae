// Selective log-softmax over vocabulary chunks, mirroring src/ops/selective_log_softmax.rs.
// The logits of one chunk, `z [N, c]` (f32, produced by a cuBLAS gemm on the Rust side), are
// folded into per-row running statistics; the backward turns a recomputed chunk into the
// gradient of the logits, which two more gemms turn into the gradients of hidden and lm_head.
//
// Statistics `stats [4, N]` (f32): running max m, Σ e, Σ e·(z - m) with e = exp(z - m), and the
// target's logit. Packed forward output `[logp (N), entropy (N), lse (N)]` (f32).
#include "common.cuh"

using namespace distill;

constexpr uint32_t IGNORE_TARGET = 0xffffffffu;

// Thread per row: m = -inf, sums = 0, target logit = 0.
extern "C" __global__ void sls_init_stats(float *stats, uint32_t n) {
    const uint32_t r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    stats[r] = -INFINITY;
    stats[n + r] = 0.f;
    stats[2 * (size_t)n + r] = 0.f;
    stats[3 * (size_t)n + r] = 0.f;
}

// Thread per row: records the first (lowest index) target that is neither ignored nor below
// `vocab` as (index << 32 | target) with atomicMin; `first_bad` starts at all ones.
extern "C" __global__ void sls_check_targets(const uint32_t *targets, uint32_t n, uint32_t vocab,
                                             unsigned long long *first_bad) {
    const uint32_t r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    const uint32_t t = targets[r];
    if (t != IGNORE_TARGET && t >= vocab)
        atomicMin(first_bad, ((unsigned long long)r << 32) | t);
}

// One warp per row (8 warps per block): folds the chunk z[r, 0..c) (vocabulary ids c0..c0+c)
// into the row's statistics. The running sums are rebased onto the new max as in the CPU op.
extern "C" __global__ void sls_update_stats(const float *z, const uint32_t *targets, float *stats,
                                            uint32_t n, uint32_t c, uint32_t c0) {
    const size_t r = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const uint32_t lane = threadIdx.x & 31;
    if (r >= n) return;
    const float *zr = z + r * c;
    float chunk_max = -INFINITY;
    for (uint32_t j = lane; j < c; j += 32) chunk_max = fmaxf(chunk_max, zr[j]);
    chunk_max = warp_max(chunk_max);
    const float old_max = stats[r];
    const float new_max = fmaxf(old_max, chunk_max);
    float sum = 0.f, weighted = 0.f;
    for (uint32_t j = lane; j < c; j += 32) {
        const float shifted = zr[j] - new_max;
        const float e = expf(shifted);
        sum += e;
        weighted += e * shifted;
    }
    sum = warp_sum(sum);
    weighted = warp_sum(weighted);
    if (lane != 0) return;
    float old_sum = stats[n + r], old_weighted = stats[2 * (size_t)n + r];
    if (old_sum > 0.f) {
        const float scale = expf(old_max - new_max);
        old_weighted = scale * (old_weighted + (old_max - new_max) * old_sum);
        old_sum *= scale;
    }
    stats[r] = new_max;
    stats[n + r] = old_sum + sum;
    stats[2 * (size_t)n + r] = old_weighted + weighted;
    const uint32_t t = targets[r];
    if (t != IGNORE_TARGET && t >= c0 && t - c0 < c) stats[3 * (size_t)n + r] = zr[t - c0];
}

// Thread per row: out = [logp, entropy, lse]; logp and entropy are 0 at ignored targets.
extern "C" __global__ void sls_finalize(const float *stats, const uint32_t *targets, float *out,
                                        uint32_t n) {
    const uint32_t r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    const float max = stats[r], sum = stats[n + r];
    const float weighted = stats[2 * (size_t)n + r], target_logit = stats[3 * (size_t)n + r];
    const float log_sum = logf(sum);
    out[2 * (size_t)n + r] = max + log_sum;
    const bool ignored = targets[r] == IGNORE_TARGET;
    out[r] = ignored ? 0.f : target_logit - max - log_sum;
    out[n + r] = ignored ? 0.f : log_sum - weighted / sum;
}

// Thread per element of the chunk (grid-stride): the gradient of the logits,
// dz = -g_logp·p - g_ent·p·(log p + H) (+ g_logp at the target), 0 for ignored rows, from the
// recomputed logits z [N, c], the saved [logp, entropy, lse] and the gradient [g_logp, g_ent, ·].
template <typename T>
__device__ void sls_grad_logits(const float *z, const uint32_t *targets, const float *saved,
                                const float *grad, T *dz, uint32_t n, uint32_t c, uint32_t c0) {
    const size_t total = (size_t)n * c;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const size_t r = idx / c;
        const uint32_t j = (uint32_t)(idx % c);
        const uint32_t t = targets[r];
        float g = 0.f;
        if (t != IGNORE_TARGET) {
            const float g_logp = grad[r], g_ent = grad[n + r];
            const float log_prob = z[idx] - saved[2 * (size_t)n + r];
            const float prob = expf(log_prob);
            g = -g_logp * prob - g_ent * prob * (log_prob + saved[n + r]);
            if (t == c0 + j) g += g_logp;
        }
        dz[idx] = from_float<T>(g);
    }
}

// Grid-stride copy of f32 values into the storage type.
template <typename T> __device__ void sls_cast(const float *src, T *dst, uint64_t len) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += stride)
        dst[i] = from_float<T>(src[i]);
}

#define SLS_ENTRIES(T, S)                                                                         \
    extern "C" __global__ void sls_grad_logits_##S(const float *z, const uint32_t *targets,     \
                                                   const float *saved, const float *grad, T *dz, \
                                                   uint32_t n, uint32_t c, uint32_t c0) {        \
        sls_grad_logits<T>(z, targets, saved, grad, dz, n, c, c0);                               \
    }                                                                                            \
    extern "C" __global__ void sls_cast_##S(const float *src, T *dst, uint64_t len) {           \
        sls_cast<T>(src, dst, len);                                                              \
    }

DISTILL_FOR_EACH_FLOAT(SLS_ENTRIES)
