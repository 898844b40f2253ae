//! `distill grpo --policy MODEL --prompts SRC --out DIR`: GRPO on a student.

use std::path::PathBuf;

use clap::Args;

use super::config_table::{int, int64, ConfigTable};
use super::engine_args::EngineArgs;
use super::sandbox_args::SandboxArgs;
use crate::data::prompt_source::load_prompts;
use crate::train::grpo::{run_grpo, GrpoConfig, LossAggregation};
use crate::train::precision::Precision;

/// `distill grpo`. Flags override the `--config` TOML file, which overrides the defaults.
#[derive(Debug, Args)]
pub struct GrpoArgs {
    /// The policy to train: model directory, hub id (org/name) or llama2.c .bin file.
    #[arg(long)]
    pub policy: Option<String>,
    /// Prompts: a JSONL/Parquet file (GSM8K, MATH-500, AIME24, AMC23 detected), a Hub dataset
    /// (hf:openai/gsm8k:main:train) or a synth: spec.
    #[arg(long)]
    pub prompts: String,
    /// Output directory (final/, checkpoints/, metrics.jsonl, reward.svg, summary.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A TOML file with any GrpoConfig fields (rewards as a [rewards] table).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from the newest complete checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Replace a run already in --out (its checkpoints, metrics and final model) instead of refusing.
    #[arg(long)]
    pub force: bool,
    /// Rollout steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Completions per prompt (G).
    #[arg(long)]
    pub group_size: Option<usize>,
    /// Prompts per step.
    #[arg(long)]
    pub prompts_per_step: Option<usize>,
    /// Completion length limit.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Rollout temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// KL coefficient β.
    #[arg(long)]
    pub beta: Option<f64>,
    /// Updates per batch of rollouts (μ).
    #[arg(long)]
    pub mu: Option<usize>,
    /// Lower and upper clip range (the upper one only when --epsilon-high and the config file's
    /// `epsilon_high` do not set it).
    #[arg(long)]
    pub epsilon: Option<f64>,
    /// Upper clip range (DAPO's clip-higher), when different from --epsilon.
    #[arg(long)]
    pub epsilon_high: Option<f64>,
    /// Loss aggregation.
    #[arg(long, value_enum)]
    pub loss: Option<LossAggregation>,
    /// Give no gradient to completions cut by the length limit.
    #[arg(long)]
    pub mask_truncated: bool,
    /// Activation checkpointing: keep each decoder layer's input only and recompute the layer in
    /// the backward (less memory for long rows, one more forward; same gradients).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Stop once the estimated training FLOPs reach this budget.
    #[arg(long)]
    pub max_flops: Option<f64>,
    /// Checkpoint every N steps.
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Seed of prompt order and sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Compute precision: auto (bf16 on CUDA, f32 on the CPU), f32 or bf16; master weights stay f32.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// How code problems' programs are run (flags override the config file's [sandbox]).
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The training engine and its launch.
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl GrpoArgs {
    /// The run's configuration: defaults, then the TOML file, then the flags.
    pub fn config(&self) -> anyhow::Result<GrpoConfig> {
        let mut table = ConfigTable::load(self.config.as_deref())?;
        table.set("policy", self.policy.clone());
        table.set_path("out", self.out.as_ref());
        table.set("steps", int64(self.steps));
        table.set("group_size", int(self.group_size));
        table.set("prompts_per_step", int(self.prompts_per_step));
        table.set("max_new_tokens", int(self.max_new_tokens));
        table.set("temperature", self.temperature);
        table.set("learning_rate", self.lr);
        table.set("beta", self.beta);
        table.set("mu", int(self.mu));
        // --epsilon sets both clip ranges, except an upper one given on its own (flag or file).
        let upper_given = table.contains("epsilon_high");
        table.set("epsilon_low", self.epsilon);
        table.set(
            "epsilon_high",
            self.epsilon_high.or(self.epsilon.filter(|_| !upper_given)),
        );
        table.set_enum("loss", self.loss);
        table.set("mask_truncated", self.mask_truncated.then_some(true));
        table.set(
            "gradient_checkpointing",
            self.gradient_checkpointing.then_some(true),
        );
        table.set("max_flops", self.max_flops);
        table.set("save_every", int64(self.save_every));
        table.set("seed", int64(self.seed));
        table.set("device", self.device.clone());
        table.set_enum("precision", self.precision);
        self.engine.apply(&mut table);
        let mut config: GrpoConfig = table.finish("--policy and --out")?;
        config.sandbox = self.sandbox.apply(config.sandbox);
        Ok(config)
    }
}

/// Runs `distill grpo`.
pub fn run(args: &GrpoArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let problems = load_prompts(&args.prompts)?;
    crate::output_dir::refuse_restarting(&config.out, args.resume, args.force)?;
    if args.force && !args.resume {
        crate::output_dir::clear_training_run(&config.out)?;
    }
    let summary = run_grpo(&config, &problems, args.resume)?;
    println!(
        "GRPO: {} steps, mean reward {:.3} → {:.3}, {} rollout tokens, {} update tokens ({:.2e} FLOPs); model in {}",
        summary.steps,
        summary.first_reward,
        summary.last_reward,
        summary.rollout_tokens,
        summary.update_tokens,
        summary.flops,
        summary.model_dir.display()
    );
    Ok(())
}
