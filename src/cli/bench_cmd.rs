//! `distill bench cpu`: CPU throughput of training and generation on real shapes, each case in its
//! own process so its peak memory is its own; prints the lines `benches/baselines/torch_cpu.py`
//! prints, so the two can be compared as ratios. `distill bench train`: one training shape on any
//! device and precision, with its MFU. `distill bench grpo`: the split of a GRPO step.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::bench::{
    bench_generate, bench_generate_on, bench_step_memory, bench_train, BenchResult, BenchShape,
    GenerateRun, StepMemory, TrainTarget,
};
use crate::bench_memory::MemoryReport;
use crate::model::Tokenizer;
use crate::train::compute::peak_flops;
use crate::train::precision::Precision;

/// `distill bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Training tokens/s (batch 8 × 256) and greedy generation new tokens/s (batch 1, 8, 32;
    /// prompt 32, 64 new tokens) for the small-vocabulary and Qwen-vocabulary shapes.
    Cpu(CpuArgs),
    /// Seconds per GRPO step of the tiny preset, split into rollout and update.
    Grpo(GrpoBenchArgs),
    /// Training tokens/s and MFU of one shape on a chosen device and precision (prints JSON).
    Train(TrainBenchArgs),
    /// Greedy generation new tokens/s of one shape on a chosen device and precision, one JSON line
    /// per batch size (`benches/baselines/torch_generate_gpu.py` prints the same for transformers).
    Generate(GenerateBenchArgs),
    /// Traces/s and peak memory of `distill filter` on synthetic R1-like trace sets (prints JSON).
    Filter(FilterBenchArgs),
    /// Peak memory of one SFT step against the row's length, with and without activation
    /// checkpointing (each case in its own process): a table, a plot and a linear fit.
    Memory(MemoryBenchArgs),
    /// Each stage of a training step (a layer's norm, projections, rope, attention, MLP, the blocks,
    /// the loss head, the weight cast) timed forward and backward on its own at a real shape, with
    /// its FLOP or byte rate (prints JSON).
    Kernels(KernelBenchArgs),
}

/// `distill bench kernels`.
#[derive(Debug, Args)]
pub struct KernelBenchArgs {
    /// The step's shape.
    #[command(flatten)]
    pub step: StepArgs,
    /// Timed calls per stage (after one warm-up call).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// auto (bf16 on CUDA, f32 on the CPU), f32 or bf16.
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: Precision,
}

/// `distill bench filter`.
#[derive(Debug, Args)]
pub struct FilterBenchArgs {
    /// Sizes of the trace sets to run, one run each (e.g. `--traces 10000 --traces 100000`).
    #[arg(long, default_values_t = [10_000])]
    pub traces: Vec<usize>,
    /// Median reasoning length, KiB (log-normal lengths around it).
    #[arg(long, default_value_t = 4.0)]
    pub median_reasoning_kib: f64,
    /// Samples per problem.
    #[arg(long, default_value_t = 4)]
    pub samples_per_problem: usize,
    /// Passed to `distill filter --sort-buffer-mb`.
    #[arg(long)]
    pub sort_buffer_mb: Option<f64>,
    /// Work directory for the set and the filter's output (default: a fresh temp folder).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Keep the set and outputs instead of removing them.
    #[arg(long)]
    pub keep: bool,
}

/// The training step a bench measures: the model shape, rows per step and tokens per row.
#[derive(Debug, Args)]
pub struct StepArgs {
    /// small-vocab, qwen-vocab, qwen2.5-0.5b, qwen2.5-1.5b or long-context.
    #[arg(long, default_value = "qwen2.5-0.5b")]
    pub shape: BenchShape,
    /// Rows per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per row (default: the shape's training length, 1024 for the full-size shapes, else
    /// 256).
    #[arg(long)]
    pub seq: Option<usize>,
}

impl StepArgs {
    /// Tokens per row.
    pub fn seq(&self) -> usize {
        self.seq.unwrap_or(self.shape.train_seq_len())
    }
}

