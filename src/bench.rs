//! `distill bench cpu`: training and generation throughput of real shapes with random weights, the
//! numbers `benches/baselines/torch_cpu.py` prints for PyTorch on the same machine.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::model::generate::{generate, GenerationConfig, GenerationRequest};
use crate::model::init::{random_weights, tiny_config};
use crate::model::{Architecture, ModelConfig, SamplerConfig, Tokenizer};
use crate::train::compute::{mfu, training_flops};
use crate::train::loss::next_token_loss;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::recompute::{loss_and_gradients, Checkpointing};
use crate::train::trainable::TrainableDecoder;

/// The shapes of the CPU benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchShape {
    /// Vocabulary 512, hidden 256, MLP 704, 4 layers, 4 heads (2 KV): the matmul-bound shape.
    SmallVocab,
    /// Qwen's vocabulary 151,936, hidden 128, MLP 352, 2 layers: the output-layer-bound shape.
    QwenVocab,
    /// Qwen2.5-0.5B's full shape (494M parameters), for the training bench at sequence 1024; not
    /// in the default case list (it needs ~16 GiB and tens of seconds per step).
    #[value(name = "qwen2.5-0.5b")]
    #[serde(rename = "qwen2.5-0.5b")]
    Qwen25HalfB,
    /// Qwen2.5-1.5B's full shape (1.54B parameters), for the GPU benches.
    #[value(name = "qwen2.5-1.5b")]
    #[serde(rename = "qwen2.5-1.5b")]
    Qwen25OneHalfB,
    /// Qwen's vocabulary, hidden 512, MLP 2048, 8 layers, 8 heads (2 KV), context 32k: the shape of
    /// the memory-versus-length bench (`distill bench memory`).
    LongContext,
}

impl BenchShape {
    /// Tokens per training row: 1024 for the full-size shapes, 256 otherwise.
    pub fn train_seq_len(self) -> usize {
        match self {
            BenchShape::Qwen25HalfB | BenchShape::Qwen25OneHalfB => 1024,
            _ => 256,
        }
    }

    /// The model config of the shape.
    pub fn config(self) -> ModelConfig {
        let (vocab, hidden, mlp, layers) = match self {
            BenchShape::SmallVocab => (512, 256, 704, 4),
            BenchShape::QwenVocab => (151_936, 128, 352, 2),
            BenchShape::Qwen25HalfB => {
                return crate::model::init::Preset::Qwen25_0_5b
                    .config(151_936)
                    .expect("the Qwen2.5-0.5B preset has a fixed shape")
            }
            BenchShape::Qwen25OneHalfB => {
                return crate::model::init::Preset::Qwen25_1_5b
                    .config(151_936)
                    .expect("the Qwen2.5-1.5B preset has a fixed shape")
            }
            BenchShape::LongContext => {
                return ModelConfig {
                    hidden_size: 512,
                    intermediate_size: 2048,
                    num_hidden_layers: 8,
                    num_attention_heads: 8,
                    num_key_value_heads: 2,
                    head_dim: 64,
                    max_position_embeddings: 32_768,
                    ..tiny_config(Architecture::Qwen2, 151_936)
                }
            }
        };
        ModelConfig {
            hidden_size: hidden,
            intermediate_size: mlp,
            num_hidden_layers: layers,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: hidden / 4,
            ..tiny_config(Architecture::Qwen2, vocab)
        }
    }
}

/// One measured workload.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// `train` or `generate`.
    pub workload: &'static str,
    /// The shape.
    pub shape: BenchShape,
    /// Rows per batch.
    pub batch: usize,
    /// Tokens per second (trained tokens, or new tokens generated).
    pub tokens_per_s: f64,
    /// Peak resident memory of the process, MiB (meaningful when the case ran alone in a process).
    pub peak_rss_mib: f64,
    /// Model FLOPs utilisation (training, when the device's peak is known).
    pub mfu: Option<f64>,
    /// Where a training step's time goes (training only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<TrainPhases>,
}

/// Seconds per training step in each phase, the device synchronised between phases.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TrainPhases {
    /// Forward through the decoder and the loss (with activation checkpointing, the first pass,
    /// which keeps only each layer's input).
    pub forward_seconds: f64,
    /// The backward (with activation checkpointing, the layers' recompute included).
    pub backward_seconds: f64,
    /// Gradient accumulation, clipping and the AdamW update.
    pub optimizer_seconds: f64,
}

