//! `distill bench kernels`: each stage of a training step timed on its own at a real shape — one
//! decoder layer's parts (norm, projections, rope, attention, the gated MLP), the two residual
//! blocks they make up, the loss head and the weight cast — forward and backward, with the FLOP
//! or byte rate each reaches and its share of a step. The sum over a step's stages, set beside
//! `distill bench train`'s measured step, says where the step's time goes; the same cases in
//! PyTorch are `benches/baselines/torch_kernels_gpu.py`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;

use crate::model::init::random_weights;
use crate::model::ModelConfig;
use crate::ops;
use crate::train::compute::known_peak_flops;
use crate::train::loss::next_token_loss;
use crate::train::trainable::TrainableDecoder;

/// What one stage of a step does, for its achieved rate.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Matmul-bound: FLOPs of the forward and of the backward.
    Flops {
        /// Forward FLOPs.
        forward: f64,
        /// Backward FLOPs.
        backward: f64,
    },
    /// Memory-bound: bytes the forward and the backward must move at least.
    Bytes {
        /// Forward bytes.
        forward: f64,
        /// Backward bytes.
        backward: f64,
    },
}

/// How a stage enters the step's sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One of the pieces a step is made of (the sum of the primitives).
    Primitive,
    /// A residual block made of primitives (the sum of the blocks).
    Block,
    /// Another way to compute a primitive, in neither sum (e.g. the blocked attention).
    Alternative,
}

/// One stage timed on its own.
#[derive(Debug, Clone, Serialize)]
pub struct KernelTiming {
    /// The stage, e.g. `attention` or `mlp block`.
    pub name: &'static str,
    /// How many times a training step runs it.
    pub per_step: usize,
    /// How it enters the step's sums.
    pub role: Role,
    /// Mean forward milliseconds.
    pub forward_ms: f64,
    /// Mean backward milliseconds (forward + backward, less the forward).
    pub backward_ms: f64,
    /// Its work.
    pub work: Work,
    /// Achieved TFLOP/s (matmul-bound) or GB/s (memory-bound) over forward + backward.
    pub rate: f64,
    /// `rate` as a fraction of the device's peak, where the peak is known.
    pub peak_fraction: Option<f64>,
}

/// The measured stages and the step they add up to.
#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    /// Each stage.
    pub cases: Vec<KernelTiming>,
    /// A step's milliseconds as the sum of the primitives (× their count per step).
    pub step_ms_from_primitives: f64,
    /// A step's milliseconds as the sum of the blocks, the loss head, the final norm and the cast.
    pub step_ms_from_blocks: f64,
}

/// Datasheet memory bandwidth (bytes/s) of a known GPU, by CUDA device name.
pub fn known_peak_bandwidth(device_name: &str) -> Option<f64> {
    const GPUS: [(&str, f64); 5] = [
        ("H100 PCIe", 2.0e12),
        ("H100", 3.35e12),
        ("H200", 4.8e12),
        ("A100", 2.0e12),
        ("L40S", 0.864e12),
    ];
    GPUS.iter()
        .find(|(name, _)| device_name.contains(name))
        .map(|&(_, bandwidth)| bandwidth)
}

/// Mean seconds of `run` over `reps` calls after one warm-up call, the device synchronised.
fn mean_seconds(
    device: &Device,
    reps: usize,
    mut run: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    run()?;
    device.synchronize()?;
    let started = Instant::now();
    for _ in 0..reps {
        run()?;
    }
    device.synchronize()?;
    Ok(started.elapsed().as_secs_f64() / reps.max(1) as f64)
}

/// Times `forward` alone and followed by a backward (seeded with ones, as candle does).
fn time_stage<E>(
    device: &Device,
    reps: usize,
    forward: impl Fn() -> Result<Tensor, E>,
) -> anyhow::Result<(f64, f64)>
where
    anyhow::Error: From<E>,
{
    let forward_s = mean_seconds(device, reps, || {
        forward()?;
        Ok(())
    })?;
    let both_s = mean_seconds(device, reps, || {
        forward()?.backward()?;
        Ok(())
    })?;
    Ok((forward_s * 1e3, (both_s - forward_s).max(0.0) * 1e3))
}

