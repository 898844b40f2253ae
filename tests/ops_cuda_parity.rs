//! Parity of the CUDA kernels of every custom op (forward and backward) with the CPU op, on
//! random inputs of odd sizes with padding, masks and segment ids, and of a tiny decoder's
//! forward and backward on CUDA with the CPU. Needs `--features cuda`; every test that needs a
//! GPU prints a line and returns when no CUDA device can be opened. One test, which needs no
//! GPU, checks that the embedded PTX has every kernel entry point and prints its version and
//! target.
//!
//! Each op runs on the GPU in f32 (tolerance 1e-4), bf16 and f16 (1e-2). The reference is the CPU
//! op in f32 on the same inputs, rounded to the run's dtype first, so that only the kernels'
//! arithmetic is compared. Error norm: `max |got - want| / max |want|` (absolute when the
//! reference is all zeros). Gradients come from `.backward()` on `Σ_k (out_k · w_k).sum()`
//! with fixed random weights `w_k` (bf16-representable), compared for every float input.
//! Before every GPU run the device's memory pool is filled with NaN bytes and released, so an
//! output element a kernel leaves unwritten most likely reads back as NaN and fails the test.
#![cfg(feature = "cuda")]

#[path = "support/adamw_fixture.rs"]
mod adamw_fixture;
mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use distill::ops::{
    attention, attention_with, grpo_loss, masked_softmax, rms_norm, rope, selective_log_softmax,
    sft_loss, softmax_last_dim, AttentionKernel, AttentionMask, GrpoAggregation, GrpoConfig,
    GrpoInputs, RopeLayout, SoftmaxMask, IGNORE_TARGET,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CPU: Device = Device::Cpu;

/// The CUDA device, or `None` (with a line on stderr) when there is none.
fn gpu(test: &str) -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(dev) => Some(dev),
        Err(e) => {
            // First line only: with RUST_BACKTRACE set, candle errors carry a backtrace.
            let reason = e.to_string();
            let reason = reason.lines().next().unwrap_or_default();
            eprintln!("skipping {test}: no CUDA device ({reason})");
            None
        }
    }
}

/// Fills the device's memory pool with NaN bytes and frees them again (see the module docs).
fn poison(dev: &Device) {
    let nan_bytes = Tensor::full(0xffu8, 64 << 20, dev).unwrap();
    drop(nan_bytes);
}

/// Uniform f32 values in `[lo, hi)`.
fn uniform(rng: &mut ChaCha8Rng, dims: &[usize], lo: f32, hi: f32) -> Tensor {
    let n: usize = dims.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(data, dims, &CPU).unwrap()
}

