//! `distill train --student MODEL --data DIR --out DIR`: supervised fine-tuning.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::train::schedule::Decay;
use crate::train::sft::{run_sft, SftConfig};
use crate::train::sft_data::OverLength;

/// `distill train`. Flags override the `--config` TOML file, which overrides the defaults.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The student: model directory, hub id (org/name) or llama2.c .bin file.
    #[arg(long)]
    pub student: Option<String>,
    /// Directory of accepted shards (from `distill filter`).
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
    /// Pack several examples per row.
    #[arg(long)]
    pub pack: bool,
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
}

impl TrainArgs {
    /// The run's configuration: defaults, then the TOML file, then the flags.
    pub fn config(&self) -> anyhow::Result<SftConfig> {
        let mut table = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
                toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("{}: not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        let mut set = |key: &str, value: Option<toml::Value>| {
            if let Some(value) = value {
                table.insert(key.to_string(), value);
            }
        };
        let text = |s: &Option<String>| s.clone().map(toml::Value::String);
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| toml::Value::String(p.display().to_string()))
        };
        let int = |n: Option<u64>| n.map(|n| toml::Value::Integer(n as i64));
        let float = |x: Option<f64>| x.map(toml::Value::Float);
        set("student", text(&self.student));
        set("data", path(&self.data));
        set("out", path(&self.out));
        set("learning_rate", float(self.lr));
        set("batch_size", int(self.batch_size.map(|n| n as u64)));
        set("grad_accum", int(self.grad_accum.map(|n| n as u64)));
        set("max_length", int(self.max_length.map(|n| n as u64)));
        set(
            "over_length",
            self.over_length
                .map(|o| toml::Value::String(format!("{o:?}").to_lowercase())),
        );
        set("pack", self.pack.then_some(toml::Value::Boolean(true)));
        set("epochs", int(self.epochs.map(|n| n as u64)));
        set("max_steps", int(self.max_steps));
        set("warmup_steps", int(self.warmup_steps));
        set(
            "decay",
            self.decay
                .map(|d| toml::Value::String(format!("{d:?}").to_lowercase())),
        );
        set("save_every", int(self.save_every));
        set("eval_every", int(self.eval_every));
        set("eval_fraction", float(self.eval_fraction));
        set("seed", int(self.seed));
        set("device", text(&self.device));
        if self.weight_decay.is_some() || self.max_grad_norm.is_some() {
            let optimizer = table
                .entry("optimizer")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(optimizer) = optimizer {
                if let Some(wd) = self.weight_decay {
                    optimizer.insert("weight_decay".into(), toml::Value::Float(wd));
                }
                if let Some(clip) = self.max_grad_norm {
                    optimizer.insert("max_grad_norm".into(), toml::Value::Float(clip));
                }
            }
        }
        let origin = self.config.as_ref().map_or_else(
            || "command-line flags".to_string(),
            |p| p.display().to_string(),
        );
        toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("{origin}: invalid training configuration (--student, --data and --out are required)"))
    }
}

/// Runs `distill train`.
pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let summary = run_sft(&config, args.resume)?;
    println!(
        "trained {} steps on {} examples ({} dropped, {} truncated, {} held out); final loss {:.4}{}; model in {}",
        summary.steps,
        summary.examples.kept,
        summary.examples.dropped,
        summary.examples.truncated,
        summary.eval_examples,
        summary.final_loss,
        summary.final_eval_loss.map_or(String::new(), |l| format!(", held-out loss {l:.4}")),
        summary.model_dir.display()
    );
    Ok(())
}
