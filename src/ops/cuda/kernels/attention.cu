// Causal / masked grouped-query attention, flash-attention style, mirroring
// src/ops/attention.rs: q [B, Hq, T, D], k/v [B, Hkv, Tk, D], query head h reads kv head
// h / (Hq / Hkv). Query i may see key j iff j < key_limit(i) (causal: i + Tk - T + 1), the
// key is not padding (key_padding[b, j] != 0) and both carry the same segment id
// (segment_ids[b, i] == segment_ids[b, j]). Memory is linear in T: the forward keeps only the
// per-row log-sum-exp, the backward recomputes probabilities tile by tile from it.
//
// Layouts: o, lse, dO and delta are f32 (`o [B·Hq·T, D]`, `lse [B·Hq·T]`); q, k, v, dq, dk, dv
// are in the storage type T. A row that sees no key has o = 0, lse = -inf and no gradient.
//
// Tiles (all in dynamic shared memory, as f32): KEYS = 32 keys per tile so that lane j of a
// warp owns key j of the tile while computing scores (q·k dot products run over D per lane,
// no shuffles), and lane d owns channels d, d + 32, ... (at most D_PER_LANE of them, so
// D ≤ 256) while accumulating outputs. k and v tiles have a row stride of D + 1 so that 32
// lanes reading 32 different key rows hit 32 different banks.
#include "common.cuh"

using namespace distill;

constexpr uint32_t KEYS = 32;         // keys per tile (= warp size)
constexpr uint32_t D_PER_LANE = 8;    // channels per lane: D ≤ 32 · 8 = 256
constexpr uint32_t FWD_WARPS = 4;     // forward: 128 threads per block
constexpr uint32_t FWD_ROWS = 16;     // forward: query rows per block (4 per warp)
constexpr uint32_t BWD_WARPS = 8;     // backward: 256 threads per block
constexpr uint32_t BWD_ROWS = 16;     // backward: query rows per tile (2 per warp)

// Sizes, scale and masking rules; same layout as `AttentionShape` in src/ops/cuda/attention.rs.
struct AttnShape {
    uint32_t batch, q_heads, kv_heads, q_len, k_len, head_dim;
    float scale;
    uint32_t causal;
};

// One (batch row, query head or kv head) problem and its masks.
struct Masks {
    const uint32_t *key_padding;  // [B, Tk] or null
    const uint32_t *segment_ids;  // [B, T] or null
};

__device__ __forceinline__ uint32_t key_limit(const AttnShape &s, uint32_t i) {
    return s.causal ? i + s.k_len - s.q_len + 1 : s.k_len;
}

__device__ __forceinline__ bool allowed(const AttnShape &s, const Masks &m, uint32_t b, uint32_t i,
                                        uint32_t j) {
    if (j >= key_limit(s, i)) return false;
    if (m.key_padding && m.key_padding[(size_t)b * s.k_len + j] == 0) return false;
    if (m.segment_ids &&
        m.segment_ids[(size_t)b * s.q_len + i] != m.segment_ids[(size_t)b * s.q_len + j])
        return false;
    return true;
}

// Copies `n` rows of `src` (row length d) into `dst` with row stride `ld`, widened to f32.
template <typename S>
__device__ void load_rows(float *dst, const S *src, uint32_t n, uint32_t d, uint32_t ld) {
    for (uint32_t idx = threadIdx.x; idx < n * d; idx += blockDim.x)
        dst[(idx / d) * ld + idx % d] = to_float(src[idx]);
}

