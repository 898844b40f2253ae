// Runs every distill kernel under the CPU emulation of emu.h and compares it with a naive
// double-precision reference of the op's math, in f32 (tolerance 1e-4), bf16 and f16 (1e-2).
// The host side mirrors the launch code in src/ops/cuda/*.rs: the same kernels in the same
// order with the same grids, block sizes and buffer splits; the cuBLAS gemms of the selective
// log-softmax are a naive column-major GemmEx with the same parameters. Every output buffer
// starts as NaN bytes, so an element a kernel leaves unwritten fails the comparison.
// Build and run with benches/gpu/emulate.sh. Exit status 1 if any check fails.
#include "emu.h"

#include "rms_norm.cu"
#include "rope.cu"
#include "softmax.cu"
#include "attention.cu"
#include "selective_log_softmax.cu"
#include "grpo_loss.cu"

#include <cstdio>
#include <random>
#include <string>

using Vec = std::vector<double>;
using bf16 = __nv_bfloat16;

static int failures = 0;

struct Rng {
    std::mt19937_64 gen;
    explicit Rng(uint64_t seed) : gen(seed) {}
    // `n` values uniform in [lo, hi), rounded to the storage type T.
    template <typename T> std::vector<T> uniform(size_t n, double lo, double hi) {
        std::uniform_real_distribution<double> dist(lo, hi);
        std::vector<T> out(n);
        for (auto &v : out) v = distill::from_float<T>((float)dist(gen));
        return out;
    }
    uint32_t below(uint32_t n) { return std::uniform_int_distribution<uint32_t>(0, n - 1)(gen); }
};

template <typename T> Vec widen(const std::vector<T> &v) {
    Vec out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = distill::to_float(v[i]);
    return out;
}

// A buffer of `n` elements whose bytes are all 0xff (NaN for every float type).
template <typename T> std::vector<T> poisoned(size_t n) {
    std::vector<T> v(n);
    std::memset(v.data(), 0xff, n * sizeof(T));
    return v;
}

template <typename T> const char *type_name() {
    return std::is_same_v<T, float> ? "f32" : std::is_same_v<T, bf16> ? "bf16" : "f16";
}
template <typename T> double tolerance() { return std::is_same_v<T, float> ? 1e-4 : 1e-2; }

// Relative infinity-norm error (absolute when the reference is 0); fails on NaN or size.
void compare(const std::string &what, const Vec &got, const Vec &want, double tol) {
    double diff = 0, scale = 0;
    bool nan = got.size() != want.size();
    for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
        if (std::isnan(got[i]) || std::isnan(want[i]) != 0) nan = true;
        if (std::isinf(want[i]) && got[i] == want[i]) continue;  // -inf log-sum-exp of empty rows
        diff = std::max(diff, std::fabs(got[i] - want[i]));
        scale = std::max(scale, std::fabs(want[i]));
    }
    const double err = scale > 0 ? diff / scale : diff;
    const bool ok = !nan && err < tol;
    std::printf("%-4s %-60s rel err %.2e (tol %.0e)%s\n", ok ? "ok" : "FAIL", what.c_str(), err,
                tol, nan ? "  NaN or size mismatch" : "");
    if (!ok) ++failures;
}

// ------------------------------------------------------------------------------ rms_norm