fn host_f64(t: &Tensor) -> Vec<f64> {
    t.to_device(&CPU)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Relative infinity-norm error, see the module docs; `None` if `got` holds a NaN.
fn rel_err(got: &Tensor, want: &Tensor) -> Option<f64> {
    assert_eq!(got.dims(), want.dims(), "shape mismatch");
    let (got, want) = (host_f64(got), host_f64(want));
    if got.iter().any(|v| v.is_nan()) {
        return None;
    }
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
    Some(if scale == 0.0 { diff } else { diff / scale })
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    match rel_err(got, want) {
        None => panic!("{what}: NaN in the output (an element left unwritten?)"),
        Some(err) => assert!(err < tol, "{what}: relative error {err:e} >= {tol:e}"),
    }
}

/// How one run of an op sees its inputs: the device and the storage dtype of the GPU run
/// (the reference run is on the CPU in f32, on values rounded to that dtype).
struct Run {
    device: Device,
    dtype: DType,
}

impl Run {
    fn is_reference(&self) -> bool {
        self.device.is_cpu()
    }

    /// A float constant (angles, masks, log-probs) as this run sees it.
    fn float(&self, t: &Tensor) -> Tensor {
        let rounded = t.to_dtype(self.dtype).unwrap();
        if self.is_reference() {
            rounded.to_dtype(DType::F32).unwrap()
        } else {
            rounded.to_device(&self.device).unwrap()
        }
    }

    /// A non-float input (ids, padding, segment ids) on this run's device.
    fn on(&self, t: &Tensor) -> Tensor {
        t.to_device(&self.device).unwrap()
    }
}

type Graph<'a> = &'a dyn Fn(&[Tensor], &Run) -> Result<Vec<Tensor>>;

/// Runs `op` on the CPU in f32 (reference) and on `dev` in f32, bf16 and f16, and compares the
/// outputs and the gradients of every input.
fn check(dev: &Device, name: &str, inputs: &[Tensor], op: Graph<'_>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 1e-2), (DType::F16, 1e-2)] {
        let reference = Run { device: CPU, dtype };
        let run = Run {
            device: dev.clone(),
            dtype,
        };
        let ref_vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(&reference.float(t)).unwrap())
            .collect();
        let gpu_vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(&run.float(t)).unwrap())
            .collect();
        let tensors =
            |vs: &[Var]| -> Vec<Tensor> { vs.iter().map(|v| v.as_tensor().clone()).collect() };
        let want = op(&tensors(&ref_vars), &reference).unwrap();
        poison(dev);
        let got = op(&tensors(&gpu_vars), &run).unwrap();
        assert_eq!(got.len(), want.len(), "{name}: output count");
        let weights: Vec<Tensor> = want
            .iter()
            .map(|w| {
                let w = uniform(&mut rng, w.dims(), -1.0, 1.0);
                w.to_dtype(DType::BF16)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
            })
            .collect();
        let weighted_sum = |outs: &[Tensor], r: &Run| -> Tensor {
            let mut total: Option<Tensor> = None;
            for (o, w) in outs.iter().zip(&weights) {
                let term = (o * r.float(w)).unwrap().sum_all().unwrap();
                total = Some(match total {
                    None => term,
                    Some(t) => (t + term).unwrap(),
                });
            }
            total.unwrap()
        };
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.dtype(), dtype, "{name}: output {k} dtype");
            assert!(g.device().is_cuda(), "{name}: output {k} left the GPU");
            assert_close(&format!("{name} {dtype:?} output {k}"), g, w, tol);
        }
        let want_grads = weighted_sum(&want, &reference).backward().unwrap();
        poison(dev);
        let grads = weighted_sum(&got, &run).backward().unwrap();
        for (i, (gv, rv)) in gpu_vars.iter().zip(&ref_vars).enumerate() {
            let what = format!("{name} {dtype:?} grad of input {i}");
            match (grads.get(gv.as_tensor()), want_grads.get(rv.as_tensor())) {
                (Some(g), Some(w)) => {
                    assert_eq!(g.dtype(), dtype, "{what}: dtype");
                    assert_close(&what, g, w, tol);
                }
                (None, None) => {}
                (g, w) => panic!(
                    "{what}: present on GPU {}, on CPU {}",
                    g.is_some(),
                    w.is_some()
                ),
            }
        }
    }
}

// ---------------------------------------------------------------- rms_norm

#[test]
fn rms_norm_matches_cpu() {
    let Some(dev) = gpu("rms_norm_matches_cpu") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // A short row (fewer channels than threads) and a long one (several per thread).
    for dims in [vec![3, 13, 37], vec![5, 1031]] {
        let x = uniform(&mut rng, &dims, -2.0, 2.0);
        let w = uniform(&mut rng, &[dims[dims.len() - 1]], 0.5, 1.5);
        check(&dev, &format!("rms_norm {dims:?}"), &[x, w], &|v, _| {
            Ok(vec![rms_norm(&v[0], &v[1], 1e-6)?])
        });
    }
}

// ---------------------------------------------------------------- rope