// ------------------------------------------------------------------------------- forward
//
// Grid (ceil(T / FWD_ROWS), B·Hq), FWD_WARPS warps. Warp w handles rows w, w + 4, w + 8, w + 12
// of the block's query tile. Per key tile and row: lane j scores key j, the warp reduces the
// tile max, rescales its running (max, sum, output) — the online softmax — and adds
// p_j · v_j, lane d updating channels d + 32c from the p_j staged in shared memory.
// Shared memory: q [FWD_ROWS][D], k [KEYS][D+1], v [KEYS][D], p [FWD_WARPS][KEYS].
template <typename T>
__device__ void attention_fwd(const T *q, const T *k, const T *v, Masks masks, float *o,
                              float *lse, AttnShape s) {
    extern __shared__ float smem[];
    const uint32_t D = s.head_dim, ld = D + 1;
    float *q_tile = smem;
    float *k_tile = q_tile + FWD_ROWS * D;
    float *v_tile = k_tile + KEYS * ld;
    float *p_tile = v_tile + KEYS * D;
    const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint32_t bh = blockIdx.y, b = bh / s.q_heads, h = bh % s.q_heads;
    const uint32_t kvh = h / (s.q_heads / s.kv_heads);
    const uint32_t i0 = blockIdx.x * FWD_ROWS;
    const uint32_t rows = min(FWD_ROWS, s.q_len - i0);
    const size_t first_row = (size_t)bh * s.q_len + i0;
    const size_t kv_base = ((size_t)b * s.kv_heads + kvh) * s.k_len * D;
    load_rows(q_tile, q + first_row * D, rows, D, D);

    constexpr uint32_t SLOTS = FWD_ROWS / FWD_WARPS;
    float m[SLOTS], l[SLOTS], acc[SLOTS][D_PER_LANE];
#pragma unroll
    for (uint32_t slot = 0; slot < SLOTS; ++slot) {
        m[slot] = -INFINITY;
        l[slot] = 0.f;
#pragma unroll
        for (uint32_t c = 0; c < D_PER_LANE; ++c) acc[slot][c] = 0.f;
    }
    const uint32_t key_end = min(key_limit(s, i0 + rows - 1), s.k_len);
    for (uint32_t j0 = 0; j0 < key_end; j0 += KEYS) {
        const uint32_t n_keys = min(KEYS, key_end - j0);
        __syncthreads();  // the previous tile has been consumed
        load_rows(k_tile, k + kv_base + (size_t)j0 * D, n_keys, D, ld);
        load_rows(v_tile, v + kv_base + (size_t)j0 * D, n_keys, D, D);
        __syncthreads();
#pragma unroll
        for (uint32_t slot = 0; slot < SLOTS; ++slot) {
            const uint32_t r = warp + FWD_WARPS * slot;
            if (r >= rows) continue;  // uniform per warp
            const uint32_t i = i0 + r, j = j0 + lane;
            float score = -INFINITY;
            if (lane < n_keys && allowed(s, masks, b, i, j)) {
                float dot = 0.f;
                for (uint32_t dd = 0; dd < D; ++dd) dot += q_tile[r * D + dd] * k_tile[lane * ld + dd];
                score = dot * s.scale;
            }
            const float new_max = fmaxf(m[slot], warp_max(score));
            if (new_max == -INFINITY) continue;  // no visible key yet; uniform per warp
            const float alpha = expf(m[slot] - new_max);
            const float p = expf(score - new_max);
            l[slot] = l[slot] * alpha + warp_sum(p);
            m[slot] = new_max;
            p_tile[warp * KEYS + lane] = p;
            __syncwarp();
#pragma unroll
            for (uint32_t c = 0; c < D_PER_LANE; ++c) {
                const uint32_t dd = lane + 32 * c;
                if (dd >= D) break;
                float a = acc[slot][c] * alpha;
                for (uint32_t kk = 0; kk < n_keys; ++kk) a += p_tile[warp * KEYS + kk] * v_tile[kk * D + dd];
                acc[slot][c] = a;
            }
            __syncwarp();  // p_tile is rewritten for the next row
        }
    }
#pragma unroll
    for (uint32_t slot = 0; slot < SLOTS; ++slot) {
        const uint32_t r = warp + FWD_WARPS * slot;
        if (r >= rows) continue;
        const size_t row = first_row + r;
        const bool seen = l[slot] > 0.f;
        const float inv = seen ? 1.f / l[slot] : 0.f;
#pragma unroll
        for (uint32_t c = 0; c < D_PER_LANE; ++c) {
            const uint32_t dd = lane + 32 * c;
            if (dd < D) o[row * D + dd] = acc[slot][c] * inv;
        }
        if (lane == 0) lse[row] = seen ? m[slot] + logf(l[slot]) : -INFINITY;
    }
}

