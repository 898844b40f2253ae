//! Parity of every custom op (forward and backward) with a reference built from plain,
//! differentiable candle ops, on random inputs of odd sizes.
//!
//! Error norm: `max |got - want| / max |want|` over all elements (the infinity norm of the
//! difference relative to the infinity norm of the reference; absolute when the reference is
//! all zeros). The op runs in f32 (tolerance 1e-5) and f64 (tolerance 1e-10); the reference
//! always runs in f64 on the same (f32-representable) inputs. Gradients come from
//! `.backward()` on `Σ_k (out_k · w_k).sum()` with fixed random weights `w_k`, compared for
//! every differentiable input.

use candle_core::{DType, Device, Result, Tensor, Var, D};
use distill::ops::{
    attention, grpo_loss, masked_softmax, rms_norm, rope, selective_log_softmax, sft_loss,
    softmax_last_dim, swiglu, AttentionMask, GrpoAggregation, GrpoConfig, GrpoInputs, RopeLayout,
    SoftmaxMask, DEFAULT_VOCAB_CHUNK, IGNORE_TARGET,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CPU: Device = Device::Cpu;

/// Uniform values in `[lo, hi)`, rounded to f32 so both dtypes see identical inputs.
fn uniform(rng: &mut ChaCha8Rng, dims: &[usize], lo: f64, hi: f64) -> Tensor {
    let n: usize = dims.iter().product();
    let data: Vec<f64> = (0..n)
        .map(|_| rng.random_range(lo..hi) as f32 as f64)
        .collect();
    Tensor::from_vec(data, dims, &CPU).unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Relative infinity-norm error, see the module docs.
fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims(), "shape mismatch");
    let diff = max_abs(&(got.to_dtype(DType::F64).unwrap() - want).unwrap());
    let scale = max_abs(want);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let err = rel_err(got, want);
    assert!(err < tol, "{what}: relative error {err:e} >= {tol:e}");
    assert!(
        !got.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .any(|v| v.is_nan()),
        "{what}: NaN in output"
    );
}

type Graph<'a> = &'a dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>;

/// Runs `op` (in f32 and f64) and `reference` (in f64) on Vars made from `inputs`, and
/// compares outputs and the gradients of every input.
fn check(name: &str, inputs: &[Tensor], op: Graph<'_>, reference: Graph<'_>) {
    let vars = |dtype: DType| -> Vec<Var> {
        inputs
            .iter()
            .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap())
            .collect()
    };
    let tensors =
        |vs: &[Var]| -> Vec<Tensor> { vs.iter().map(|v| v.as_tensor().clone()).collect() };
    let ref_vars = vars(DType::F64);
    let want = reference(&tensors(&ref_vars)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let weights: Vec<Tensor> = want
        .iter()
        .map(|w| uniform(&mut rng, w.dims(), -1.0, 1.0))
        .collect();
    let weighted_sum = |outs: &[Tensor], dtype: DType| -> Tensor {
        let mut total = Tensor::zeros((), dtype, &CPU).unwrap();
        for (o, w) in outs.iter().zip(&weights) {
            let term = (o * w.to_dtype(dtype).unwrap()).unwrap().sum_all().unwrap();
            total = (total + term).unwrap();
        }
        total
    };
    let want_grads = weighted_sum(&want, DType::F64).backward().unwrap();
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-10)] {
        let op_vars = vars(dtype);
        let got = op(&tensors(&op_vars)).unwrap();
        assert_eq!(got.len(), want.len(), "{name}: output count");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.dtype(), dtype, "{name}: output {k} dtype");
            assert_close(&format!("{name} {dtype:?} output {k}"), g, w, tol);
        }
        let grads = weighted_sum(&got, dtype).backward().unwrap();
        for (i, (ov, rv)) in op_vars.iter().zip(&ref_vars).enumerate() {
            let g = grads.get(ov.as_tensor());
            let w = want_grads.get(rv.as_tensor());
            match (g, w) {
                (Some(g), Some(w)) => {
                    assert_close(&format!("{name} {dtype:?} grad of input {i}"), g, w, tol)
                }
                (None, Some(w)) => assert_eq!(max_abs(w), 0.0, "{name}: missing grad {i}"),
                (g, None) => panic!(
                    "{name}: reference has no grad for input {i} (op: {:?})",
                    g.is_some()
                ),
            }
        }
    }
}