template <typename T> void check_rms_norm(uint32_t rows, uint32_t d) {
    Rng rng(1 + rows + d);
    const float eps = 1e-6f;
    auto x = rng.uniform<T>((size_t)rows * d, -2, 2);
    auto w = rng.uniform<T>(d, 0.5, 1.5);
    auto g = rng.uniform<T>((size_t)rows * d, -1, 1);
    Vec xd = widen(x), wd = widen(w), gd = widen(g);
    Vec y_ref(xd.size()), gx_ref(xd.size()), gw_ref(d, 0.0);
    for (uint32_t r = 0; r < rows; ++r) {
        double ss = 0, dot = 0;
        for (uint32_t j = 0; j < d; ++j) ss += xd[r * d + j] * xd[r * d + j];
        const double inv = 1 / std::sqrt(ss / d + eps);
        for (uint32_t j = 0; j < d; ++j) {
            const size_t i = (size_t)r * d + j;
            y_ref[i] = xd[i] * inv * wd[j];
            dot += gd[i] * wd[j] * xd[i];
            gw_ref[j] += gd[i] * xd[i] * inv;
        }
        for (uint32_t j = 0; j < d; ++j) {
            const size_t i = (size_t)r * d + j;
            gx_ref[i] = inv * gd[i] * wd[j] - xd[i] * inv * inv * inv * dot / d;
        }
    }
    // Forward, as src/ops/cuda/rms_norm.rs launches it.
    auto y = poisoned<T>(x.size());
    emu::launch({rows, 1}, 256, [&] { rms_norm_fwd<T>(x.data(), w.data(), y.data(), d, eps); });
    // Backward.
    const size_t n = x.size();
    auto out = poisoned<T>(n + d);
    auto inv_rms = poisoned<float>(rows);
    const uint32_t rows_per_chunk = std::max(1u, (rows + 1023) / 1024);
    const uint32_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
    auto partial = poisoned<float>((size_t)chunks * d);
    const unsigned column_blocks = (d + 255) / 256;
    emu::launch({rows, 1}, 256, [&] {
        rms_norm_bwd_rows<T>(x.data(), w.data(), g.data(), out.data(), inv_rms.data(), d, eps);
    });
    emu::launch({column_blocks, chunks}, 256, [&] {
        rms_norm_bwd_weight_partial<T>(x.data(), g.data(), inv_rms.data(), partial.data(), rows, d,
                                       rows_per_chunk);
    });
    emu::launch({column_blocks, 1}, 256, [&] {
        rms_norm_bwd_weight_final<T>(partial.data(), out.data() + n, d, chunks);
    });
    Vec outd = widen(out);
    const std::string name = std::string("rms_norm ") + type_name<T>() + " [" +
                             std::to_string(rows) + ", " + std::to_string(d) + "]";
    compare(name + " y", widen(y), y_ref, tolerance<T>());
    compare(name + " grad x", Vec(outd.begin(), outd.begin() + n), gx_ref, tolerance<T>());
    compare(name + " grad w", Vec(outd.begin() + n, outd.end()), gw_ref, tolerance<T>());
}

// ---------------------------------------------------------------------------------- rope

template <typename T>
void check_rope(uint32_t b, uint32_t h, uint32_t t, uint32_t d, bool per_row, bool interleaved,
                bool inverse) {
    Rng rng(2 + d);
    const uint32_t half = d / 2;
    auto x = rng.uniform<T>((size_t)b * h * t * d, -1, 1);
    const size_t angles = (size_t)(per_row ? b : 1) * t * half;
    std::vector<T> cos(angles), sin(angles);
    for (size_t i = 0; i < angles; ++i) {
        const double a = 0.37 * (double)i;
        cos[i] = distill::from_float<T>((float)std::cos(a));
        sin[i] = distill::from_float<T>((float)std::sin(a));
    }
    Vec xd = widen(x), cd = widen(cos), sd = widen(sin), y_ref(xd.size());
    for (size_t row = 0; row < (size_t)b * h * t; ++row) {
        const size_t pos = row % t, batch = row / ((size_t)h * t);
        const size_t ar = per_row ? batch * t + pos : pos;
        for (uint32_t p = 0; p < half; ++p) {
            const size_t i = row * d + (interleaved ? 2 * p : p);
            const size_t j = row * d + (interleaved ? 2 * p + 1 : p + half);
            const double c = cd[ar * half + p], s = inverse ? -sd[ar * half + p] : sd[ar * half + p];
            y_ref[i] = xd[i] * c - xd[j] * s;
            y_ref[j] = xd[j] * c + xd[i] * s;
        }
    }
    auto y = poisoned<T>(x.size());
    const size_t pairs = x.size() / 2;
    const unsigned blocks = (unsigned)std::clamp<size_t>((pairs + 255) / 256, 1, 65535);
    emu::launch({blocks, 1}, 256, [&] {
        rope<T>(x.data(), cos.data(), sin.data(), y.data(), b, h, t, half, per_row, interleaved,
                inverse);
    });
    char name[160];
    std::snprintf(name, sizeof name, "rope %s d=%u per_row=%d interleaved=%d inverse=%d",
                  type_name<T>(), d, per_row, interleaved, inverse);
    compare(name, widen(y), y_ref, tolerance<T>());
}