/// `distill bench train`.
#[derive(Debug, Args)]
pub struct TrainBenchArgs {
    /// The step's shape.
    #[command(flatten)]
    pub step: StepArgs,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// auto (bf16 on CUDA, f32 on the CPU), f32 or bf16.
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: Precision,
    /// The device's dense peak TFLOP/s in that precision (looked up for known GPUs when unset).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Activation checkpointing (each decoder layer recomputed in the backward).
    #[arg(long)]
    pub gradient_checkpointing: bool,
}

/// `distill bench memory`.
#[derive(Debug, Args)]
pub struct MemoryBenchArgs {
    /// The model shape (random weights; one row per step, f32 on the CPU).
    #[arg(long, default_value = "long-context")]
    pub shape: BenchShape,
    /// Row lengths to measure (repeat the flag).
    #[arg(long, default_values_t = [1024, 2048, 4096, 8192, 16384, 32768])]
    pub seq: Vec<usize>,
    /// Lengths above this run with checkpointing only (the plain step's memory and time grow too
    /// large for the machine).
    #[arg(long, default_value_t = 16384)]
    pub max_plain_seq: usize,
    /// Where the table (memory_vs_length.md), the plot (.svg) and the measurements (.json) go.
    #[arg(long, default_value = "runs/bench-memory")]
    pub out: PathBuf,
    /// Run one case in this process (`SEQ:plain` or `SEQ:checkpointed`) and print JSON.
    #[arg(long)]
    pub case: Option<String>,
}

/// `distill bench generate`.
#[derive(Debug, Args)]
pub struct GenerateBenchArgs {
    /// small-vocab, qwen-vocab, qwen2.5-0.5b, qwen2.5-1.5b or long-context.
    #[arg(long, default_value = "qwen2.5-0.5b")]
    pub shape: BenchShape,
    /// Rows generated together; repeat for several runs (e.g. `--batch 1 --batch 64`).
    #[arg(long, default_values_t = [1])]
    pub batch: Vec<usize>,
    /// Random prompt tokens per row.
    #[arg(long, default_value_t = 256)]
    pub prompt_len: usize,
    /// New tokens per row (no EOS: every row runs to the end).
    #[arg(long, default_value_t = 1024)]
    pub new_tokens: usize,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// auto (bf16 on CUDA, f32 on the CPU), f32 or bf16.
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: Precision,
    /// tokenizer.json directory used to decode generated ids.
    #[arg(long, default_value = "../shared/data/tokenizer_qwen2_5")]
    pub tokenizer: PathBuf,
}

/// `distill bench cpu`.
#[derive(Debug, Args)]
pub struct CpuArgs {
    /// tokenizer.json directory used to decode generated ids.
    #[arg(long, default_value = "../shared/data/tokenizer_qwen2_5")]
    pub tokenizer: PathBuf,
    /// Run one case in this process (`train:SHAPE:BATCH` or `generate:SHAPE:BATCH`) and print JSON;
    /// SHAPE is small-vocab, qwen-vocab, or qwen2.5-0.5b (training at sequence 1024, not run by
    /// default).
    #[arg(long)]
    pub case: Option<String>,
    /// Timed training steps per case.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
}

/// `distill bench grpo`.
#[derive(Debug, Args)]
pub struct GrpoBenchArgs {
    /// tokenizer.json directory of the tiny policy.
    #[arg(long, default_value = "../shared/data/tokenizer_qwen2_5")]
    pub tokenizer: PathBuf,
    /// GRPO steps to time.
    #[arg(long, default_value_t = 5)]
    pub steps: u64,
    /// Completions per prompt.
    #[arg(long, default_value_t = 8)]
    pub group_size: usize,
    /// Completion length limit (random weights rarely stop early).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
}

const CASES: &[&str] = &[
    "train:small-vocab:8",
    "train:qwen-vocab:8",
    "generate:small-vocab:1",
    "generate:small-vocab:8",
    "generate:small-vocab:32",
    "generate:qwen-vocab:1",
    "generate:qwen-vocab:8",
    "generate:qwen-vocab:32",
];