// ---------------------------------------------------------------- rms_norm

fn rms_norm_reference(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let inv_rms = x
        .sqr()?
        .mean_keepdim(D::Minus1)?
        .affine(1.0, eps)?
        .sqrt()?
        .recip()?;
    x.broadcast_mul(&inv_rms)?.broadcast_mul(w)
}

#[test]
fn rms_norm_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = uniform(&mut rng, &[3, 13, 37], -2.0, 2.0);
    let w = uniform(&mut rng, &[37], 0.5, 1.5);
    let eps = 1e-6;
    check(
        "rms_norm",
        &[x, w],
        &|v| Ok(vec![rms_norm(&v[0], &v[1], eps)?]),
        &|v| Ok(vec![rms_norm_reference(&v[0], &v[1], eps)?]),
    );
}

// ---------------------------------------------------------------- swiglu

#[test]
fn swiglu_matches_silu_times_up() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // More elements than one rayon task holds, so chunk boundaries are crossed.
    let gate = uniform(&mut rng, &[3, 71, 97], -6.0, 6.0);
    let up = uniform(&mut rng, &[3, 71, 97], -2.0, 2.0);
    check(
        "swiglu",
        &[gate, up],
        &|v| Ok(vec![swiglu(&v[0], &v[1])?]),
        &|v| {
            let sigmoid = v[0].neg()?.exp()?.affine(1.0, 1.0)?.recip()?;
            Ok(vec![((&v[0] * sigmoid)? * &v[1])?])
        },
    );
}

// ---------------------------------------------------------------- rope

fn rope_reference(x: &Tensor, cos: &Tensor, sin: &Tensor, layout: RopeLayout) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    let half = d / 2;
    let (cos, sin) = if cos.rank() == 2 {
        (
            cos.unsqueeze(0)?.unsqueeze(0)?,
            sin.unsqueeze(0)?.unsqueeze(0)?,
        )
    } else {
        (cos.unsqueeze(1)?, sin.unsqueeze(1)?)
    };
    let (a, c) = match layout {
        RopeLayout::HalfSplit => (x.narrow(3, 0, half)?, x.narrow(3, half, half)?),
        RopeLayout::Interleaved => {
            let pairs = x.reshape((b, h, t, half, 2))?;
            (
                pairs.narrow(4, 0, 1)?.squeeze(4)?,
                pairs.narrow(4, 1, 1)?.squeeze(4)?,
            )
        }
    };
    let first = (a.broadcast_mul(&cos)? - c.broadcast_mul(&sin)?)?;
    let second = (c.broadcast_mul(&cos)? + a.broadcast_mul(&sin)?)?;
    match layout {
        RopeLayout::HalfSplit => Tensor::cat(&[first, second], 3),
        RopeLayout::Interleaved => Tensor::stack(&[first, second], 4)?.reshape((b, h, t, d)),
    }
}

/// Angles for per-row positions: row 1 is left padded by 3 (positions start at 0 after it).
fn rope_angles(b: usize, t: usize, half: usize) -> (Tensor, Tensor) {
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for row in 0..b {
        for pos in 0..t {
            let p = pos.saturating_sub(3 * row) as f64;
            for i in 0..half {
                let angle = p / 10000f64.powf(2.0 * i as f64 / (2 * half) as f64);
                cos.push(angle.cos() as f32 as f64);
                sin.push(angle.sin() as f32 as f64);
            }
        }
    }
    (
        Tensor::from_vec(cos, (b, t, half), &CPU).unwrap(),
        Tensor::from_vec(sin, (b, t, half), &CPU).unwrap(),
    )
}

