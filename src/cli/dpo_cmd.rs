//! `distill dpo --policy MODEL --data PAIRS --out DIR`: preference optimisation on the pairs of
//! `distill pairs`.

use std::path::PathBuf;

use clap::Args;

use super::config_table::{int, int64, ConfigTable};
use crate::train::dpo::{run_dpo, DpoConfig};
use crate::train::precision::Precision;
use crate::train::preference_loss::PreferenceLoss;
use crate::train::schedule::Decay;
use crate::train::sft_data::OverLength;

/// `distill dpo`. Flags override the `--config` TOML file, which overrides the defaults.
#[derive(Debug, Args)]
pub struct DpoArgs {
    /// The model to train, usually the SFT student: model directory, hub id or llama2.c .bin file.
    #[arg(long)]
    pub policy: Option<String>,
    /// The frozen reference (default: the starting policy).
    #[arg(long)]
    pub reference: Option<String>,
    /// A `distill pairs` output directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory (final/, checkpoints/, metrics.jsonl, loss.svg, margins.svg, summary.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A TOML file with any DpoConfig fields.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from the newest complete checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Replace a run already in --out (its checkpoints, metrics and final model) instead of refusing.
    #[arg(long)]
    pub force: bool,
    /// The preference loss.
    #[arg(long, value_enum)]
    pub loss: Option<PreferenceLoss>,
    /// β: the implicit reward's inverse temperature (IPO: its regulariser).
    #[arg(long)]
    pub beta: Option<f64>,
    /// Label smoothing ε (sigmoid: conservative DPO; robust; simpo).
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    /// SimPO's target margin γ.
    #[arg(long)]
    pub simpo_gamma: Option<f64>,
    /// Weight of the chosen replies' NLL added to the loss (RPO; TRL's `sft` loss type).
    #[arg(long)]
    pub sft_weight: Option<f64>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Pairs per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimiser step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Longest side (prompt and reply) in tokens.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// What to do with a longer side (a dropped side drops its pair).
    #[arg(long, value_enum)]
    pub over_length: Option<OverLength>,
    /// The most of the reply tokens max_length may take away before the run refuses to start.
    #[arg(long)]
    pub max_lost_loss_fraction: Option<f64>,
    /// Passes over the pairs.
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
    /// Checkpoint every N steps.
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Held-out metrics every K steps.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Fraction of problems whose pairs are held out.
    #[arg(long)]
    pub eval_fraction: Option<f64>,
    /// Seed of the data order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Compute precision: auto (bf16 on CUDA, f32 on the CPU), f32 or bf16.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
}

impl DpoArgs {
    /// The run's configuration: defaults, then the TOML file, then the flags.
    pub fn config(&self) -> anyhow::Result<DpoConfig> {
        let mut table = ConfigTable::load(self.config.as_deref())?;
        table.set("policy", self.policy.clone());
        table.set("reference", self.reference.clone());
        table.set_path("data", self.data.as_ref());
        table.set_path("out", self.out.as_ref());
        table.set_enum("loss", self.loss);
        table.set("beta", self.beta);
        table.set("label_smoothing", self.label_smoothing);
        table.set("simpo_gamma", self.simpo_gamma);
        table.set("sft_weight", self.sft_weight);
        table.set("learning_rate", self.lr);
        table.set("batch_size", int(self.batch_size));
        table.set("grad_accum", int(self.grad_accum));
        table.set("max_length", int(self.max_length));
        table.set_enum("over_length", self.over_length);
        table.set("max_lost_loss_fraction", self.max_lost_loss_fraction);
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
        table.finish("--policy, --data and --out")
    }
}

/// Runs `distill dpo`.
pub fn run(args: &DpoArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    crate::output_dir::refuse_restarting(&config.out, args.resume, args.force)?;
    if args.force && !args.resume {
        crate::output_dir::clear_training_run(&config.out)?;
    }
    let summary = run_dpo(&config, args.resume)?;
    let held_out = summary.final_eval.map_or(String::new(), |m| {
        format!(
            "; held-out ({} pairs): loss {:.4}, reward accuracy {:.3}, margin {:.3}",
            m.pairs, m.loss, m.accuracy, m.margin
        )
    });
    println!(
        "trained {} steps on {} pairs ({} dropped, {} truncated: {} of {} reply tokens lost); final loss {:.4}{held_out}; model in {}",
        summary.steps,
        summary.examples.kept,
        summary.examples.dropped,
        summary.examples.truncated,
        summary.examples.lost_loss_tokens,
        summary.examples.loss_tokens,
        summary.final_loss,
        summary.model_dir.display()
    );
    Ok(())
}