/// Runs `distill bench`.
pub fn run(command: &BenchCommand) -> anyhow::Result<()> {
    let args = match command {
        BenchCommand::Cpu(args) => args,
        BenchCommand::Grpo(args) => {
            let times = crate::bench::bench_grpo(
                &args.tokenizer,
                args.steps,
                args.group_size,
                args.max_new_tokens,
            )?;
            println!(
                "GRPO, tiny preset, 4 prompts × {} completions ≤ {} tokens: {} steps, rollout {:.3} s + update {:.3} s per step",
                args.group_size, args.max_new_tokens, times.steps, times.rollout_seconds, times.update_seconds
            );
            return Ok(());
        }
        BenchCommand::Filter(args) => {
            let extra: Vec<String> = args
                .sort_buffer_mb
                .map(|mb| vec!["--sort-buffer-mb".to_string(), mb.to_string()])
                .unwrap_or_default();
            for (run, &traces) in args.traces.iter().enumerate() {
                let shape = crate::filter_bench::SyntheticTraces {
                    traces,
                    samples_per_problem: args.samples_per_problem,
                    median_reasoning_bytes: (args.median_reasoning_kib * 1024.0) as usize,
                    seed: run as u64,
                };
                let work = match &args.work {
                    Some(dir) => dir.join(format!("run-{run}")),
                    None => crate::filter_bench::default_work_dir().join(format!("run-{run}")),
                };
                let result = crate::filter_bench::bench_filter(&work, &shape, &extra, args.keep)?;
                println!("{}", serde_json::to_string(&result)?);
            }
            if args.work.is_none() && !args.keep {
                // The per-process parent folder, now empty.
                let _ = std::fs::remove_dir(crate::filter_bench::default_work_dir());
            }
            return Ok(());
        }
        BenchCommand::Train(args) => {
            let device = crate::runtime::parse_device(&args.device)?;
            let compute_dtype = args.precision.compute_dtype(&device);
            let target = TrainTarget {
                peak_flops: peak_flops(args.peak_tflops, &device, compute_dtype),
                device,
                compute_dtype,
                recompute_layers: args.gradient_checkpointing,
            };
            let seq = args.step.seq();
            let result = bench_train(args.step.shape, args.step.batch, seq, args.steps, &target)?;
            let mut line = serde_json::to_value(&result)?;
            line["device"] = crate::runtime::device_name(&target.device).into();
            line["compute_dtype"] = format!("{compute_dtype:?}").into();
            line["seq"] = seq.into();
            println!("{line}");
            return Ok(());
        }
        BenchCommand::Memory(args) => return run_memory(args),
        BenchCommand::Kernels(args) => {
            let device = crate::runtime::parse_device(&args.device)?;
            let bench = crate::bench_kernels::KernelBench {
                config: args.step.shape.config(),
                batch: args.step.batch,
                seq: args.step.seq(),
                dtype: args.precision.compute_dtype(&device),
                reps: args.reps,
                device,
            };
            let mut report = serde_json::to_value(bench.run()?)?;
            report["device"] = crate::runtime::device_name(&bench.device).into();
            report["compute_dtype"] = format!("{:?}", bench.dtype).into();
            report["batch"] = bench.batch.into();
            report["seq"] = bench.seq.into();
            println!("{report}");
            return Ok(());
        }
        BenchCommand::Generate(args) => {
            let device = crate::runtime::parse_device(&args.device)?;
            let dtype = args.precision.compute_dtype(&device);
            let tokenizer = Tokenizer::from_dir(&args.tokenizer)?;
            for &batch in &args.batch {
                let run = GenerateRun {
                    shape: args.shape,
                    batch,
                    prompt_len: args.prompt_len,
                    new_tokens: args.new_tokens,
                };
                let result = bench_generate_on(&run, &tokenizer, &device, dtype)?;
                let mut line = serde_json::to_value(&result)?;
                line["device"] = crate::runtime::device_name(&device).into();
                line["compute_dtype"] = format!("{dtype:?}").into();
                line["prompt_len"] = args.prompt_len.into();
                line["new_tokens"] = args.new_tokens.into();
                println!("{line}");
            }
            return Ok(());
        }
    };
    match &args.case {
        Some(case) => {
            let result = run_case(case, args)?;
            println!("{}", serde_json::to_string(&result)?);
        }
        None => {
            println!(
                "{:<10} {:<12} {:>5} {:>12} {:>10}",
                "workload", "shape", "batch", "tokens/s", "peak MiB"
            );
            for case in CASES {
                let steps = args.steps.to_string();
                let tokenizer = args.tokenizer.to_string_lossy();
                let r: serde_json::Value = case_in_child_process(
                    case,
                    &[
                        "bench",
                        "cpu",
                        "--case",
                        case,
                        "--steps",
                        &steps,
                        "--tokenizer",
                        &tokenizer,
                    ],
                )?;
                println!(
                    "{:<10} {:<12} {:>5} {:>12.0} {:>10.0}",
                    r["workload"].as_str().unwrap_or(""),
                    r["shape"].as_str().unwrap_or(""),
                    r["batch"],
                    r["tokens_per_s"].as_f64().unwrap_or(0.0),
                    r["peak_rss_mib"].as_f64().unwrap_or(0.0)
                );
            }
        }
    }
    Ok(())
}