// ------------------------------------------------------------------------------ backward
//
// delta[row] = dO[row]·O[row]; one warp per row, 8 warps per block.
__device__ void attention_bwd_delta(const float *o, const float *d_o, float *delta, uint64_t rows,
                                    uint32_t d) {
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const uint32_t lane = threadIdx.x & 31;
    if (row >= rows) return;
    float dot = 0.f;
    for (uint32_t dd = lane; dd < d; dd += 32) dot += o[row * d + dd] * d_o[row * d + dd];
    dot = warp_sum(dot);
    if (lane == 0) delta[row] = dot;
}

// Shared-memory tiles of the two backward kernels, all f32:
// q, dO [BWD_ROWS][D]; k, v [KEYS][D+1]; p, ds [BWD_ROWS][KEYS]; lse, delta [BWD_ROWS].
struct BwdTiles {
    float *q, *d_o, *k, *v, *p, *ds, *lse, *delta;
    __device__ BwdTiles(float *smem, uint32_t D) {
        q = smem;
        d_o = q + BWD_ROWS * D;
        k = d_o + BWD_ROWS * D;
        v = k + KEYS * (D + 1);
        p = v + KEYS * (D + 1);
        ds = p + BWD_ROWS * KEYS;
        lse = ds + BWD_ROWS * KEYS;
        delta = lse + BWD_ROWS;
    }
};

// Loads query rows i0..i0+rows of query head row block `first_row` (= (b·Hq + h)·T + i0):
// q, dO, lse and delta.
template <typename T>
__device__ void load_query_tile(const BwdTiles &t, const T *q, const float *d_o, const float *lse,
                                const float *delta, size_t first_row, uint32_t rows, uint32_t D) {
    load_rows(t.q, q + first_row * D, rows, D, D);
    load_rows(t.d_o, d_o + first_row * D, rows, D, D);
    for (uint32_t r = threadIdx.x; r < rows; r += blockDim.x) {
        t.lse[r] = lse[first_row + r];
        t.delta[r] = delta[first_row + r];
    }
}

// P and dS of the loaded query tile (rows i0.., `rows` valid) against the loaded key tile
// (keys j0.., `n_keys` valid): p = exp(scale·q·k - lse) where allowed, else 0, and
// ds = p·(dO·v - delta)·scale. Entries outside the valid rows/keys are written as 0. Ends with
// a block barrier.
__device__ void probabilities_and_grads(const BwdTiles &t, const AttnShape &s, const Masks &masks,
                                        uint32_t b, uint32_t i0, uint32_t rows, uint32_t j0,
                                        uint32_t n_keys) {
    const uint32_t D = s.head_dim, ld = D + 1;
    const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (uint32_t r = warp; r < BWD_ROWS; r += BWD_WARPS) {
        float p = 0.f, ds = 0.f;
        if (r < rows && lane < n_keys && t.lse[r] != -INFINITY &&
            allowed(s, masks, b, i0 + r, j0 + lane)) {
            float score = 0.f, dp = 0.f;
            for (uint32_t dd = 0; dd < D; ++dd) {
                score += t.q[r * D + dd] * t.k[lane * ld + dd];
                dp += t.d_o[r * D + dd] * t.v[lane * ld + dd];
            }
            p = expf(score * s.scale - t.lse[r]);
            ds = p * (dp - t.delta[r]) * s.scale;
        }
        t.p[r * KEYS + lane] = p;
        t.ds[r * KEYS + lane] = ds;
    }
    __syncthreads();
}

