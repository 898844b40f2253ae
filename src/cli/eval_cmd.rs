//! `distill eval --model M --prompts P`: pass@1 and cons@k of a model on a prompt set.

use std::path::PathBuf;

use clap::Args;

use super::sandbox_args::SandboxArgs;
use crate::data::prompt_source::load_prompts;
use crate::eval::{run_eval, EvalConfig};

/// `distill eval`. Defaults follow R1's protocol (k = 4 samples at temperature 0.6, top-p 0.95).
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model: directory, hub id (org/name) or llama2.c .bin file.
    #[arg(long)]
    pub model: String,
    /// Prompt set: a .jsonl/.parquet file (GSM8K, MATH-500, AIME24, AMC23 as they are, or
    /// `problem` + `answer` columns), a Hub dataset such as hf:HuggingFaceH4/MATH-500:test, or
    /// `synth:arith:difficulty=2:count=8:seed=0`.
    #[arg(long)]
    pub prompts: String,
    /// Output directory (data/samples.parquet, summary.json, README.md).
    #[arg(long, default_value = "eval")]
    pub out: PathBuf,
    /// Samples per problem.
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f32,
    /// Nucleus threshold.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Completion length limit in tokens.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Evaluate only the first N problems.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Problems per generation batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// System prompt (use the one training used).
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// Text appended to each problem (default: R1's "Please reason step by step…").
    #[arg(long)]
    pub instruction: Option<String>,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// How code problems' programs are run.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Runs `distill eval` and prints the headline numbers.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let mut config = EvalConfig::new(&args.model, args.out.clone());
    config.k = args.k;
    config.temperature = args.temperature;
    config.top_p = args.top_p;
    config.max_new_tokens = args.max_new_tokens;
    config.limit = args.limit;
    config.seed = args.seed;
    config.batch_size = args.batch_size;
    config.system_prompt = args.system_prompt.clone();
    if let Some(instruction) = &args.instruction {
        config.instruction = instruction.clone();
    }
    config.device = args.device.clone();
    config.sandbox = args.sandbox.apply(config.sandbox);
    let problems = load_prompts(&args.prompts)?;
    let summary = run_eval(&config, &problems)?;
    println!(
        "{} problems × {} samples: pass@1 {:.4}, cons@{} {:.4} ({} tokens, {:.1}s) → {}",
        summary.problems,
        summary.k,
        summary.pass_at_1,
        summary.k,
        summary.cons_at_k,
        summary.generated_tokens,
        summary.wall_seconds,
        config.out.display()
    );
    Ok(())
}
