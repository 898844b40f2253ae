// GRPO clipped objective with optional k3 KL, mirroring src/ops/grpo_loss.rs, computed in f64
// like the CPU op. The constant inputs (old/ref log-probs, advantages, mask) and the
// aggregation weight of each row are prepared on the host and uploaded; only `logp` is in the
// storage type.
//
// Forward: a single block (GRPO_THREADS threads) strides over the B·T tokens and reduces
// [loss, clipped count, Σ kl, Σ ratio] with block_sum in f64, then thread 0 writes
// [loss, clip_fraction, mean_kl, mean_ratio] (f32). Backward: one thread per token.
#include "common.cuh"

using namespace distill;

// Same layout as `GrpoParams` in src/ops/cuda/grpo_loss.rs.
struct GrpoParams {
    double eps_low, eps_high, beta;
    double per_token;  // 1 / max(unmasked tokens, 1)
    uint64_t tokens;   // B·T
    uint32_t seq_len;
    uint32_t has_ref;
};

// The per-token terms of token i (unmasked): objective, its derivative, kl and its derivative.
struct TokenTerms {
    double ratio, objective, d_objective, kl, d_kl;
    bool clip_active;
};

__device__ TokenTerms token_terms(double logp, double old_logp, const double *ref_logp, double adv,
                                  size_t i, const GrpoParams &p) {
    TokenTerms t;
    t.ratio = exp(logp - old_logp);
    const double unclipped = t.ratio * adv;
    const double clipped_ratio = fmin(fmax(t.ratio, 1.0 - p.eps_low), 1.0 + p.eps_high);
    t.clip_active = clipped_ratio * adv < unclipped;
    t.objective = t.clip_active ? clipped_ratio * adv : unclipped;
    t.d_objective = t.clip_active ? 0.0 : unclipped;
    t.kl = 0.0;
    t.d_kl = 0.0;
    if (p.has_ref) {
        const double delta = ref_logp[i] - logp;
        t.kl = exp(delta) - delta - 1.0;
        t.d_kl = 1.0 - exp(delta);
    }
    return t;
}

template <typename T>
__device__ void grpo_fwd(const T *logp, const double *old_logp, const double *ref_logp,
                         const double *advantages, const uint8_t *mask, const double *row_weight,
                         float *out, GrpoParams p) {
    __shared__ double scratch[32];
    double loss = 0.0, clipped = 0.0, kl = 0.0, ratio = 0.0;
    for (size_t i = threadIdx.x; i < p.tokens; i += blockDim.x) {
        if (!mask[i]) continue;
        const size_t row = i / p.seq_len;
        const TokenTerms t =
            token_terms((double)to_float(logp[i]), old_logp[i], ref_logp, advantages[row], i, p);
        loss += row_weight[row] * (-t.objective + p.beta * t.kl);
        clipped += t.clip_active ? 1.0 : 0.0;
        kl += t.kl;
        ratio += t.ratio;
    }
    loss = block_sum(loss, scratch);
    clipped = block_sum(clipped, scratch);
    kl = block_sum(kl, scratch);
    ratio = block_sum(ratio, scratch);
    if (threadIdx.x == 0) {
        out[0] = (float)loss;
        out[1] = (float)(clipped * p.per_token);
        out[2] = (float)(kl * p.per_token);
        out[3] = (float)(ratio * p.per_token);
    }
}

// grad[i] = row_weight·(-d_objective + beta·d_kl)·upstream[0] for unmasked tokens, else 0.
template <typename T>
__device__ void grpo_bwd(const T *logp, const double *old_logp, const double *ref_logp,
                         const double *advantages, const uint8_t *mask, const double *row_weight,
                         const float *upstream, T *grad, GrpoParams p) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.tokens; i += stride) {
        double g = 0.0;
        if (mask[i]) {
            const size_t row = i / p.seq_len;
            const TokenTerms t = token_terms((double)to_float(logp[i]), old_logp[i], ref_logp,
                                             advantages[row], i, p);
            g = row_weight[row] * (-t.d_objective + p.beta * t.d_kl) * (double)upstream[0];
        }
        grad[i] = from_float<T>((float)g);
    }
}

#define GRPO_ENTRIES(T, S)                                                                      \
    extern "C" __global__ void grpo_fwd_##S(                                                   \
        const T *logp, const double *old_logp, const double *ref_logp,                         \
        const double *advantages, const uint8_t *mask, const double *row_weight, float *out,   \
        GrpoParams p) {                                                                        \
        grpo_fwd<T>(logp, old_logp, ref_logp, advantages, mask, row_weight, out, p);           \
    }                                                                                          \
    extern "C" __global__ void grpo_bwd_##S(                                                   \
        const T *logp, const double *old_logp, const double *ref_logp,                         \
        const double *advantages, const uint8_t *mask, const double *row_weight,               \
        const float *upstream, T *grad, GrpoParams p) {                                        \
        grpo_bwd<T>(logp, old_logp, ref_logp, advantages, mask, row_weight, upstream, grad, p); \
    }

DISTILL_FOR_EACH_FLOAT(GRPO_ENTRIES)