#[test]
fn rope_matches_reference_in_both_layouts() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (b, h, t, d) = (2, 3, 13, 10);
    let x = uniform(&mut rng, &[b, h, t, d], -1.0, 1.0);
    let (cos, sin) = rope_angles(b, t, d / 2);
    for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
        for shared in [false, true] {
            let (cos, sin) = if shared {
                (cos.get(0).unwrap(), sin.get(0).unwrap())
            } else {
                (cos.clone(), sin.clone())
            };
            let consts = |x: &Tensor| -> Result<(Tensor, Tensor)> {
                Ok((cos.to_dtype(x.dtype())?, sin.to_dtype(x.dtype())?))
            };
            check(
                &format!("rope {layout:?} shared={shared}"),
                std::slice::from_ref(&x),
                &|v| {
                    let (c, s) = consts(&v[0])?;
                    Ok(vec![rope(&v[0], &c, &s, layout)?])
                },
                &|v| {
                    let (c, s) = consts(&v[0])?;
                    Ok(vec![rope_reference(&v[0], &c, &s, layout)?])
                },
            );
        }
    }
}

// ---------------------------------------------------------------- softmax

/// Softmax over the last dim where `allowed` (0/1, broadcastable) marks visible entries;
/// rows without visible entries give zeros.
fn masked_softmax_reference(z: &Tensor, allowed: &Tensor) -> Result<Tensor> {
    let allowed = allowed.broadcast_as(z.shape())?.to_dtype(z.dtype())?;
    let visible = allowed.ne(0.0)?;
    let z = visible.where_cond(z, &z.zeros_like()?)?;
    let shift = z.max_keepdim(D::Minus1)?.detach();
    let e = z.broadcast_sub(&shift)?.exp()?.mul(&allowed)?;
    let empty_row = allowed.max_keepdim(D::Minus1)?.affine(-1.0, 1.0)?;
    let denominator = (e.sum_keepdim(D::Minus1)? + empty_row)?;
    e.broadcast_div(&denominator)
}

#[test]
fn softmax_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = uniform(&mut rng, &[2, 5, 13, 37], -4.0, 4.0);
    check(
        "softmax_last_dim",
        &[x],
        &|v| Ok(vec![softmax_last_dim(&v[0])?]),
        &|v| Ok(vec![masked_softmax_reference(&v[0], &v[0].ones_like()?)?]),
    );
}

#[test]
fn masked_softmax_matches_reference_with_causal_and_additive_masks() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (tq, tk) = (7, 13);
    let x = uniform(&mut rng, &[2, 3, tq, tk], -4.0, 4.0);
    // Additive mask [Tq, Tk] broadcast over batch and heads: random biases, some -inf
    // entries, and row 2 fully masked.
    let mut additive = Vec::new();
    for i in 0..tq {
        for j in 0..tk {
            let masked = i == 2 || (i + j) % 5 == 0;
            additive.push(if masked {
                f64::NEG_INFINITY
            } else {
                rng.random_range(-1.0..1.0f64) as f32 as f64
            });
        }
    }
    let additive = Tensor::from_vec(additive, (tq, tk), &CPU).unwrap();
    let finite_part = additive.clamp(-10.0, 10.0).unwrap();
    let additive_allowed = additive.ge(-10.0).unwrap();
    let causal_allowed: Vec<u8> = (0..tq)
        .flat_map(|i| (0..tk).map(move |j| u8::from(j <= i + tk - tq)))
        .collect();
    let causal_allowed = Tensor::from_vec(causal_allowed, (tq, tk), &CPU).unwrap();
    for (additive_on, causal) in [(true, false), (false, true), (true, true)] {
        let allowed = match (additive_on, causal) {
            (true, true) => (&additive_allowed * &causal_allowed).unwrap(),
            (true, false) => additive_allowed.clone(),
            _ => causal_allowed.clone(),
        };
        let bias = if additive_on {
            finite_part.clone()
        } else {
            finite_part.zeros_like().unwrap()
        };
        check(
            &format!("masked_softmax additive={additive_on} causal={causal}"),
            std::slice::from_ref(&x),
            &|v| {
                let additive = additive.to_dtype(v[0].dtype())?;
                let mask = SoftmaxMask {
                    additive: additive_on.then_some(&additive),
                    causal,
                };
                Ok(vec![masked_softmax(&v[0], mask)?])
            },
            &|v| {
                let z = v[0].broadcast_add(&bias)?;
                Ok(vec![masked_softmax_reference(&z, &allowed)?])
            },
        );
    }
}