fn random(shape: &[usize], dtype: DType, device: &Device) -> candle_core::Result<Var> {
    Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, device)?.to_dtype(dtype)?)
}

/// The shape and setting the stages are timed at.
#[derive(Debug, Clone)]
pub struct KernelBench {
    /// The model shape (one layer of it is built).
    pub config: ModelConfig,
    /// Rows per step.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// The compute dtype (master weights are f32, as in training).
    pub dtype: DType,
    /// Where it runs.
    pub device: Device,
    /// Timed calls per stage (after one warm-up call).
    pub reps: usize,
}

impl KernelBench {
    /// Times every stage and adds them up into a step.
    pub fn run(&self) -> anyhow::Result<KernelReport> {
        let c = &self.config;
        let (b, t, dt, dev) = (self.batch, self.seq, self.dtype, &self.device);
        let n = b * t;
        let (h, hd, inter) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let (heads, kv_heads, layers) = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.num_hidden_layers,
        );
        let e = dt.size_in_bytes() as f64;
        let name = crate::runtime::device_name(dev);
        let peak_flops = known_peak_flops(&name, dt);
        let peak_bytes = known_peak_bandwidth(&name);
        let mut cases = Vec::new();
        let mut add = |name: &'static str,
                       per_step: usize,
                       role: Role,
                       work: Work,
                       (forward_ms, backward_ms): (f64, f64)| {
            // TFLOP/s against the FLOP peak, or GB/s against the bandwidth.
            let (total, peak, unit) = match work {
                Work::Flops { forward, backward } => (forward + backward, peak_flops, 1e12),
                Work::Bytes { forward, backward } => (forward + backward, peak_bytes, 1e9),
            };
            let rate = total / ((forward_ms + backward_ms) / 1e3).max(1e-12);
            cases.push(KernelTiming {
                name,
                per_step,
                role,
                forward_ms,
                backward_ms,
                work,
                rate: rate / unit,
                peak_fraction: peak.map(|p| rate / p),
            });
        };

        // One layer of the shape, its weights f32 variables cast to the compute dtype.
        let one_layer = ModelConfig {
            num_hidden_layers: 1,
            ..c.clone()
        };
        let trainable = TrainableDecoder::new(
            &one_layer,
            &random_weights(&one_layer, 0, &Device::Cpu)?,
            DType::F32,
            dev,
        )?
        .computing_in(dt);
        let model = trainable.compute_model()?;
        let positions = Tensor::from_vec(
            (0..b).flat_map(|_| 0..t as u32).collect::<Vec<_>>(),
            (b, t),
            dev,
        )?;
        let (cos, sin) = model.rope_tables(&positions)?;

        let x = random(&[n, h], dt, dev)?;
        let norm_weight = random(&[h], dt, dev)?;
        let rows = (n * h) as f64 * e;
        add(
            "rms_norm",
            2 * layers + 1,
            Role::Primitive,
            Work::Bytes {
                forward: 2.0 * rows,
                backward: 3.0 * rows,
            },
            time_stage(dev, self.reps, || {
                ops::rms_norm(x.as_tensor(), norm_weight.as_tensor(), 1e-6)
            })?,
        );

        for (name, per_step, inputs, outputs) in [
            ("q_proj", layers, h, heads * hd),
            ("k_proj, v_proj", 2 * layers, h, kv_heads * hd),
            ("o_proj", layers, heads * hd, h),
            ("gate_proj, up_proj", 2 * layers, h, inter),
            ("down_proj", layers, inter, h),
        ] {
            let x = random(&[n, inputs], dt, dev)?;
            let w = random(&[outputs, inputs], dt, dev)?;
            let flops = 2.0 * (n * inputs * outputs) as f64;
            add(
                name,
                per_step,
                Role::Primitive,
                Work::Flops {
                    forward: flops,
                    backward: 2.0 * flops,
                },
                time_stage(dev, self.reps, || {
                    ops::linear(x.as_tensor(), w.as_tensor(), None)
                })?,
            );
        }