// ------------------------------------------------------------------------------- softmax

// `mask_kind`: 0 none, 1 a [Tq, Tk] mask broadcast over [B, H], 2 a [B, 1, Tq, Tk] mask
// broadcast over H; both start 3 elements into their storage.
template <typename T>
void check_softmax(uint32_t B, uint32_t H, uint32_t tq, uint32_t tk, int mask_kind, bool causal) {
    Rng rng(3 + tk + mask_kind);
    const size_t rows = (size_t)B * H * tq;
    auto x = rng.uniform<T>(rows * tk, -4, 4);
    const size_t offset = 3;
    const size_t mask_rows = mask_kind == 1 ? tq : (size_t)B * tq;
    std::vector<T> mask(offset + mask_rows * tk);
    for (size_t i = 0; i < mask.size(); ++i) {
        // Scattered -inf entries; with mask_kind 2, batch row 1 is left padded by 5 keys.
        const bool padded = mask_kind == 2 && i >= offset && (i - offset) / ((size_t)tq * tk) == 1 &&
                            (i - offset) % tk < 5;
        const bool masked = i % 7 == 0 || padded;
        mask[i] = distill::from_float<T>(masked ? -INFINITY : (float)(0.1 * (i % 11)));
    }
    MaskLayout ml{};
    ml.rank = 3;
    const uint64_t dims[3] = {B, H, tq};
    for (int a = 0; a < 3; ++a) ml.dims[a] = dims[a];
    if (mask_kind == 1) {
        ml.strides[0] = 0, ml.strides[1] = 0, ml.strides[2] = tk;
    } else {
        ml.strides[0] = (uint64_t)tq * tk, ml.strides[1] = 0, ml.strides[2] = tk;
    }
    ml.start = offset;
    ml.col_stride = 1;
    const int32_t causal_offset = causal ? (int32_t)(tk - tq) : -1;
    Vec xd = widen(x), md = widen(mask), y_ref(xd.size(), 0.0);
    for (size_t r = 0; r < rows; ++r) {
        const size_t q = r % tq, head_row = r / tq;
        const size_t b = head_row / H;
        const size_t mrow = offset + (mask_kind == 1 ? q * tk : (b * tq + q) * tk);
        const size_t visible = causal ? std::min<size_t>(q + causal_offset + 1, tk) : tk;
        double max = -INFINITY;
        Vec v(tk);
        for (size_t j = 0; j < visible; ++j) {
            v[j] = xd[r * tk + j] + (mask_kind ? md[mrow + j] : 0.0);
            max = std::max(max, v[j]);
        }
        if (max == -INFINITY) continue;
        double sum = 0;
        for (size_t j = 0; j < visible; ++j) sum += std::exp(v[j] - max);
        for (size_t j = 0; j < visible; ++j) y_ref[r * tk + j] = std::exp(v[j] - max) / sum;
    }
    auto y = poisoned<T>(x.size());
    const unsigned blocks = (unsigned)((rows + 7) / 8);
    emu::launch({blocks, 1}, 256, [&] {
        softmax_fwd<T>(x.data(), mask_kind ? mask.data() : nullptr, ml, y.data(), rows, tk, tq,
                       causal_offset);
    });
    // Backward from the reference probabilities.
    std::vector<T> yt(y_ref.size());
    for (size_t i = 0; i < yt.size(); ++i) yt[i] = distill::from_float<T>((float)y_ref[i]);
    auto g = rng.uniform<T>(x.size(), -1, 1);
    Vec ytd = widen(yt), gd = widen(g), dx_ref(x.size());
    for (size_t r = 0; r < rows; ++r) {
        double dot = 0;
        for (size_t j = 0; j < tk; ++j) dot += ytd[r * tk + j] * gd[r * tk + j];
        for (size_t j = 0; j < tk; ++j) dx_ref[r * tk + j] = ytd[r * tk + j] * (gd[r * tk + j] - dot);
    }
    auto dx = poisoned<T>(x.size());
    emu::launch({blocks, 1}, 256, [&] { softmax_bwd<T>(yt.data(), g.data(), dx.data(), rows, tk); });
    char name[160];
    std::snprintf(name, sizeof name, "softmax %s [%u,%u,%u,%u] mask=%d causal=%d", type_name<T>(), B,
                  H, tq, tk, mask_kind, causal);
    compare(std::string(name) + " y", widen(y), y_ref, tolerance<T>());
    compare(std::string(name) + " dx", widen(dx), dx_ref, tolerance<T>());
}