// ---------------------------------------------------------------- attention

/// Host-side mask `[B, 1, T, Tk]` (1 = allowed) equal to the rules of [`AttentionMask`].
fn attention_allowed(
    b: usize,
    t: usize,
    tk: usize,
    causal: bool,
    left_pad: &[usize],
    segments: Option<&[Vec<u32>]>,
) -> Tensor {
    let mut allowed = Vec::new();
    for row in 0..b {
        for i in 0..t {
            for j in 0..tk {
                let causal_ok = !causal || j <= i + tk - t;
                let pad_ok = j >= left_pad[row];
                let seg_ok = segments.is_none_or(|s| s[row][i] == s[row][j]);
                allowed.push(u8::from(causal_ok && pad_ok && seg_ok));
            }
        }
    }
    Tensor::from_vec(allowed, (b, 1, t, tk), &CPU).unwrap()
}

fn attention_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    allowed: &Tensor,
) -> Result<Tensor> {
    let (b, hq, _t, d) = q.dims4()?;
    let (_, hkv, tk, _) = k.dims4()?;
    let expand = |x: &Tensor| -> Result<Tensor> {
        x.unsqueeze(2)?
            .broadcast_as((b, hkv, hq / hkv, tk, d))?
            .contiguous()?
            .reshape((b, hq, tk, d))
    };
    let (k, v) = (expand(k)?, expand(v)?);
    let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    let p = masked_softmax_reference(&scores, allowed)?;
    p.matmul(&v)
}

struct AttentionCase {
    name: &'static str,
    b: usize,
    t: usize,
    tk: usize,
    causal: bool,
    left_pad: Vec<usize>,
    segments: Option<Vec<Vec<u32>>>,
}

fn check_attention(case: &AttentionCase) {
    let (hq, hkv, d) = (6, 2, 10);
    let scale = 1.0 / (d as f64).sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let q = uniform(&mut rng, &[case.b, hq, case.t, d], -1.5, 1.5);
    let k = uniform(&mut rng, &[case.b, hkv, case.tk, d], -1.5, 1.5);
    let v = uniform(&mut rng, &[case.b, hkv, case.tk, d], -1.5, 1.5);
    let pad = &case.left_pad;
    let key_padding: Vec<u8> = (0..case.b)
        .flat_map(|row| (0..case.tk).map(move |j| u8::from(j >= pad[row])))
        .collect();
    let mask = AttentionMask {
        causal: case.causal,
        key_padding: Some(Tensor::from_vec(key_padding, (case.b, case.tk), &CPU).unwrap()),
        segment_ids: case
            .segments
            .as_ref()
            .map(|s| Tensor::from_vec(s.concat(), (case.b, case.t), &CPU).unwrap()),
    };
    let allowed = attention_allowed(
        case.b,
        case.t,
        case.tk,
        case.causal,
        &case.left_pad,
        case.segments.as_deref(),
    );
    check(
        case.name,
        &[q, k, v],
        &|x| Ok(vec![attention(&x[0], &x[1], &x[2], scale, &mask)?]),
        &|x| {
            Ok(vec![attention_reference(
                &x[0], &x[1], &x[2], scale, &allowed,
            )?])
        },
    );
}

#[test]
fn attention_causal_gqa_matches_reference() {
    check_attention(&AttentionCase {
        name: "attention causal gqa",
        b: 2,
        t: 13,
        tk: 13,
        causal: true,
        left_pad: vec![0, 0],
        segments: None,
    });
}

#[test]
fn attention_left_padding_with_kv_cache_matches_reference() {
    check_attention(&AttentionCase {
        name: "attention kv cache left pad",
        b: 2,
        t: 5,
        tk: 13,
        causal: true,
        left_pad: vec![3, 0],
        segments: None,
    });
}