        let q = random(&[b, heads, t, hd], dt, dev)?;
        let k = random(&[b, kv_heads, t, hd], dt, dev)?;
        let v = random(&[b, kv_heads, t, hd], dt, dev)?;
        let q_bytes = (b * heads * t * hd) as f64 * e;
        add(
            "rope (q)",
            layers,
            Role::Primitive,
            Work::Bytes {
                forward: 2.0 * q_bytes,
                backward: 2.0 * q_bytes,
            },
            time_stage(dev, self.reps, || {
                ops::rope(q.as_tensor(), &cos, &sin, ops::RopeLayout::HalfSplit)
            })?,
        );
        add(
            "rope (k)",
            layers,
            Role::Primitive,
            Work::Bytes {
                forward: 2.0 * q_bytes * kv_heads as f64 / heads as f64,
                backward: 2.0 * q_bytes * kv_heads as f64 / heads as f64,
            },
            time_stage(dev, self.reps, || {
                ops::rope(k.as_tensor(), &cos, &sin, ops::RopeLayout::HalfSplit)
            })?,
        );
        // Causal: each query row sees (i + 1) keys; two matmuls forward, five backward.
        let causal_pairs = (b * heads) as f64 * (t * (t + 1) / 2) as f64;
        let attention_flops = 4.0 * causal_pairs * hd as f64;
        let mask = ops::AttentionMask {
            causal: true,
            key_padding: None,
            segment_ids: None,
        };
        let scale = 1.0 / (hd as f64).sqrt();
        // The device's default kernel is the primitive; the other one is timed beside it.
        let (default, other, other_name) = match ops::AttentionKernel::for_call(dev, t) {
            ops::AttentionKernel::Fused => (
                ops::AttentionKernel::Fused,
                ops::AttentionKernel::Blocked,
                "attention (blocked)",
            ),
            ops::AttentionKernel::Blocked => (
                ops::AttentionKernel::Blocked,
                ops::AttentionKernel::Fused,
                "attention (fused)",
            ),
        };
        for (name, role, kernel) in [
            ("attention", Role::Primitive, default),
            (other_name, Role::Alternative, other),
        ] {
            add(
                name,
                layers,
                role,
                Work::Flops {
                    forward: attention_flops,
                    backward: 2.5 * attention_flops,
                },
                time_stage(dev, self.reps, || {
                    let (q, k, v) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
                    ops::attention_with(q, k, v, scale, &mask, kernel)
                })?,
            );
        }

        let gate = random(&[n, inter], dt, dev)?;
        let up = random(&[n, inter], dt, dev)?;
        let mlp_bytes = (n * inter) as f64 * e;
        add(
            "swiglu",
            layers,
            Role::Primitive,
            Work::Bytes {
                forward: 3.0 * mlp_bytes,
                backward: 5.0 * mlp_bytes,
            },
            time_stage(dev, self.reps, || {
                ops::swiglu(gate.as_tensor(), up.as_tensor())
            })?,
        );

        let hidden = random(&[b, t, h], dt, dev)?;
        let projection_flops = 2.0 * (n * h) as f64 * (2 * heads * hd + 2 * kv_heads * hd) as f64;
        add(
            "attention block",
            layers,
            Role::Block,
            Work::Flops {
                forward: projection_flops + attention_flops,
                backward: 2.0 * projection_flops + 2.5 * attention_flops,
            },
            time_stage(dev, self.reps, || {
                model.attention_block(0, hidden.as_tensor(), (&cos, &sin), None)
            })?,
        );
        let mlp_flops = 2.0 * (n * h * inter) as f64 * 3.0;
        add(
            "mlp block",
            layers,
            Role::Block,
            Work::Flops {
                forward: mlp_flops,
                backward: 2.0 * mlp_flops,
            },
            time_stage(dev, self.reps, || model.mlp_block(0, hidden.as_tensor()))?,
        );