// ----------------------------------------------------------------------------- attention

struct AttnCase {
    const char *name;
    uint32_t b, hq, hkv, t, tk, d;
    bool causal;
    std::vector<uint32_t> left_pad;
    bool segments;
};

template <typename T> void check_attention(const AttnCase &c) {
    Rng rng(5 + c.d + c.t);
    const uint32_t b = c.b, hq = c.hq, hkv = c.hkv, t = c.t, tk = c.tk, d = c.d;
    auto q = rng.uniform<T>((size_t)b * hq * t * d, -1.5, 1.5);
    auto k = rng.uniform<T>((size_t)b * hkv * tk * d, -1.5, 1.5);
    auto v = rng.uniform<T>((size_t)b * hkv * tk * d, -1.5, 1.5);
    std::vector<uint32_t> kp((size_t)b * tk), seg;
    for (uint32_t r = 0; r < b; ++r)
        for (uint32_t j = 0; j < tk; ++j) kp[r * tk + j] = j >= c.left_pad[r];
    if (c.segments) {
        seg.resize((size_t)b * t);
        for (uint32_t r = 0; r < b; ++r)
            for (uint32_t i = 0; i < t; ++i) seg[r * t + i] = (i * (r + 2)) / 11;
    }
    const float scale = 1.0f / std::sqrt((float)d);
    const uint32_t group = hq / hkv;
    const size_t rows = (size_t)b * hq * t;
    Vec qd = widen(q), kd = widen(k), vd = widen(v);
    auto visible = [&](uint32_t bb, uint32_t i, uint32_t j) {
        if (c.causal && j > i + (tk - t)) return false;
        if (!kp[bb * tk + j]) return false;
        if (c.segments && seg[bb * t + i] != seg[bb * t + j]) return false;
        return true;
    };
    // Reference forward and backward, row by row.
    Rng grad_rng(99);
    std::vector<float> d_o_full = grad_rng.uniform<float>(rows * (d + 1), -1, 1);  // [dO, dlse]
    Vec o_ref(rows * d, 0.0), lse_ref(rows, -INFINITY), dq_ref(q.size(), 0.0),
        dk_ref(k.size(), 0.0), dv_ref(v.size(), 0.0);
    for (uint32_t bb = 0; bb < b; ++bb)
        for (uint32_t h = 0; h < hq; ++h)
            for (uint32_t i = 0; i < t; ++i) {
                const size_t row = ((size_t)bb * hq + h) * t + i;
                const size_t kv = ((size_t)bb * hkv + h / group) * tk;
                Vec s(tk, -INFINITY);
                double max = -INFINITY;
                for (uint32_t j = 0; j < tk; ++j) {
                    if (!visible(bb, i, j)) continue;
                    double dot = 0;
                    for (uint32_t x = 0; x < d; ++x) dot += qd[row * d + x] * kd[(kv + j) * d + x];
                    s[j] = dot * scale;
                    max = std::max(max, s[j]);
                }
                if (max == -INFINITY) continue;
                double sum = 0;
                for (uint32_t j = 0; j < tk; ++j) sum += std::exp(s[j] - max);
                lse_ref[row] = max + std::log(sum);
                Vec p(tk);
                for (uint32_t j = 0; j < tk; ++j) p[j] = std::exp(s[j] - lse_ref[row]);
                for (uint32_t j = 0; j < tk; ++j)
                    for (uint32_t x = 0; x < d; ++x) o_ref[row * d + x] += p[j] * vd[(kv + j) * d + x];
                double delta = 0;
                for (uint32_t x = 0; x < d; ++x) delta += d_o_full[row * d + x] * o_ref[row * d + x];
                for (uint32_t j = 0; j < tk; ++j) {
                    if (p[j] == 0) continue;
                    double dp = 0;
                    for (uint32_t x = 0; x < d; ++x) dp += d_o_full[row * d + x] * vd[(kv + j) * d + x];
                    const double ds = p[j] * (dp - delta) * scale;
                    for (uint32_t x = 0; x < d; ++x) {
                        dq_ref[row * d + x] += ds * kd[(kv + j) * d + x];
                        dk_ref[(kv + j) * d + x] += ds * qd[row * d + x];
                        dv_ref[(kv + j) * d + x] += p[j] * d_o_full[row * d + x];
                    }
                }
            }
    // Forward, as src/ops/cuda/attention.rs launches it.
    const AttnShape shape{b, hq, hkv, t, tk, d, scale, c.causal};
    const Masks masks{kp.data(), c.segments ? seg.data() : nullptr};
    auto out = poisoned<float>(rows * (d + 1));
    float *o = out.data(), *lse = out.data() + rows * d;
    emu::launch({(t + 15) / 16, b * hq}, 128, [&] {
        attention_fwd<T>(q.data(), k.data(), v.data(), masks, o, lse, shape);
    });
    // Backward from the kernel's own saved output.
    auto delta = poisoned<float>(rows);
    emu::launch({(unsigned)((rows + 7) / 8), 1}, 256,
                [&] { attention_bwd_delta(o, d_o_full.data(), delta.data(), rows, d); });
    auto dq = poisoned<T>(q.size()), dk = poisoned<T>(k.size()), dv = poisoned<T>(v.size());
    if (tk > 0)
        emu::launch({(tk + 31) / 32, b * hkv}, 256, [&] {
            attention_bwd_dkdv<T>(q.data(), k.data(), v.data(), d_o_full.data(), lse, delta.data(),
                                  masks, dk.data(), dv.data(), shape);
        });
    emu::launch({(t + 15) / 16, b * hq}, 256, [&] {
        attention_bwd_dq<T>(q.data(), k.data(), v.data(), d_o_full.data(), lse, delta.data(), masks,
                            dq.data(), shape);
    });
    const std::string name = std::string(c.name) + " " + type_name<T>();
    Vec got(out.begin(), out.end());
    compare(name + " o", Vec(got.begin(), got.begin() + rows * d), o_ref, tolerance<T>());
    compare(name + " lse", Vec(got.begin() + rows * d, got.end()), lse_ref, tolerance<T>());
    compare(name + " dq", widen(dq), dq_ref, tolerance<T>());
    compare(name + " dk", widen(dk), dk_ref, tolerance<T>());
    compare(name + " dv", widen(dv), dv_ref, tolerance<T>());
}