impl TrainPhases {
    /// These totals over `steps` steps, as means per step.
    fn per_step(self, steps: usize) -> Self {
        let n = steps.max(1) as f64;
        TrainPhases {
            forward_seconds: self.forward_seconds / n,
            backward_seconds: self.backward_seconds / n,
            optimizer_seconds: self.optimizer_seconds / n,
        }
    }
}

/// Where and how a training bench computes.
#[derive(Debug, Clone)]
pub struct TrainTarget {
    /// The device the model and the step run on.
    pub device: Device,
    /// The dtype of the forward and backward (master weights are f32).
    pub compute_dtype: DType,
    /// The device's peak FLOP/s in that dtype, for the MFU.
    pub peak_flops: Option<f64>,
    /// Activation checkpointing (each layer recomputed in the backward).
    pub recompute_layers: bool,
}

impl TrainTarget {
    /// f32 on the CPU, no MFU: the `distill bench cpu` setting.
    pub fn cpu() -> Self {
        TrainTarget {
            device: Device::Cpu,
            compute_dtype: DType::F32,
            peak_flops: None,
            recompute_layers: false,
        }
    }
}

/// `batch × len` token ids spread over the vocabulary by a multiplicative hash (`salt` varies them).
pub(crate) fn random_ids(batch: usize, len: usize, vocab: usize, salt: u32) -> Vec<u32> {
    (0..batch * len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ salt) % vocab as u32)
        .collect()
}

/// Peak resident set size of this process (VmHWM), MiB.
pub fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM:")
}

/// Resident set size of this process now (VmRSS), MiB.
pub fn current_rss_mib() -> f64 {
    proc_status_mib("VmRSS:")
}

/// A kB field of /proc/self/status, in MiB (0 where there is none).
fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A model, its optimiser and a fixed batch of `batch × seq` random tokens: what a training bench
/// steps.
struct TrainBench {
    trainable: TrainableDecoder,
    optimizer: AdamW,
    ids: Tensor,
    positions: Tensor,
    loss_mask: Tensor,
    target: TrainTarget,
}

impl TrainBench {
    fn new(
        config: &ModelConfig,
        batch: usize,
        seq: usize,
        target: &TrainTarget,
    ) -> anyhow::Result<Self> {
        let device = &target.device;
        // The random weights are freed once copied into the variables.
        let trainable = TrainableDecoder::new(
            config,
            &random_weights(config, 0, &Device::Cpu)?,
            DType::F32,
            device,
        )?
        .computing_in(target.compute_dtype);
        let optimizer = AdamW::new(&trainable.params, AdamWConfig::default())?;
        Ok(TrainBench {
            ids: Tensor::from_vec(
                random_ids(batch, seq, config.vocab_size, 7),
                (batch, seq),
                device,
            )?,
            positions: Tensor::from_vec(
                (0..batch).flat_map(|_| 0..seq as u32).collect::<Vec<_>>(),
                (batch, seq),
                device,
            )?,
            loss_mask: Tensor::ones((batch, seq), DType::F32, device)?,
            trainable,
            optimizer,
            target: target.clone(),
        })
    }

    /// One forward + backward + AdamW step, its phases' seconds added to `phases`.
    fn step(&mut self, phases: &mut TrainPhases) -> anyhow::Result<()> {
        let device = &self.target.device;
        let started = Instant::now();
        let model = self.trainable.compute_model()?;
        let (ids, loss_mask) = (&self.ids, &self.loss_mask);
        let mut forward_done = started;
        // The head runs once the layers' forward has (with checkpointing, the pass that keeps only
        // their inputs); the forward phase ends with the loss, the backward phase is the rest.
        let grads = loss_and_gradients(
            &model,
            ids,
            &self.positions,
            None,
            Checkpointing::when(self.target.recompute_layers),
            |hidden| {
                let loss = next_token_loss(hidden, model.lm_head(), ids, loss_mask)?;
                device.synchronize()?;
                forward_done = Instant::now();
                Ok((loss, ()))
            },
        )?
        .grads;
        device.synchronize()?;
        let backward_done = Instant::now();
        self.optimizer.accumulate(&grads, 1.0)?;
        drop(grads);
        self.optimizer.step(1e-4)?;
        device.synchronize()?;
        phases.forward_seconds += (forward_done - started).as_secs_f64();
        phases.backward_seconds += (backward_done - forward_done).as_secs_f64();
        phases.optimizer_seconds += backward_done.elapsed().as_secs_f64();
        Ok(())
    }
}