#[test]
fn attention_non_causal_key_padding_matches_reference() {
    check_attention(&AttentionCase {
        name: "attention non-causal padding",
        b: 2,
        t: 7,
        tk: 11,
        causal: false,
        left_pad: vec![0, 4],
        segments: None,
    });
}

#[test]
fn attention_packed_segments_matches_reference() {
    check_attention(&AttentionCase {
        name: "attention packed segments",
        b: 2,
        t: 13,
        tk: 13,
        causal: true,
        left_pad: vec![0, 0],
        segments: Some(vec![
            vec![0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2],
            vec![5, 5, 5, 5, 5, 5, 5, 9, 9, 9, 9, 9, 9],
        ]),
    });
}

#[test]
fn attention_spanning_several_query_blocks_matches_reference() {
    // Longer than one query block (128 rows), queries offset from the keys, left padded.
    check_attention(&AttentionCase {
        name: "attention several query blocks",
        b: 1,
        t: 141,
        tk: 150,
        causal: true,
        left_pad: vec![5],
        segments: None,
    });
}

#[test]
fn attention_fully_masked_rows_are_zero() {
    // Prefill with row 1 left padded by 4: its first 4 queries see no key at all.
    let case = AttentionCase {
        name: "attention fully masked rows",
        b: 2,
        t: 13,
        tk: 13,
        causal: true,
        left_pad: vec![0, 4],
        segments: None,
    };
    check_attention(&case);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let q = uniform(&mut rng, &[2, 6, 13, 10], -1.0, 1.0)
        .to_dtype(DType::F32)
        .unwrap();
    let kv = uniform(&mut rng, &[2, 2, 13, 10], -1.0, 1.0)
        .to_dtype(DType::F32)
        .unwrap();
    let padding: Vec<u8> = (0..26)
        .map(|idx| u8::from(idx < 13 || idx % 13 >= 4))
        .collect();
    let mask = AttentionMask {
        causal: true,
        key_padding: Some(Tensor::from_vec(padding, (2, 13), &CPU).unwrap()),
        segment_ids: None,
    };
    let q = Var::from_tensor(&q).unwrap();
    let out = attention(q.as_tensor(), &kv, &kv, 0.3, &mask).unwrap();
    let masked_rows = out.get(1).unwrap().narrow(1, 0, 4).unwrap();
    assert_eq!(max_abs(&masked_rows), 0.0);
    let grads = out.sum_all().unwrap().backward().unwrap();
    let dq = grads.get(q.as_tensor()).unwrap();
    assert_eq!(max_abs(&dq.get(1).unwrap().narrow(1, 0, 4).unwrap()), 0.0);
    assert!(max_abs(dq) > 0.0);
}

// ---------------------------------------------------------------- selective log-softmax

fn selective_reference(h: &Tensor, w: &Tensor, targets: &[u32]) -> Result<Vec<Tensor>> {
    let logits = h.matmul(&w.t()?)?;
    let shift = logits.max_keepdim(1)?.detach();
    let z = logits.broadcast_sub(&shift)?;
    let log_probs = z.broadcast_sub(&z.exp()?.sum_keepdim(1)?.log()?)?;
    let valid: Vec<f64> = targets
        .iter()
        .map(|&t| f64::from(u8::from(t != IGNORE_TARGET)))
        .collect();
    let valid = Tensor::from_vec(valid, targets.len(), &CPU)?.to_dtype(h.dtype())?;
    let index: Vec<u32> = targets
        .iter()
        .map(|&t| if t == IGNORE_TARGET { 0 } else { t })
        .collect();
    let index = Tensor::from_vec(index, (targets.len(), 1), &CPU)?;
    let logp = log_probs.gather(&index, 1)?.squeeze(1)?.mul(&valid)?;
    let entropy = (log_probs.exp()? * &log_probs)?
        .sum(1)?
        .neg()?
        .mul(&valid)?;
    Ok(vec![logp, entropy])
}