// ------------------------------------------------------------------ selective log-softmax

// Column-major GemmEx with f32 compute: c = op(a)·op(b) + beta·c.
template <typename A, typename C>
void gemm(bool ta, bool tb, size_t m, size_t n, size_t k, const A *a, size_t lda, const A *b,
          size_t ldb, float beta, C *c, size_t ldc) {
    for (size_t j = 0; j < n; ++j)
        for (size_t i = 0; i < m; ++i) {
            double acc = 0;
            for (size_t l = 0; l < k; ++l) {
                const double av = distill::to_float(ta ? a[l + i * lda] : a[i + l * lda]);
                const double bv = distill::to_float(tb ? b[j + l * ldb] : b[l + j * ldb]);
                acc += av * bv;
            }
            if (beta != 0) acc += beta * distill::to_float(c[i + j * ldc]);
            c[i + j * ldc] = distill::from_float<C>((float)acc);
        }
}

template <typename T> void check_selective(uint32_t n, uint32_t d, uint32_t vocab, uint32_t chunk) {
    Rng rng(8 + chunk);
    auto h = rng.uniform<T>((size_t)n * d, -1, 1);
    auto w = rng.uniform<T>((size_t)vocab * d, -1, 1);
    std::vector<uint32_t> targets(n);
    for (uint32_t i = 0; i < n; ++i) targets[i] = i % 4 == 1 ? IGNORE_TARGET : rng.below(vocab);
    Vec hd = widen(h), wd = widen(w);
    auto grad = rng.uniform<float>(3 * (size_t)n, -1, 1);  // [g_logp, g_ent, (unused)]
    Vec logp_ref(n, 0), ent_ref(n, 0), lse_ref(n), gh_ref((size_t)n * d, 0), gw_ref(w.size(), 0);
    for (uint32_t r = 0; r < n; ++r) {
        Vec z(vocab);
        double max = -INFINITY;
        for (uint32_t j = 0; j < vocab; ++j) {
            double dot = 0;
            for (uint32_t x = 0; x < d; ++x) dot += hd[r * d + x] * wd[(size_t)j * d + x];
            z[j] = dot;
            max = std::max(max, dot);
        }
        double sum = 0;
        for (double zj : z) sum += std::exp(zj - max);
        lse_ref[r] = max + std::log(sum);
        if (targets[r] == IGNORE_TARGET) continue;
        double entropy = 0;
        for (double zj : z) entropy -= std::exp(zj - lse_ref[r]) * (zj - lse_ref[r]);
        logp_ref[r] = z[targets[r]] - lse_ref[r];
        ent_ref[r] = entropy;
        for (uint32_t j = 0; j < vocab; ++j) {
            const double lp = z[j] - lse_ref[r], p = std::exp(lp);
            double dz = -grad[r] * p - grad[n + r] * p * (lp + entropy);
            if (j == targets[r]) dz += grad[r];
            for (uint32_t x = 0; x < d; ++x) {
                gh_ref[r * d + x] += dz * wd[(size_t)j * d + x];
                gw_ref[(size_t)j * d + x] += dz * hd[r * d + x];
            }
        }
    }
    // Forward, as src/ops/cuda/selective_log_softmax.rs launches it.
    const unsigned row_blocks = (n + 255) / 256, warp_blocks = (n + 7) / 8;
    unsigned long long first_bad = ~0ull;
    emu::launch({row_blocks, 1}, 256, [&] { sls_check_targets(targets.data(), n, vocab, &first_bad); });
    auto stats = poisoned<float>(4 * (size_t)n);
    emu::launch({row_blocks, 1}, 256, [&] { sls_init_stats(stats.data(), n); });
    const uint32_t c_max = std::max(1u, std::min(chunk, vocab));
    auto logits = poisoned<float>((size_t)n * c_max);
    for (uint32_t c0 = 0; c0 < vocab; c0 += c_max) {
        const uint32_t c = std::min(c_max, vocab - c0);
        gemm<T, float>(true, false, c, n, d, w.data() + (size_t)c0 * d, d, h.data(), d, 0.f,
                       logits.data(), c);
        emu::launch({warp_blocks, 1}, 256,
                    [&] { sls_update_stats(logits.data(), targets.data(), stats.data(), n, c, c0); });
    }
    auto out = poisoned<float>(3 * (size_t)n);
    emu::launch({row_blocks, 1}, 256, [&] { sls_finalize(stats.data(), targets.data(), out.data(), n); });
    // Backward from the kernel's own saved output.
    auto d_logits = poisoned<T>((size_t)n * c_max);
    std::vector<float> grad_hidden((size_t)n * d, 0.f);
    auto bwd = poisoned<T>((size_t)n * d + (size_t)vocab * d);
    for (uint32_t c0 = 0; c0 < vocab; c0 += c_max) {
        const uint32_t c = std::min(c_max, vocab - c0);
        const T *w_chunk = w.data() + (size_t)c0 * d;
        gemm<T, float>(true, false, c, n, d, w_chunk, d, h.data(), d, 0.f, logits.data(), c);
        const unsigned blocks = (unsigned)std::clamp<size_t>(((size_t)n * c + 255) / 256, 1, 65535);
        emu::launch({blocks, 1}, 256, [&] {
            sls_grad_logits<T>(logits.data(), targets.data(), out.data(), grad.data(),
                               d_logits.data(), n, c, c0);
        });
        gemm<T, float>(false, false, d, n, c, w_chunk, d, d_logits.data(), c, 1.f,
                       grad_hidden.data(), d);
        gemm<T, T>(false, true, d, c, n, h.data(), d, d_logits.data(), c, 0.f,
                   bwd.data() + (size_t)n * d + (size_t)c0 * d, d);
    }
    const size_t nd = (size_t)n * d;
    const unsigned cast_blocks = (unsigned)std::clamp<size_t>((nd + 255) / 256, 1, 65535);
    emu::launch({cast_blocks, 1}, 256, [&] { sls_cast<T>(grad_hidden.data(), bwd.data(), nd); });
    Vec outd(out.begin(), out.end()), bwdd = widen(bwd);
    const std::string name =
        std::string("selective_log_softmax ") + type_name<T>() + " chunk=" + std::to_string(chunk);
    compare(name + " logp", Vec(outd.begin(), outd.begin() + n), logp_ref, tolerance<T>());
    compare(name + " entropy", Vec(outd.begin() + n, outd.begin() + 2 * n), ent_ref, tolerance<T>());
    compare(name + " lse", Vec(outd.begin() + 2 * n, outd.end()), lse_ref, tolerance<T>());
    compare(name + " grad hidden", Vec(bwdd.begin(), bwdd.begin() + nd), gh_ref, tolerance<T>());
    compare(name + " grad lm_head", Vec(bwdd.begin() + nd, bwdd.end()), gw_ref, tolerance<T>());
    const bool no_bad = first_bad == ~0ull;
    std::printf("%-4s %-60s\n", no_bad ? "ok" : "FAIL", (name + " targets in range").c_str());
    failures += !no_bad;
}