// dK and dV. Grid (ceil(Tk / KEYS), B·Hkv), BWD_WARPS warps. The block owns keys j0..j0+32 of
// one kv head and walks every query row of every query head of its group that may see them
// (causal: rows i ≥ j0 - (Tk - T)). Warp w owns keys 4w..4w+3 of the tile and lane d channels
// d + 32c: dV[j] += Σ_i p_ij dO_i, dK[j] += Σ_i ds_ij q_i, accumulated in registers and
// written once (every key row of dk/dv is written by exactly one block).
template <typename T>
__device__ void attention_bwd_dkdv(const T *q, const T *k, const T *v, const float *d_o,
                                   const float *lse, const float *delta, Masks masks, T *dk, T *dv,
                                   AttnShape s) {
    extern __shared__ float smem[];
    const uint32_t D = s.head_dim, ld = D + 1;
    const BwdTiles t(smem, D);
    const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint32_t b = blockIdx.y / s.kv_heads, kvh = blockIdx.y % s.kv_heads;
    const uint32_t group = s.q_heads / s.kv_heads;
    const uint32_t j0 = blockIdx.x * KEYS, n_keys = min(KEYS, s.k_len - j0);
    const size_t kv_base = ((size_t)blockIdx.y * s.k_len + j0) * D;
    load_rows(t.k, k + kv_base, n_keys, D, ld);
    load_rows(t.v, v + kv_base, n_keys, D, ld);

    constexpr uint32_t KEYS_PER_WARP = KEYS / BWD_WARPS;
    float dk_acc[KEYS_PER_WARP][D_PER_LANE], dv_acc[KEYS_PER_WARP][D_PER_LANE];
#pragma unroll
    for (uint32_t kk = 0; kk < KEYS_PER_WARP; ++kk)
#pragma unroll
        for (uint32_t c = 0; c < D_PER_LANE; ++c) dk_acc[kk][c] = dv_acc[kk][c] = 0.f;

    // First query row that may see key j0 under the causal rule.
    const uint32_t offset = s.k_len - s.q_len;
    const uint32_t i_start = (s.causal && j0 > offset) ? j0 - offset : 0;
    for (uint32_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        for (uint32_t i0 = i_start; i0 < s.q_len; i0 += BWD_ROWS) {
            const uint32_t rows = min(BWD_ROWS, s.q_len - i0);
            const size_t first_row = ((size_t)b * s.q_heads + h) * s.q_len + i0;
            __syncthreads();  // the previous query tile has been consumed
            load_query_tile(t, q, d_o, lse, delta, first_row, rows, D);
            __syncthreads();
            probabilities_and_grads(t, s, masks, b, i0, rows, j0, n_keys);
#pragma unroll
            for (uint32_t kk = 0; kk < KEYS_PER_WARP; ++kk) {
                const uint32_t key = warp * KEYS_PER_WARP + kk;
#pragma unroll
                for (uint32_t c = 0; c < D_PER_LANE; ++c) {
                    const uint32_t dd = lane + 32 * c;
                    if (dd >= D) break;
                    float gk = dk_acc[kk][c], gv = dv_acc[kk][c];
                    for (uint32_t r = 0; r < rows; ++r) {
                        gk += t.ds[r * KEYS + key] * t.q[r * D + dd];
                        gv += t.p[r * KEYS + key] * t.d_o[r * D + dd];
                    }
                    dk_acc[kk][c] = gk;
                    dv_acc[kk][c] = gv;
                }
            }
        }
    }
#pragma unroll
    for (uint32_t kk = 0; kk < KEYS_PER_WARP; ++kk) {
        const uint32_t key = warp * KEYS_PER_WARP + kk;
        if (key >= n_keys) continue;
#pragma unroll
        for (uint32_t c = 0; c < D_PER_LANE; ++c) {
            const uint32_t dd = lane + 32 * c;
            if (dd >= D) break;
            dk[kv_base + (size_t)key * D + dd] = from_float<T>(dk_acc[kk][c]);
            dv[kv_base + (size_t)key * D + dd] = from_float<T>(dv_acc[kk][c]);
        }
    }
}