fn selective_case(seed: u64, n: usize, d: usize, vocab: usize) -> (Tensor, Tensor, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let h = uniform(&mut rng, &[n, d], -1.0, 1.0);
    let w = uniform(&mut rng, &[vocab, d], -1.0, 1.0);
    let targets = (0..n)
        .map(|i| {
            if i % 4 == 1 {
                IGNORE_TARGET
            } else {
                rng.random_range(0..vocab as u32)
            }
        })
        .collect();
    (h, w, targets)
}

#[test]
fn selective_log_softmax_matches_reference_for_all_chunk_sizes() {
    let (n, d, vocab) = (21, 37, 1013);
    let (h, w, targets) = selective_case(8, n, d, vocab);
    let target_tensor = Tensor::from_vec(targets.clone(), n, &CPU).unwrap();
    for chunk in [1, 100, DEFAULT_VOCAB_CHUNK, 5000] {
        check(
            &format!("selective_log_softmax chunk={chunk}"),
            &[h.clone(), w.clone()],
            &|v| {
                let out = selective_log_softmax(&v[0], &v[1], &target_tensor, chunk)?;
                Ok(vec![out.logp, out.entropy])
            },
            &|v| selective_reference(&v[0], &v[1], &targets),
        );
    }
}

#[test]
fn selective_log_softmax_keeps_leading_dims_and_sft_loss_matches() {
    let (n, d, vocab) = (14, 9, 301);
    let (h, w, targets) = selective_case(9, n, d, vocab);
    let target_tensor = Tensor::from_vec(targets.clone(), (2, 7), &CPU).unwrap();
    let counted = targets.iter().filter(|&&t| t != IGNORE_TARGET).count() as f64;
    check(
        "sft_loss",
        &[h.reshape((2, 7, d)).unwrap(), w],
        &|v| {
            let out = selective_log_softmax(&v[0], &v[1], &target_tensor, 64)?;
            assert_eq!(out.logp.dims(), [2, 7]);
            Ok(vec![sft_loss(&v[0], &v[1], &target_tensor, 64)?])
        },
        &|v| {
            let logp = &selective_reference(&v[0].reshape((n, d))?, &v[1], &targets)?[0];
            Ok(vec![(logp.sum_all()? * (-1.0 / counted))?])
        },
    );
}

// ---------------------------------------------------------------- GRPO

struct GrpoData {
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
}

fn grpo_data() -> GrpoData {
    let (b, t) = (5, 11);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let logp = uniform(&mut rng, &[b, t], -3.0, -0.1);
    let old_logp = (&logp + uniform(&mut rng, &[b, t], -0.4, 0.4)).unwrap();
    let ref_logp = (&logp + uniform(&mut rng, &[b, t], -0.3, 0.3)).unwrap();
    let advantages = Tensor::new(&[1.2f64, -0.7, 0.0, 0.4, -1.5], &CPU).unwrap();
    // Completions of different lengths; sequence 3 has no tokens at all.
    let lengths = [11usize, 6, 9, 0, 3];
    let mask: Vec<f64> = lengths
        .iter()
        .flat_map(|&len| (0..t).map(move |i| f64::from(u8::from(i < len))))
        .collect();
    GrpoData {
        logp,
        old_logp,
        ref_logp,
        advantages,
        mask: Tensor::from_vec(mask, (b, t), &CPU).unwrap(),
    }
}