/// Angles for per-row positions: row r is left padded by 3·r.
fn rope_angles(b: usize, t: usize, half: usize) -> (Tensor, Tensor) {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for row in 0..b {
        for pos in 0..t {
            let p = pos.saturating_sub(3 * row) as f32;
            for i in 0..half {
                let angle = p / 10000f32.powf(2.0 * i as f32 / (2 * half) as f32);
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (
        Tensor::from_vec(cos, (b, t, half), &CPU).unwrap(),
        Tensor::from_vec(sin, (b, t, half), &CPU).unwrap(),
    )
}

#[test]
fn rope_matches_cpu_in_both_layouts() {
    let Some(dev) = gpu("rope_matches_cpu_in_both_layouts") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (b, h, t, d) in [(2, 3, 13, 10), (3, 2, 7, 128)] {
        let x = uniform(&mut rng, &[b, h, t, d], -1.0, 1.0);
        let (cos, sin) = rope_angles(b, t, d / 2);
        for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
            for shared in [false, true] {
                let (cos, sin) = if shared {
                    (cos.get(1).unwrap(), sin.get(1).unwrap())
                } else {
                    (cos.clone(), sin.clone())
                };
                let name = format!("rope {:?} {layout:?} shared={shared}", x.dims());
                check(&dev, &name, std::slice::from_ref(&x), &|v, run| {
                    Ok(vec![rope(
                        &v[0],
                        &run.float(&cos),
                        &run.float(&sin),
                        layout,
                    )?])
                });
            }
        }
    }
}

// ---------------------------------------------------------------- softmax

#[test]
fn softmax_matches_cpu() {
    let Some(dev) = gpu("softmax_matches_cpu") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for dims in [vec![2, 5, 13, 37], vec![3, 1000], vec![7]] {
        let x = uniform(&mut rng, &dims, -4.0, 4.0);
        check(&dev, &format!("softmax {dims:?}"), &[x], &|v, _| {
            Ok(vec![softmax_last_dim(&v[0])?])
        });
    }
}

#[test]
fn masked_softmax_matches_cpu_with_causal_and_broadcast_masks() {
    let Some(dev) = gpu("masked_softmax_matches_cpu_with_causal_and_broadcast_masks") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (b, h, tq, tk) = (2, 3, 7, 45);
    let x = uniform(&mut rng, &[b, h, tq, tk], -4.0, 4.0);
    // [Tq, Tk] (broadcast over batch and heads) with -inf entries and row 2 fully masked, and
    // [B, 1, Tq, Tk] (broadcast over heads) with batch row 1 left padded by 5.
    let mut shared = Vec::new();
    for i in 0..tq {
        for j in 0..tk {
            let masked = i == 2 || (i + j) % 5 == 0;
            shared.push(if masked {
                f32::NEG_INFINITY
            } else {
                rng.random_range(-1.0..1.0)
            });
        }
    }
    let shared = Tensor::from_vec(shared, (tq, tk), &CPU).unwrap();
    let padded: Vec<f32> = (0..b * tq * tk)
        .map(|idx| {
            let (row, j) = (idx / (tq * tk), idx % tk);
            if row == 1 && j < 5 {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let padded = Tensor::from_vec(padded, (b, 1, tq, tk), &CPU).unwrap();
    for (mask_name, additive) in [
        ("none", None),
        ("[Tq, Tk]", Some(&shared)),
        ("[B, 1, Tq, Tk]", Some(&padded)),
    ] {
        for causal in [false, true] {
            let name = format!("masked_softmax additive={mask_name} causal={causal}");
            check(&dev, &name, std::slice::from_ref(&x), &|v, run| {
                let additive = additive.map(|m| run.float(m));
                let mask = SoftmaxMask {
                    additive: additive.as_ref(),
                    causal,
                };
                Ok(vec![masked_softmax(&v[0], mask)?])
            });
        }
    }
}

// ---------------------------------------------------------------- attention

struct AttentionCase {
    name: &'static str,
    b: usize,
    hq: usize,
    hkv: usize,
    t: usize,
    tk: usize,
    d: usize,
    causal: bool,
    left_pad: Vec<usize>,
    segments: Option<Vec<Vec<u32>>>,
}

fn check_attention(dev: &Device, case: &AttentionCase) {
    check_attention_with(dev, case, AttentionKernel::Fused);
}

/// `case` computed by `kernel` on the GPU against the fused op on the CPU.
fn check_attention_with(dev: &Device, case: &AttentionCase, kernel: AttentionKernel) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (b, t, tk, d) = (case.b, case.t, case.tk, case.d);
    let q = uniform(&mut rng, &[b, case.hq, t, d], -1.5, 1.5);
    let k = uniform(&mut rng, &[b, case.hkv, tk, d], -1.5, 1.5);
    let v = uniform(&mut rng, &[b, case.hkv, tk, d], -1.5, 1.5);
    let pad = &case.left_pad;
    let key_padding: Vec<u8> = (0..b)
        .flat_map(|row| (0..tk).map(move |j| u8::from(j >= pad[row])))
        .collect();
    let key_padding = Tensor::from_vec(key_padding, (b, tk), &CPU).unwrap();
    let segment_ids = case
        .segments
        .as_ref()
        .map(|s| Tensor::from_vec(s.concat(), (b, t), &CPU).unwrap());
    let scale = 1.0 / (d as f64).sqrt();
    check(dev, case.name, &[q, k, v], &|x, run| {
        let mask = AttentionMask {
            causal: case.causal,
            key_padding: Some(run.on(&key_padding)),
            segment_ids: segment_ids.as_ref().map(|s| run.on(s)),
        };
        let kernel = if run.is_reference() {
            AttentionKernel::Fused
        } else {
            kernel
        };
        Ok(vec![attention_with(
            &x[0], &x[1], &x[2], scale, &mask, kernel,
        )?])
    });
}

/// Causal and not, grouped-query heads, left padding, fully masked rows, packed segments and
/// queries offset from the keys.
fn attention_cases() -> Vec<AttentionCase> {
    let base = |name, t, tk, causal, left_pad: Vec<usize>| AttentionCase {
        name,
        b: 2,
        hq: 6,
        hkv: 2,
        t,
        tk,
        d: 10,
        causal,
        left_pad,
        segments: None,
    };
    vec![
        base("attention causal gqa", 13, 13, true, vec![0, 0]),
        base("attention kv cache left pad", 5, 13, true, vec![3, 0]),
        base("attention non-causal padding", 7, 11, false, vec![0, 4]),
        // Row 1's first four queries see no key at all: zero output and gradient.
        base("attention fully masked rows", 13, 13, true, vec![0, 4]),
        AttentionCase {
            segments: Some(vec![
                vec![0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2],
                vec![5, 5, 5, 5, 5, 5, 5, 9, 9, 9, 9, 9, 9],
            ]),
            ..base("attention packed segments", 13, 13, true, vec![0, 0])
        },
        // Several query and key tiles, queries offset from the keys, left padded.
        AttentionCase {
            b: 1,
            ..base("attention several tiles", 141, 150, true, vec![5])
        },
        AttentionCase {
            b: 1,
            ..base("attention several tiles non-causal", 37, 70, false, vec![9])
        },
    ]
}

#[test]
fn attention_matches_cpu_for_every_mask() {
    let Some(dev) = gpu("attention_matches_cpu_for_every_mask") else {
        return;
    };
    for case in &attention_cases() {
        check_attention(&dev, case);
    }
}

#[test]
fn blocked_attention_on_cuda_matches_the_cpu_kernel() {
    let Some(dev) = gpu("blocked_attention_on_cuda_matches_the_cpu_kernel") else {
        return;
    };
    for case in &attention_cases() {
        check_attention_with(&dev, case, AttentionKernel::Blocked);
    }
    // Large enough for two query blocks (2 · 16 · 1,100 scores a row; 2^25 a block), head dim 64.
    let two_blocks = AttentionCase {
        name: "blocked attention, two blocks",
        b: 2,
        hq: 16,
        hkv: 2,
        t: 1100,
        tk: 1100,
        d: 64,
        causal: true,
        left_pad: vec![0, 9],
        segments: None,
    };
    check_attention_with(&dev, &two_blocks, AttentionKernel::Blocked);
}

#[test]
fn attention_matches_cpu_for_real_head_dims() {
    let Some(dev) = gpu("attention_matches_cpu_for_real_head_dims") else {
        return;
    };
    // 64 and 128 are the head dims of the supported models; 128 and 256 need more than
    // 48 KiB of shared memory in the backward kernels, and 256 is the kernels' limit.
    for (name, d) in [
        ("attention d=64", 64),
        ("attention d=128", 128),
        ("attention d=256", 256),
    ] {
        check_attention(
            &dev,
            &AttentionCase {
                name,
                b: 2,
                hq: 4,
                hkv: 1,
                t: 45,
                tk: 45,
                d,
                causal: true,
                left_pad: vec![0, 7],
                segments: None,
            },
        );
    }
}

// ---------------------------------------------------------------- selective log-softmax

fn selective_case(seed: u64, n: usize, d: usize, vocab: usize) -> (Tensor, Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let h = uniform(&mut rng, &[n, d], -1.0, 1.0);
    let w = uniform(&mut rng, &[vocab, d], -1.0, 1.0);
    let targets: Vec<u32> = (0..n)
        .map(|i| {
            if i % 4 == 1 {
                IGNORE_TARGET
            } else {
                rng.random_range(0..vocab as u32)
            }
        })
        .collect();
    (h, w, Tensor::from_vec(targets, n, &CPU).unwrap())
}

#[test]
fn selective_log_softmax_matches_cpu_for_all_chunk_sizes() {
    let Some(dev) = gpu("selective_log_softmax_matches_cpu_for_all_chunk_sizes") else {
        return;
    };
    let (h, w, targets) = selective_case(8, 21, 37, 1013);
    for chunk in [1, 100, 4096, 5000] {
        check(
            &dev,
            &format!("selective_log_softmax chunk={chunk}"),
            &[h.clone(), w.clone()],
            &|v, run| {
                let out = selective_log_softmax(&v[0], &v[1], &run.on(&targets), chunk)?;
                Ok(vec![out.logp, out.entropy])
            },
        );
    }
}

#[test]
fn sft_loss_matches_cpu_with_leading_dims() {
    let Some(dev) = gpu("sft_loss_matches_cpu_with_leading_dims") else {
        return;
    };
    let (h, w, targets) = selective_case(9, 14, 9, 301);
    let targets = targets.reshape((2, 7)).unwrap();
    check(
        &dev,
        "sft_loss",
        &[h.reshape((2, 7, 9)).unwrap(), w],
        &|v, run| Ok(vec![sft_loss(&v[0], &v[1], &run.on(&targets), 64)?]),
    );
}

#[test]
fn selective_log_softmax_rejects_out_of_range_targets_on_cuda() {
    let Some(dev) = gpu("selective_log_softmax_rejects_out_of_range_targets_on_cuda") else {
        return;
    };
    let (h, w, _) = selective_case(10, 4, 8, 50);
    let targets = Tensor::new(&[3u32, IGNORE_TARGET, 50, 60], &dev).unwrap();
    let err = selective_log_softmax(
        &h.to_device(&dev).unwrap(),
        &w.to_device(&dev).unwrap(),
        &targets,
        16,
    )
    .map(|out| out.logp)
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("selective_log_softmax") && err.contains("target 50 out of range"),
        "{err}"
    );
}

// ---------------------------------------------------------------- GRPO

#[test]
fn grpo_loss_matches_cpu_for_every_mode() {
    let Some(dev) = gpu("grpo_loss_matches_cpu_for_every_mode") else {
        return;
    };
    let (b, t) = (5, 11);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let logp = uniform(&mut rng, &[b, t], -3.0, -0.1);
    let old_logp = (&logp + uniform(&mut rng, &[b, t], -0.4, 0.4)).unwrap();
    let ref_logp = (&logp + uniform(&mut rng, &[b, t], -0.3, 0.3)).unwrap();
    let advantages = Tensor::new(&[1.2f32, -0.7, 0.0, 0.4, -1.5], &CPU).unwrap();
    // Completions of different lengths; sequence 3 has no tokens at all.
    let lengths = [11usize, 6, 9, 0, 3];
    let mask: Vec<f32> = lengths
        .iter()
        .flat_map(|&len| (0..t).map(move |i| f32::from(u8::from(i < len))))
        .collect();
    let mask = Tensor::from_vec(mask, (b, t), &CPU).unwrap();
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
            let name = format!("grpo {aggregation:?} beta={beta}");
            check(&dev, &name, std::slice::from_ref(&logp), &|v, run| {
                let (old, reference) = (run.float(&old_logp), run.float(&ref_logp));
                let (adv, mask) = (run.float(&advantages), run.float(&mask));
                let inputs = GrpoInputs {
                    logp: &v[0],
                    old_logp: &old,
                    ref_logp: (beta != 0.0).then_some(&reference),
                    advantages: &adv,
                    completion_mask: &mask,
                };
                let out = grpo_loss(&inputs, &config)?;
                Ok(vec![
                    out.loss,
                    out.clip_fraction,
                    out.mean_kl,
                    out.mean_ratio,
                ])
            });
        }
    }
}

// ---------------------------------------------------------------- PTX (no GPU needed)

#[test]
fn embedded_ptx_has_every_entry_point_for_one_target() {
    let per_type = |names: &[&str]| -> Vec<String> {
        let suffixes = ["f32", "bf16", "f16"];
        names
            .iter()
            .flat_map(|n| suffixes.map(|s| format!("{n}_{s}")))
            .collect()
    };
    let plain = |names: &[&str]| -> Vec<String> { names.iter().map(|n| n.to_string()).collect() };
    let expected: [(&str, Vec<String>); 6] = [
        (
            "distill_rms_norm",
            per_type(&[
                "rms_norm_fwd",
                "rms_norm_bwd_rows",
                "rms_norm_bwd_weight_partial",
                "rms_norm_bwd_weight_final",
            ]),
        ),
        ("distill_rope", per_type(&["rope"])),
        ("distill_softmax", per_type(&["softmax_fwd", "softmax_bwd"])),
        (
            "distill_attention",
            [
                per_type(&["attention_fwd", "attention_bwd_dkdv", "attention_bwd_dq"]),
                plain(&["attention_bwd_delta_f32"]),
            ]
            .concat(),
        ),
        (
            "distill_selective_log_softmax",
            [
                plain(&[
                    "sls_check_targets",
                    "sls_init_stats",
                    "sls_update_stats",
                    "sls_finalize",
                ]),
                per_type(&["sls_grad_logits", "sls_cast"]),
            ]
            .concat(),
        ),
        ("distill_grpo_loss", per_type(&["grpo_fwd", "grpo_bwd"])),
    ];
    let modules = distill::ops::cuda::ptx_modules();
    for ((name, ptx), (want_name, entries)) in modules.iter().zip(&expected) {
        assert_eq!(name, want_name);
        let line = |prefix: &str| ptx.lines().find(|l| l.starts_with(prefix)).unwrap_or("?");
        let (version, target) = (line(".version"), line(".target"));
        println!("{name}: {version} / {target}");
        assert!(target.starts_with(".target sm_"), "{name}: {target}");
        for entry in entries {
            assert!(
                ptx.contains(&format!(".entry {entry}(")),
                "{name}: no entry point {entry}"
            );
        }
    }
}

// ---------------------------------------------------------------- errors

#[test]
fn unsupported_dtypes_and_head_dims_are_clear_errors_on_cuda() {
    let Some(dev) = gpu("unsupported_dtypes_and_head_dims_are_clear_errors_on_cuda") else {
        return;
    };
    let x = Tensor::ones((3, 8), DType::F64, &dev).unwrap();
    let w = Tensor::ones(8, DType::F64, &dev).unwrap();
    let err = rms_norm(&x, &w, 1e-6).unwrap_err().to_string();
    assert!(err.contains("rms_norm") && err.contains("F64"), "{err}");
    let q = Tensor::ones((1, 1, 3, 320), DType::F32, &dev).unwrap();
    let err = attention(&q, &q, &q, 0.1, &AttentionMask::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("attention") && err.contains("head dim 320"),
        "{err}"
    );
}

// ---------------------------------------------------------------- decoder

#[test]
fn decoder_forward_and_backward_match_cpu() {
    use distill::model::init::random_weights;
    use distill::model::{Architecture, AttentionMask as ModelMask};
    use distill::train::loss::next_token_loss;
    use distill::train::trainable::TrainableDecoder;

    let Some(dev) = gpu("decoder_forward_and_backward_match_cpu") else {
        return;
    };
    let (b, len, vocab) = (2, 9, 97);
    let segments = vec![
        vec![0, 0, 0, 0, 1, 1, 1, 1, 1],
        vec![3, 3, 3, 3, 3, 3, 3, 3, 3],
    ];
    for arch in [
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::Llama,
    ] {
        let config = common::tiny(arch, vocab);
        let weights = random_weights(&config, 11, &CPU).unwrap();
        let ids = common::token_ids(b, len, vocab, 3);
        let positions = common::positions(b, len);
        let run = |device: &Device| {
            let t = TrainableDecoder::new(&config, &weights, DType::F32, device).unwrap();
            let mask = ModelMask::packed(&segments, device).unwrap();
            let ids = ids.to_device(device).unwrap();
            let hidden = t
                .model
                .forward(
                    &ids,
                    &positions.to_device(device).unwrap(),
                    Some(&mask),
                    None,
                )
                .unwrap();
            let loss_mask = Tensor::ones((b, len), DType::F32, device).unwrap();
            let loss = next_token_loss(&hidden, t.model.lm_head(), &ids, &loss_mask).unwrap();
            let grads = loss.backward().unwrap();
            let grads: Vec<(String, Tensor)> = t
                .params
                .iter()
                .map(|(name, var)| (name.clone(), grads.get(var).unwrap().clone()))
                .collect();
            (hidden, loss, grads)
        };
        let (want_hidden, want_loss, want_grads) = run(&CPU);
        poison(&dev);
        let (hidden, loss, grads) = run(&dev);
        assert_close(&format!("{arch:?} hidden"), &hidden, &want_hidden, 1e-4);
        assert_close(&format!("{arch:?} loss"), &loss, &want_loss, 1e-4);
        for ((name, g), (_, w)) in grads.iter().zip(&want_grads) {
            assert_close(&format!("{arch:?} grad {name}"), g, w, 1e-4);
        }
    }
}

// ---------------------------------------------------------------- optimiser

/// AdamW keeps its moments on the GPU and updates there with tensor ops (on the CPU it runs a fused
/// host loop). Fed the torch fixture's gradients, the CUDA update must land on torch's weights.
/// (Comparing after a CUDA and a CPU backward would not do: Adam's first steps move each weight by
/// about the learning rate whatever the gradient's size, so gradient rounding differences of 1e-7
/// flip near-zero gradients and move weights by a whole step.)
#[test]
fn adamw_on_cuda_matches_torch() {
    let Some(dev) = gpu("adamw_on_cuda_matches_torch") else {
        return;
    };
    poison(&dev);
    adamw_fixture::replay_against_torch(&dev, 1e-5);
}

// ---------------------------------------------------------------- greedy decoding on the device

#[test]
fn greedy_tokens_on_cuda_match_the_cpu_argmax_with_ties() {
    let Some(dev) = gpu("greedy_tokens_on_cuda_match_the_cpu_argmax_with_ties") else {
        return;
    };
    // Qwen's vocabulary, 64 rows; every third row has its maximum at several ids.
    let (rows, vocab) = (64, 151_936);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut logits: Vec<f32> = (0..rows * vocab)
        .map(|_| rng.random_range(-4.0..4.0))
        .collect();
    for row in (0..rows).step_by(3) {
        for id in [vocab - 1, 77_000 + row, 5 + row] {
            logits[row * vocab + id] = 9.0;
        }
    }
    let want: Vec<u32> = logits
        .chunks(vocab)
        .map(distill::model::sampling::argmax)
        .collect();
    let on_gpu = Tensor::from_vec(logits, (rows, vocab), &dev).unwrap();
    let got = distill::model::sampling::argmax_rows(&on_gpu).unwrap();
    assert_eq!(got, want);
    eprintln!(
        "greedy tokens: {rows} rows of {vocab} logits agree with the CPU argmax, ties included"
    );
}
