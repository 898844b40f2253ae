//! `distill train --student MODEL --data DIR --out DIR`: supervised fine-tuning.

use std::path::PathBuf;

use clap::Args;

use super::config_table::{int, int64, ConfigTable};
use super::engine_args::EngineArgs;
use crate::train::precision::Precision;
use crate::train::schedule::Decay;
use crate::train::sft::{run_sft, SftConfig};
use crate::train::sft_data::OverLength;

/// `distill train`. Flags override the `--config` TOML file, which overrides the defaults.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The student: model directory, hub id (org/name) or llama2.c .bin file.
    #[arg(long)]
    pub student: Option<String>,
    /// Accepted shards (from `distill filter`), or a JSONL/Parquet file or directory, or a Hub
    /// dataset `hf:ORG/NAME[:CONFIG][:SPLIT]`, with a `messages` column or `prompt` + `completion`
    /// columns (HF chat datasets, TRL formats).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory (final/, checkpoints/, metrics.jsonl, loss.svg, summary.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A TOML file with any SftConfig fields.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from the newest complete checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Replace a run already in --out (its checkpoints, metrics and final model) instead of refusing.
    #[arg(long)]
    pub force: bool,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Rows per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimiser step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Longest example in tokens.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// What to do with longer examples.
    #[arg(long, value_enum)]
    pub over_length: Option<OverLength>,
    /// The most of the loss tokens max_length may take away before the run refuses to start
    /// (default 0.1).
    #[arg(long)]
    pub max_lost_loss_fraction: Option<f64>,
    /// Pack several examples per row.
    #[arg(long)]
    pub pack: bool,
    /// Activation checkpointing: keep each decoder layer's input only and recompute the layer in
    /// the backward (less memory for long rows, one more forward; same gradients).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Passes over the data.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many optimiser steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Linear warmup steps.
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Learning-rate decay after warmup.
    #[arg(long, value_enum)]
    pub decay: Option<Decay>,
    /// Decoupled weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip (0 = off).
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// Checkpoint every N steps.
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Held-out loss every K steps.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Fraction of problems held out.
    #[arg(long)]
    pub eval_fraction: Option<f64>,
    /// Seed of the data order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Compute precision: auto (bf16 on CUDA, f32 on the CPU), f32 or bf16; master weights stay f32.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// The device's dense peak TFLOP/s in that precision, for the logged MFU (looked up for known GPUs).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// The training engine and its launch.
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl TrainArgs {
    /// The run's configuration: defaults, then the TOML file, then the flags.
    pub fn config(&self) -> anyhow::Result<SftConfig> {
        let mut table = ConfigTable::load(self.config.as_deref())?;
        table.set("student", self.student.clone());
        table.set_path("data", self.data.as_ref());
        table.set_path("out", self.out.as_ref());
        table.set("learning_rate", self.lr);
        table.set("batch_size", int(self.batch_size));
        table.set("grad_accum", int(self.grad_accum));
        table.set("max_length", int(self.max_length));
        table.set_enum("over_length", self.over_length);
        table.set("max_lost_loss_fraction", self.max_lost_loss_fraction);
        table.set("pack", self.pack.then_some(true));
        table.set(
            "gradient_checkpointing",
            self.gradient_checkpointing.then_some(true),
        );
        table.set("epochs", int(self.epochs));
        table.set("max_steps", int64(self.max_steps));
        table.set("warmup_steps", int64(self.warmup_steps));
        table.set_enum("decay", self.decay);
        table.set("save_every", int64(self.save_every));
        table.set("eval_every", int64(self.eval_every));
        table.set("eval_fraction", self.eval_fraction);
        table.set("seed", int64(self.seed));
        table.set("device", self.device.clone());
        table.set_enum("precision", self.precision);
        table.set("peak_tflops", self.peak_tflops);
        table.set("optimizer.weight_decay", self.weight_decay);
        table.set("optimizer.max_grad_norm", self.max_grad_norm);
        self.engine.apply(&mut table);
        table.finish("--student, --data and --out")
    }
}

/// Runs `distill train`.
pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    crate::output_dir::refuse_restarting(&config.out, args.resume, args.force)?;
    if args.force && !args.resume {
        crate::output_dir::clear_training_run(&config.out)?;
    }
    let summary = run_sft(&config, args.resume)?;
    println!(
        "trained {} steps on {} examples ({} dropped, {} truncated: {} of {} loss tokens lost; {} held out); final loss {:.4}{}; model in {}",
        summary.steps,
        summary.examples.kept,
        summary.examples.dropped,
        summary.examples.truncated,
        summary.examples.lost_loss_tokens,
        summary.examples.loss_tokens,
        summary.eval_examples,
        summary.final_loss,
        summary.final_eval_loss.map_or(String::new(), |l| format!(", held-out loss {l:.4}")),
        summary.model_dir.display()
    );
    Ok(())
}