void check_selective_rejects_bad_targets() {
    std::vector<uint32_t> targets = {3, IGNORE_TARGET, 50, 60, 70};
    unsigned long long first_bad = ~0ull;
    emu::launch({1, 1}, 256, [&] { sls_check_targets(targets.data(), 5, 50, &first_bad); });
    const bool ok = first_bad == ((2ull << 32) | 50);
    std::printf("%-4s %-60s\n", ok ? "ok" : "FAIL", "selective_log_softmax first bad target");
    failures += !ok;
}

// ---------------------------------------------------------------------------------- GRPO

// aggregation: 0 grpo, 1 dr_grpo (max len 16), 2 dapo.
template <typename T> void check_grpo(int aggregation, double beta) {
    const uint32_t b = 5, t = 11;
    Rng rng(10);
    auto logp = rng.uniform<T>(b * t, -3, -0.1);
    Vec lp = widen(logp), old(b * t), ref(b * t);
    std::uniform_real_distribution<double> jitter(-0.4, 0.4);
    for (size_t i = 0; i < lp.size(); ++i) {
        old[i] = lp[i] + jitter(rng.gen);
        ref[i] = lp[i] + 0.75 * jitter(rng.gen);
    }
    const Vec adv = {1.2, -0.7, 0.0, 0.4, -1.5};
    const uint32_t lengths[5] = {11, 6, 9, 0, 3};
    std::vector<uint8_t> mask(b * t);
    size_t total = 0;
    for (uint32_t r = 0; r < b; ++r)
        for (uint32_t i = 0; i < t; ++i) total += mask[r * t + i] = i < lengths[r];
    const double eps_low = 0.2, eps_high = 0.28;
    Vec row_weight(b);
    for (uint32_t r = 0; r < b; ++r)
        row_weight[r] = aggregation == 0   ? 1.0 / (std::max(lengths[r], 1u) * (double)b)
                        : aggregation == 1 ? 1.0 / (b * 16.0)
                                           : 1.0 / (double)std::max<size_t>(total, 1);
    const double per_token = 1.0 / (double)std::max<size_t>(total, 1);
    Vec values_ref(4, 0.0), grad_ref(b * t, 0.0);
    const double upstream = 0.75;
    for (size_t i = 0; i < lp.size(); ++i) {
        if (!mask[i]) continue;
        const double a = adv[i / t], ratio = std::exp(lp[i] - old[i]);
        const double clipped = std::clamp(ratio, 1 - eps_low, 1 + eps_high);
        const bool active = clipped * a < ratio * a;
        const double delta = ref[i] - lp[i];
        const double kl = beta != 0 ? std::exp(delta) - delta - 1 : 0;
        const double d_kl = beta != 0 ? 1 - std::exp(delta) : 0;
        values_ref[0] += row_weight[i / t] * (-(active ? clipped * a : ratio * a) + beta * kl);
        values_ref[1] += active * per_token;
        values_ref[2] += kl * per_token;
        values_ref[3] += ratio * per_token;
        grad_ref[i] = row_weight[i / t] * (-(active ? 0 : ratio * a) + beta * d_kl) * upstream;
    }
    // As src/ops/cuda/grpo_loss.rs launches it.
    const GrpoParams p{eps_low, eps_high, beta, per_token, (uint64_t)b * t, t, beta != 0};
    auto out = poisoned<float>(4);
    const double *ref_ptr = beta != 0 ? ref.data() : nullptr;
    emu::launch({1, 1}, 256, [&] {
        grpo_fwd<T>(logp.data(), old.data(), ref_ptr, adv.data(), mask.data(), row_weight.data(),
                    out.data(), p);
    });
    const float up = (float)upstream;
    auto grad = poisoned<T>(b * t);
    emu::launch({1, 1}, 256, [&] {
        grpo_bwd<T>(logp.data(), old.data(), ref_ptr, adv.data(), mask.data(), row_weight.data(), &up,
                    grad.data(), p);
    });
    char name[120];
    std::snprintf(name, sizeof name, "grpo %s aggregation=%d beta=%.2f", type_name<T>(), aggregation,
                  beta);
    compare(std::string(name) + " loss and metrics", Vec(out.begin(), out.end()), values_ref, 1e-4);
    compare(std::string(name) + " grad", widen(grad), grad_ref, tolerance<T>());
}