/// Forward + backward + AdamW step on `batch × seq` random tokens on `target`; tokens/s (and MFU)
/// over `steps` timed steps after one warm-up step.
pub fn bench_train(
    shape: BenchShape,
    batch: usize,
    seq: usize,
    steps: usize,
    target: &TrainTarget,
) -> anyhow::Result<BenchResult> {
    let config = shape.config();
    let mut bench = TrainBench::new(&config, batch, seq, target)?;
    bench.step(&mut TrainPhases::default())?;
    let mut phases = TrainPhases::default();
    let started = Instant::now();
    for _ in 0..steps {
        bench.step(&mut phases)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let flops = steps as f64 * training_flops(&config, std::iter::repeat_n(seq, batch));
    Ok(BenchResult {
        workload: "train",
        shape,
        batch,
        tokens_per_s: (batch * seq * steps) as f64 / seconds,
        peak_rss_mib: peak_rss_mib(),
        mfu: target.peak_flops.map(|peak| mfu(flops, seconds, peak)),
        phases: Some(phases.per_step(steps)),
    })
}

/// The peak memory of one training step at one length.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StepMemory {
    /// Tokens in the step's one row.
    pub seq: usize,
    /// Whether activation checkpointing was on.
    pub recompute_layers: bool,
    /// Resident memory before the step (weights; the optimiser's buffers not yet touched), MiB.
    pub rss_before_mib: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// Seconds of the step.
    pub seconds: f64,
}