// dQ. Grid (ceil(T / BWD_ROWS), B·Hq), BWD_WARPS warps. The block owns query rows
// i0..i0+16 of one query head and walks the key tiles they may see; warp w owns rows 2w, 2w+1
// and lane d channels d + 32c: dQ[i] += Σ_j ds_ij k_j. Every row of dq is written once (rows
// that see no key get 0).
template <typename T>
__device__ void attention_bwd_dq(const T *q, const T *k, const T *v, const float *d_o,
                                 const float *lse, const float *delta, Masks masks, T *dq,
                                 AttnShape s) {
    extern __shared__ float smem[];
    const uint32_t D = s.head_dim, ld = D + 1;
    const BwdTiles t(smem, D);
    const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint32_t bh = blockIdx.y, b = bh / s.q_heads, h = bh % s.q_heads;
    const uint32_t kvh = h / (s.q_heads / s.kv_heads);
    const uint32_t i0 = blockIdx.x * BWD_ROWS, rows = min(BWD_ROWS, s.q_len - i0);
    const size_t first_row = (size_t)bh * s.q_len + i0;
    const size_t kv_base = ((size_t)b * s.kv_heads + kvh) * s.k_len * D;
    load_query_tile(t, q, d_o, lse, delta, first_row, rows, D);

    constexpr uint32_t ROWS_PER_WARP = BWD_ROWS / BWD_WARPS;
    float acc[ROWS_PER_WARP][D_PER_LANE];
#pragma unroll
    for (uint32_t rr = 0; rr < ROWS_PER_WARP; ++rr)
#pragma unroll
        for (uint32_t c = 0; c < D_PER_LANE; ++c) acc[rr][c] = 0.f;

    const uint32_t key_end = min(key_limit(s, i0 + rows - 1), s.k_len);
    for (uint32_t j0 = 0; j0 < key_end; j0 += KEYS) {
        const uint32_t n_keys = min(KEYS, key_end - j0);
        __syncthreads();  // the previous key tile has been consumed
        load_rows(t.k, k + kv_base + (size_t)j0 * D, n_keys, D, ld);
        load_rows(t.v, v + kv_base + (size_t)j0 * D, n_keys, D, ld);
        __syncthreads();
        probabilities_and_grads(t, s, masks, b, i0, rows, j0, n_keys);
#pragma unroll
        for (uint32_t rr = 0; rr < ROWS_PER_WARP; ++rr) {
            const uint32_t r = warp * ROWS_PER_WARP + rr;
            if (r >= rows) continue;
#pragma unroll
            for (uint32_t c = 0; c < D_PER_LANE; ++c) {
                const uint32_t dd = lane + 32 * c;
                if (dd >= D) break;
                float a = acc[rr][c];
                for (uint32_t kk = 0; kk < n_keys; ++kk) a += t.ds[r * KEYS + kk] * t.k[kk * ld + dd];
                acc[rr][c] = a;
            }
        }
    }
#pragma unroll
    for (uint32_t rr = 0; rr < ROWS_PER_WARP; ++rr) {
        const uint32_t r = warp * ROWS_PER_WARP + rr;
        if (r >= rows) continue;
#pragma unroll
        for (uint32_t c = 0; c < D_PER_LANE; ++c) {
            const uint32_t dd = lane + 32 * c;
            if (dd < D) dq[(first_row + r) * D + dd] = from_float<T>(acc[rr][c]);
        }
    }
}

extern "C" __global__ void attention_bwd_delta_f32(const float *o, const float *d_o, float *delta,
                                                   uint64_t rows, uint32_t d) {
    attention_bwd_delta(o, d_o, delta, rows, d);
}

#define ATTENTION_ENTRIES(T, S)                                                                  \
    extern "C" __global__ void attention_fwd_##S(const T *q, const T *k, const T *v,           \
                                                 const uint32_t *key_padding,                  \
                                                 const uint32_t *segment_ids, float *o,        \
                                                 float *lse, AttnShape s) {                    \
        attention_fwd<T>(q, k, v, Masks{key_padding, segment_ids}, o, lse, s);                 \
    }                                                                                          \
    extern "C" __global__ void attention_bwd_dkdv_##S(                                         \
        const T *q, const T *k, const T *v, const float *d_o, const float *lse,                \
        const float *delta, const uint32_t *key_padding, const uint32_t *segment_ids, T *dk,   \
        T *dv, AttnShape s) {                                                                  \
        attention_bwd_dkdv<T>(q, k, v, d_o, lse, delta, Masks{key_padding, segment_ids}, dk,   \
                              dv, s);                                                          \
    }                                                                                          \
    extern "C" __global__ void attention_bwd_dq_##S(                                           \
        const T *q, const T *k, const T *v, const float *d_o, const float *lse,                \
        const float *delta, const uint32_t *key_padding, const uint32_t *segment_ids, T *dq,   \
        AttnShape s) {                                                                         \
        attention_bwd_dq<T>(q, k, v, d_o, lse, delta, Masks{key_padding, segment_ids}, dq, s); \
    }

DISTILL_FOR_EACH_FLOAT(ATTENTION_ENTRIES)