// Runs the checks of the families whose name contains `filter` (all when empty).
template <typename T> void check_all(const std::string &filter) {
    auto wants = [&](const char *family) { return std::string(family).find(filter) != std::string::npos; };
    if (wants("rms_norm")) {
        check_rms_norm<T>(13, 37);
        check_rms_norm<T>(3, 1031);
    }
    if (wants("rope")) {
        for (bool per_row : {false, true})
            for (bool interleaved : {false, true})
                for (bool inverse : {false, true})
                    check_rope<T>(2, 3, 7, 10, per_row, interleaved, inverse);
        check_rope<T>(1, 2, 3, 128, true, false, false);
    }
    if (wants("softmax")) {
        for (int mask : {0, 1, 2})
            for (bool causal : {false, true}) check_softmax<T>(2, 3, 7, 45, mask, causal);
        check_softmax<T>(1, 1, 3, 1000, 0, false);
    }
    if (wants("attention")) {
        const AttnCase cases[] = {
            {"attention causal gqa left pad", 2, 4, 2, 37, 37, 10, true, {0, 5}, false},
            {"attention kv cache", 2, 4, 2, 5, 40, 10, true, {3, 0}, false},
            {"attention non-causal padding", 2, 4, 2, 7, 45, 10, false, {0, 4}, false},
            {"attention packed segments", 2, 4, 2, 37, 37, 10, true, {0, 0}, true},
            {"attention d=40", 1, 2, 1, 20, 20, 40, true, {0}, false},
            {"attention d=128", 1, 2, 2, 18, 18, 128, true, {2}, false},
            {"attention d=256", 1, 1, 1, 17, 17, 256, false, {0}, false},
        };
        for (const auto &c : cases) check_attention<T>(c);
    }
    if (wants("selective_log_softmax")) {
        check_selective<T>(9, 13, 37, 1);
        for (uint32_t chunk : {100u, 4096u}) check_selective<T>(9, 13, 301, chunk);
    }
    if (wants("grpo")) {
        for (int aggregation : {0, 1, 2})
            for (double beta : {0.0, 0.04}) check_grpo<T>(aggregation, beta);
    }
}

// Usage: check [FAMILY] — e.g. `check attention`; no argument runs everything.
int main(int argc, char **argv) {
    const std::string filter = argc > 1 ? argv[1] : "";
    check_all<float>(filter);
    check_all<bf16>(filter);
    check_all<__half>(filter);
    if (std::string("rms_norm").find(filter) != std::string::npos)
        check_rms_norm<float>(1100, 5);  // more rows than weight-gradient chunks
    if (std::string("selective_log_softmax").find(filter) != std::string::npos)
        check_selective_rejects_bad_targets();
    std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "ALL OK", failures);
    return failures ? 1 : 0;
}