fn run_case(case: &str, args: &CpuArgs) -> anyhow::Result<BenchResult> {
    let parts: Vec<&str> = case.split(':').collect();
    let [workload, shape, batch] = parts.as_slice() else {
        anyhow::bail!("--case {case:?}: expected WORKLOAD:SHAPE:BATCH");
    };
    let shape = <BenchShape as clap::ValueEnum>::from_str(shape, true)
        .map_err(|e| anyhow::anyhow!("--case {case:?}: {e}"))?;
    let batch: usize = batch
        .parse()
        .with_context(|| format!("--case {case:?}: batch"))?;
    match *workload {
        "train" => bench_train(
            shape,
            batch,
            shape.train_seq_len(),
            args.steps,
            &TrainTarget::cpu(),
        ),
        "generate" => {
            let tokenizer = Tokenizer::from_dir(&args.tokenizer)?;
            bench_generate(shape, &tokenizer, batch, 32, 64)
        }
        other => anyhow::bail!("--case {case:?}: unknown workload {other}"),
    }
}

/// `distill bench memory`: one child process per (length, mode), then the report.
fn run_memory(args: &MemoryBenchArgs) -> anyhow::Result<()> {
    if let Some(case) = &args.case {
        let (seq, mode) = case
            .split_once(':')
            .with_context(|| format!("--case {case:?}: expected SEQ:plain or SEQ:checkpointed"))?;
        let seq: usize = seq
            .parse()
            .with_context(|| format!("--case {case:?}: SEQ"))?;
        let recompute = match mode {
            "plain" => false,
            "checkpointed" => true,
            other => anyhow::bail!("--case {case:?}: unknown mode {other}"),
        };
        let result = bench_step_memory(args.shape, seq, recompute)?;
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    let shape = clap::ValueEnum::to_possible_value(&args.shape)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    let mut results = Vec::new();
    for &seq in &args.seq {
        for mode in ["plain", "checkpointed"] {
            if mode == "plain" && seq > args.max_plain_seq {
                continue;
            }
            let case = format!("{seq}:{mode}");
            let result: StepMemory = case_in_child_process(
                &case,
                &["bench", "memory", "--shape", &shape, "--case", &case],
            )?;
            eprintln!(
                "{case}: peak {:.0} MiB ({:.0} MiB before the step), {:.1} s",
                result.peak_rss_mib, result.rss_before_mib, result.seconds
            );
            results.push(result);
        }
    }
    let report = MemoryReport::new(args.shape, results);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("memory_vs_length.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out.join("memory_vs_length.md"), report.markdown())?;
    report.plot(&args.out.join("memory_vs_length.svg"))?;
    print!("{}", report.markdown());
    Ok(())
}

/// Runs this binary with `args` (one bench case, so its peak memory is its own) and parses the
/// JSON it prints.
fn case_in_child_process<T: serde::de::DeserializeOwned>(
    case: &str,
    args: &[&str],
) -> anyhow::Result<T> {
    let out = Command::new(std::env::current_exe()?)
        .args(args)
        .output()
        .with_context(|| format!("running case {case}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "case {case} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("case {case}"))
}