/// Runs one step of one `seq`-token row of `shape` on the CPU in f32 and reports the process's
/// peak memory (run it alone in a process: the peak is the process's).
pub fn bench_step_memory(
    shape: BenchShape,
    seq: usize,
    recompute_layers: bool,
) -> anyhow::Result<StepMemory> {
    let target = TrainTarget {
        recompute_layers,
        ..TrainTarget::cpu()
    };
    let mut bench = TrainBench::new(&shape.config(), 1, seq, &target)?;
    let rss_before_mib = current_rss_mib();
    let started = Instant::now();
    bench.step(&mut TrainPhases::default())?;
    Ok(StepMemory {
        seq,
        recompute_layers,
        rss_before_mib,
        peak_rss_mib: peak_rss_mib(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Greedy generation of `new_tokens` after `prompt_len` random prompt tokens for `batch` rows (no
/// EOS) on the CPU in f32; new tokens/s including the prefill, after a short warm-up run.
pub fn bench_generate(
    shape: BenchShape,
    tokenizer: &Tokenizer,
    batch: usize,
    prompt_len: usize,
    new_tokens: usize,
) -> anyhow::Result<BenchResult> {
    let run = GenerateRun {
        shape,
        batch,
        prompt_len,
        new_tokens,
    };
    Ok(bench_generate_on(&run, tokenizer, &Device::Cpu, DType::F32)?.result)
}

/// One generation workload: `batch` rows of `prompt_len` random tokens, `new_tokens` greedy tokens
/// each (no EOS, so every row runs to the end).
#[derive(Debug, Clone, Copy)]
pub struct GenerateRun {
    /// The model shape (random weights).
    pub shape: BenchShape,
    /// Rows generated together.
    pub batch: usize,
    /// Prompt tokens per row.
    pub prompt_len: usize,
    /// New tokens per row.
    pub new_tokens: usize,
}

/// A generation measurement with the bytes a decode step must read, for a bandwidth roofline.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateResult {
    /// Throughput and peak memory.
    #[serde(flatten)]
    pub result: BenchResult,
    /// Seconds of the timed run (prefill + decode).
    pub seconds: f64,
    /// Bytes of the weights in the compute dtype, read once per decode step.
    pub weight_bytes: f64,
    /// KV-cache bytes read per decode step, averaged over the run (batch × mean context).
    pub mean_kv_bytes_per_step: f64,
}

/// [`bench_generate`] on any device and dtype, with the bytes of the weights and KV cache that
/// each decode step reads.
pub fn bench_generate_on(
    run: &GenerateRun,
    tokenizer: &Tokenizer,
    device: &Device,
    dtype: DType,
) -> anyhow::Result<GenerateResult> {
    let config = run.shape.config();
    let weights = random_weights(&config, 0, device)?;
    let model = crate::model::Decoder::from_weights(&config, &weights, dtype, device)?;
    let requests: Vec<GenerationRequest> = (0..run.batch)
        .map(|b| GenerationRequest {
            prompt: random_ids(1, run.prompt_len, config.vocab_size, b as u32),
            seed: b as u64,
        })
        .collect();
    let generation = |max_new_tokens| GenerationConfig {
        sampler: SamplerConfig::greedy(),
        max_new_tokens,
        n: 1,
        eos_token_ids: Vec::new(),
        stop_strings: Vec::new(),
    };
    generate(&model, tokenizer, &requests, &generation(4))?;
    device.synchronize()?;
    let started = Instant::now();
    let completions = generate(&model, tokenizer, &requests, &generation(run.new_tokens))?;
    let seconds = started.elapsed().as_secs_f64();
    let produced: usize = completions.iter().map(|c| c.completion_tokens).sum();
    let dtype_bytes = dtype.size_in_bytes() as f64;
    let kv_bytes_per_token =
        (2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim) as f64
            * dtype_bytes;
    let mean_context = run.prompt_len as f64 + run.new_tokens as f64 / 2.0;
    Ok(GenerateResult {
        result: BenchResult {
            workload: "generate",
            shape: run.shape,
            batch: run.batch,
            tokens_per_s: produced as f64 / seconds,
            peak_rss_mib: peak_rss_mib(),
            mfu: None,
            phases: None,
        },
        seconds,
        weight_bytes: config.parameter_count() as f64 * dtype_bytes,
        mean_kv_bytes_per_step: run.batch as f64 * mean_context * kv_bytes_per_token,
    })
}

/// Mean seconds per GRPO step spent in rollouts and in updates.
#[derive(Debug, Clone, Serialize)]
pub struct GrpoStepTimes {
    /// Steps measured.
    pub steps: u64,
    /// Mean rollout (sampling + scoring) seconds per step.
    pub rollout_seconds: f64,
    /// Mean update (log-probs, loss, backward, AdamW) seconds per step.
    pub update_seconds: f64,
}

/// GRPO steps of the tiny preset (random weights, `tokenizer`'s vocabulary) on synthetic arithmetic
/// prompts: `group_size` completions of up to `max_new_tokens` for 4 prompts per step.
pub fn bench_grpo(
    tokenizer_dir: &std::path::Path,
    steps: u64,
    group_size: usize,
    max_new_tokens: usize,
) -> anyhow::Result<GrpoStepTimes> {
    let work = tempfile_dir()?;
    let tokenizer = Tokenizer::from_dir(tokenizer_dir)?;
    let config = crate::model::init::Preset::Tiny.config(tokenizer.vocab_size())?;
    let weights = random_weights(&config, 0, &Device::Cpu)?;
    let model = crate::model::Decoder::from_weights(&config, &weights, DType::F32, &Device::Cpu)?;
    let eos: Vec<u32> = tokenizer.eos_token_id().into_iter().collect();
    let policy = work.join("policy");
    crate::model::save::save_hf_dir(&model, &tokenizer, &eos, &policy)?;
    let grpo: crate::train::grpo::GrpoConfig = toml::from_str(&format!(
        "policy = {:?}\nout = {:?}\nsteps = {steps}\ngroup_size = {group_size}\nprompts_per_step = 4\nmax_new_tokens = {max_new_tokens}\n",
        policy.display().to_string(),
        work.join("run").display().to_string()
    ))?;
    let problems =
        crate::data::prompt_source::load_prompts("synth:arith:difficulty=1:count=64:seed=0")?;
    crate::train::grpo::run_grpo(&grpo, &problems, false)?;
    let records = crate::train::metrics::MetricsLog::read(&work.join("run").join("metrics.jsonl"))?;
    let mean = |key: &str| {
        records.iter().filter_map(|r| r[key].as_f64()).sum::<f64>() / records.len().max(1) as f64
    };
    let times = GrpoStepTimes {
        steps: records.len() as u64,
        rollout_seconds: mean("rollout_seconds"),
        update_seconds: mean("update_seconds"),
    };
    std::fs::remove_dir_all(&work)?;
    Ok(times)
}

/// A fresh scratch directory under the system temporary directory.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("distill-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