fn grpo_reference(
    logp: &Tensor,
    data: &GrpoData,
    config: &GrpoConfig,
    with_ref: bool,
) -> Result<Tensor> {
    let dt = logp.dtype();
    let (b, _) = logp.dims2()?;
    let mask = data.mask.to_dtype(dt)?;
    let adv = data.advantages.to_dtype(dt)?.unsqueeze(1)?;
    let ratio = (logp - data.old_logp.to_dtype(dt)?)?.exp()?;
    let unclipped = ratio.broadcast_mul(&adv)?;
    let clipped = ratio
        .clamp(1.0 - config.eps_low, 1.0 + config.eps_high)?
        .broadcast_mul(&adv)?;
    let mut per_token = unclipped.minimum(&clipped)?.neg()?;
    if with_ref {
        let delta = (data.ref_logp.to_dtype(dt)? - logp)?;
        let kl = ((delta.exp()? - &delta)? - 1.0)?;
        per_token = (per_token + (kl * config.beta)?)?;
    }
    let masked = (per_token * &mask)?;
    match config.aggregation {
        GrpoAggregation::Grpo => {
            let counts = mask.sum(1)?.clamp(1.0, f64::INFINITY)?;
            masked.sum(1)?.div(&counts)?.mean(0)
        }
        GrpoAggregation::DrGrpo { max_completion_len } => {
            masked.sum_all()? / (b * max_completion_len) as f64
        }
        GrpoAggregation::Dapo => {
            let count = mask.sum_all()?.to_scalar::<f64>().unwrap_or(0.0).max(1.0);
            masked.sum_all()? / count
        }
    }
}

#[test]
fn grpo_loss_matches_reference_for_every_mode() {
    let data = grpo_data();
    let modes = [
        GrpoAggregation::Grpo,
        GrpoAggregation::DrGrpo {
            max_completion_len: 16,
        },
        GrpoAggregation::Dapo,
    ];
    for aggregation in modes {
        for beta in [0.0, 0.04] {
            let config = GrpoConfig {
                eps_low: 0.2,
                eps_high: 0.28,
                beta,
                aggregation,
            };
            let with_ref = beta != 0.0;
            check(
                &format!("grpo {aggregation:?} beta={beta}"),
                std::slice::from_ref(&data.logp),
                &|v| {
                    let dt = v[0].dtype();
                    let (old, reference) =
                        (data.old_logp.to_dtype(dt)?, data.ref_logp.to_dtype(dt)?);
                    let (adv, mask) = (data.advantages.to_dtype(dt)?, data.mask.to_dtype(dt)?);
                    let inputs = GrpoInputs {
                        logp: &v[0],
                        old_logp: &old,
                        ref_logp: with_ref.then_some(&reference),
                        advantages: &adv,
                        completion_mask: &mask,
                    };
                    Ok(vec![grpo_loss(&inputs, &config)?.loss])
                },
                &|v| Ok(vec![grpo_reference(&v[0], &data, &config, with_ref)?]),
            );
        }
    }
}

#[test]
fn grpo_metrics_match_direct_formulas() {
    let data = grpo_data();
    let config = GrpoConfig {
        eps_low: 0.2,
        eps_high: 0.28,
        beta: 0.04,
        aggregation: GrpoAggregation::Dapo,
    };
    let inputs = GrpoInputs {
        logp: &data.logp,
        old_logp: &data.old_logp,
        ref_logp: Some(&data.ref_logp),
        advantages: &data.advantages,
        completion_mask: &data.mask,
    };
    let out = grpo_loss(&inputs, &config).unwrap();
    let host = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let (logp, old, reference, mask) = (
        host(&data.logp),
        host(&data.old_logp),
        host(&data.ref_logp),
        host(&data.mask),
    );
    let adv = host(&data.advantages);
    let (mut clipped, mut kl, mut ratio_sum, mut count) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..logp.len() {
        if mask[i] == 0.0 {
            continue;
        }
        let a = adv[i / 11];
        let ratio = (logp[i] - old[i]).exp();
        if (ratio < 0.8 && a < 0.0) || (ratio > 1.28 && a > 0.0) {
            clipped += 1.0;
        }
        let delta = reference[i] - logp[i];
        kl += delta.exp() - delta - 1.0;
        ratio_sum += ratio;
        count += 1.0;
    }
    assert!(clipped > 0.0, "test data must exercise clipping");
    let scalar = |t: &Tensor| t.to_scalar::<f64>().unwrap();
    assert!((scalar(&out.clip_fraction) - clipped / count).abs() < 1e-12);
    assert!((scalar(&out.mean_kl) - kl / count).abs() < 1e-12);
    assert!((scalar(&out.mean_ratio) - ratio_sum / count).abs() < 1e-12);
}