        let ids = Tensor::from_vec(crate::bench::random_ids(b, t, c.vocab_size, 7), (b, t), dev)?;
        let loss_mask = Tensor::ones((b, t), DType::F32, dev)?;
        let head_flops = 2.0 * (n * h * c.vocab_size) as f64;
        add(
            "loss head",
            1,
            Role::Primitive,
            // On the CPU the forward takes the logits and both gradients (`linear_cross_entropy`);
            // elsewhere the backward recomputes each chunk's logits, then takes both gradients.
            if dev.is_cpu() {
                Work::Flops {
                    forward: 3.0 * head_flops,
                    backward: 0.0,
                }
            } else {
                Work::Flops {
                    forward: head_flops,
                    backward: 3.0 * head_flops,
                }
            },
            time_stage(dev, self.reps, || {
                next_token_loss(hidden.as_tensor(), model.lm_head(), &ids, &loss_mask)
            })?,
        );

        let parameters = c.parameter_count();
        let master = random(&[parameters], DType::F32, dev)?;
        let cast_bytes = parameters as f64 * (4.0 + e);
        add(
            "weight cast",
            1,
            Role::Primitive,
            Work::Bytes {
                forward: cast_bytes,
                backward: cast_bytes,
            },
            time_stage(dev, self.reps, || master.as_tensor().to_dtype(dt))?,
        );

        let step_ms = |keep: &dyn Fn(&KernelTiming) -> bool| -> f64 {
            cases
                .iter()
                .filter(|case| keep(case))
                .map(|case| case.per_step as f64 * (case.forward_ms + case.backward_ms))
                .sum()
        };
        let step_ms_from_primitives = step_ms(&|case| case.role == Role::Primitive);
        let step_ms_from_blocks = step_ms(&|case| {
            case.role == Role::Block || matches!(case.name, "loss head" | "weight cast")
        }) + cases
            .iter()
            .find(|case| case.name == "rms_norm")
            .map_or(0.0, |norm| norm.forward_ms + norm.backward_ms);
        Ok(KernelReport {
            cases,
            step_ms_from_primitives,
            step_ms_from_blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BenchShape;

    #[test]
    fn every_stage_is_timed_and_the_step_counts_each_primitive_per_layer() {
        let config = BenchShape::SmallVocab.config();
        let layers = config.num_hidden_layers;
        let report = KernelBench {
            config,
            batch: 1,
            seq: 16,
            dtype: DType::F32,
            device: Device::Cpu,
            reps: 1,
        }
        .run()
        .unwrap();
        let names: Vec<&str> = report.cases.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "rms_norm",
                "q_proj",
                "k_proj, v_proj",
                "o_proj",
                "gate_proj, up_proj",
                "down_proj",
                "rope (q)",
                "rope (k)",
                "attention",
                "attention (blocked)",
                "swiglu",
                "attention block",
                "mlp block",
                "loss head",
                "weight cast",
            ]
        );
        let case = |name: &str| report.cases.iter().find(|c| c.name == name).unwrap();
        assert_eq!(case("rms_norm").per_step, 2 * layers + 1);
        assert_eq!(case("gate_proj, up_proj").per_step, 2 * layers);
        assert_eq!(case("attention").role, Role::Primitive);
        assert_eq!(case("attention (blocked)").role, Role::Alternative);
        assert_eq!(case("mlp block").role, Role::Block);
        for c in &report.cases {
            assert!(c.forward_ms >= 0.0 && c.backward_ms >= 0.0, "{}", c.name);
        }
        let ms = |c: &KernelTiming| c.per_step as f64 * (c.forward_ms + c.backward_ms);
        let primitives: f64 = report
            .cases
            .iter()
            .filter(|c| c.role == Role::Primitive)
            .map(ms)
            .sum();
        assert!((report.step_ms_from_primitives - primitives).abs() <= 1e-9 * primitives);
        assert!(report.step_ms_from_primitives > ms(case("attention")));
    }
}
