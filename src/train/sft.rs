//! `distill train --student`: supervised fine-tuning on accepted traces. The loop is short and linear
//! — data, forward, loss, backward, clip, step, log, checkpoint — with every knob in [`SftConfig`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::checkpoint::{latest_checkpoint, save_checkpoint, start_or_resume, ExportInfo};
use super::compute::{estimated_flops, mfu, peak_flops, training_flops};
use super::loss::next_token_loss;
use super::metrics::{plot_metrics, MetricsLog};
use super::optim::{AdamW, AdamWConfig};
use super::precision::Precision;
use super::recompute::{loss_and_gradients, Checkpointing, LossAndGradients};
use super::schedule::{Decay, Schedule};
use super::sft_data::{
    apply_length_policy, pack_best_fit_decreasing, packing_efficiency, tokenize_conversation,
    Batching, LengthReport, OverLength, SftExample,
};
use super::token_store::{StoredExample, TokenStore, TokenStoreWriter};
use super::trainable::TrainableDecoder;
use super::trl::{Engine, TrlLaunch};
use crate::data::conversations::for_each_conversation;
use crate::data::hashing::{sha256_hex, sha256_u64};
use crate::model;

/// Every knob of an SFT run (a `[train]` recipe section; CLI flags override it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// The student: model directory, hub id or llama2.c file.
    pub student: String,
    /// What to train on: a directory of accepted shards, or another tool's JSONL/Parquet file (or
    /// directory of them) with a `messages` column or `prompt` + `completion` columns (see
    /// [`crate::data::conversations`]).
    pub data: PathBuf,
    /// Output directory: `final/` (HF model), `checkpoints/`, `metrics.jsonl`, `loss.svg`, `summary.json`.
    pub out: PathBuf,
    /// Peak learning rate.
    #[serde(default = "defaults::learning_rate")]
    pub learning_rate: f64,
    /// Linear warmup steps.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Decay after warmup.
    #[serde(default = "defaults::decay")]
    pub decay: Decay,
    /// Final learning rate as a fraction of the peak.
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Rows per micro-batch.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Micro-batches per optimiser step; the step's loss is the mean over all their loss tokens.
    #[serde(default = "defaults::one")]
    pub grad_accum: usize,
    /// Longest example (or packed row) in tokens.
    #[serde(default = "defaults::max_length")]
    pub max_length: usize,
    /// What to do with longer examples.
    #[serde(default = "defaults::over_length")]
    pub over_length: OverLength,
    /// The most of the training loss tokens that `max_length` may take away (dropped or cut
    /// examples) before the run refuses to start.
    /// (Left out of the serialised config at its default, so recipe stage hashes made before it
    /// existed still match.)
    #[serde(
        default = "defaults::max_lost_loss_fraction",
        skip_serializing_if = "defaults::is_max_lost_loss_fraction"
    )]
    pub max_lost_loss_fraction: f64,
    /// Pack several examples per row.
    #[serde(default)]
    pub pack: bool,
    /// Passes over the training examples (ignored when `max_steps` is set).
    #[serde(default = "defaults::one")]
    pub epochs: usize,
    /// Stop after this many optimiser steps.
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Checkpoint every this many steps (0 = only at the end).
    #[serde(default)]
    pub save_every: u64,
    /// Held-out loss every this many steps (0 = only at the end).
    #[serde(default)]
    pub eval_every: u64,
    /// Fraction of problems held out for the eval loss (split by problem id).
    #[serde(default = "defaults::eval_fraction")]
    pub eval_fraction: f64,
    /// Seed of the data order.
    #[serde(default)]
    pub seed: u64,
    /// `cpu` or `cuda:N`.
    #[serde(default = "defaults::device")]
    pub device: String,
    /// Optimiser settings.
    #[serde(default)]
    pub optimizer: AdamWConfig,
    /// Compute precision: `auto` (bf16 on CUDA, f32 on the CPU), `f32` or `bf16` (over f32 master
    /// weights either way).
    #[serde(default)]
    pub precision: Precision,
    /// Activation checkpointing: keep only each decoder layer's input during the forward and
    /// recompute the layer in the backward (less memory, one more forward through the layers; the
    /// gradients are the same).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
    /// The device's dense peak TFLOP/s in the compute precision, for the MFU in the metrics. When
    /// unset it is looked up for known GPUs; without it no MFU is logged.
    #[serde(default)]
    pub peak_tflops: Option<f64>,
    /// Which trainer runs the steps: `distill` (this loop) or `trl` (TRL under accelerate).
    #[serde(default, skip_serializing_if = "Engine::is_distill")]
    pub engine: Engine,
    /// How the `trl` engine is launched (interpreter, processes, nodes, accelerate config).
    #[serde(default, skip_serializing_if = "TrlLaunch::is_default")]
    pub trl: TrlLaunch,
}

mod defaults {
    use super::{Decay, OverLength};
    pub fn learning_rate() -> f64 {
        1e-4
    }
    pub fn decay() -> Decay {
        Decay::Cosine
    }
    pub fn batch_size() -> usize {
        8
    }
    pub fn one() -> usize {
        1
    }
    pub fn max_length() -> usize {
        1024
    }
    pub fn over_length() -> OverLength {
        OverLength::Drop
    }
    pub fn max_lost_loss_fraction() -> f64 {
        0.1
    }
    pub fn is_max_lost_loss_fraction(value: &f64) -> bool {
        *value == max_lost_loss_fraction()
    }
    pub fn eval_fraction() -> f64 {
        0.05
    }
    pub fn device() -> String {
        "cpu".into()
    }
}

/// What a finished run reports (also written to `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct SftSummary {
    /// Optimiser steps taken in total.
    pub steps: u64,
    /// Training examples and what the length policy did.
    pub examples: LengthReport,
    /// Held-out examples.
    pub eval_examples: usize,
    /// Tokens trained on (prompt and completion, excluding padding).
    pub tokens_seen: u64,
    /// Loss of the last step.
    pub final_loss: f64,
    /// Held-out loss at the end (when there is a held-out split).
    pub final_eval_loss: Option<f64>,
    /// With packing: real tokens over row capacity (rows × max_length) of the first epoch's rows.
    pub packing_efficiency: Option<f64>,
    /// Wall time of this invocation, seconds.
    pub wall_seconds: f64,
    /// Parameters of the student.
    pub parameters: usize,
    /// Estimated training FLOPs (6·params·tokens).
    pub flops: f64,
    /// The dtype the steps computed in (`F32` or `BF16`; master weights are f32).
    pub compute_dtype: String,
    /// Model FLOPs utilisation of this invocation's steps (PaLM's FLOP count over the step time),
    /// when the device's peak is known.
    pub mfu: Option<f64>,
    /// Where the trained model is.
    pub model_dir: PathBuf,
}

/// File of the output directory holding the tokenised examples while training runs (removed
/// when it ends).
pub const TOKEN_STORE_FILE: &str = ".sft-tokens";

/// Tokenised training and held-out examples, kept on disk.
pub(crate) struct Dataset {
    pub(crate) store: TokenStore,
    pub(crate) train: Vec<StoredExample>,
    /// Token count of each training example, what the batch plans are made from.
    train_lengths: Vec<usize>,
    pub(crate) eval: Vec<StoredExample>,
    pub(crate) report: LengthReport,
}

/// An example as it was loaded, before the split.
struct LoadedExample {
    /// (id, sample index) for rows of a distill shard directory: their order.
    key: Option<(String, u32)>,
    /// Whether it belongs to the held-out set.
    held_out: bool,
    /// Where it lies in the token store.
    example: StoredExample,
}

/// Streams the conversations of `config.data`, tokenising each into the token store as it is
/// read, so memory holds one conversation's text at a time. Rows of a distill shard directory
/// are put in (id, sample) order, as if read sorted. Refuses data of which `max_length` would take
/// away more than `max_lost_loss_fraction` of the training loss tokens.
pub(crate) fn load_dataset(
    config: &SftConfig,
    tokenizer: &model::Tokenizer,
) -> anyhow::Result<Dataset> {
    let mut writer = TokenStoreWriter::create(&config.out.join(TOKEN_STORE_FILE))?;
    let (mut report, mut eval_report) = (LengthReport::default(), LengthReport::default());
    let mut stored: Vec<LoadedExample> = Vec::new();
    let mut rows = 0usize;
    for_each_conversation(&config.data, |conversation| -> anyhow::Result<()> {
        rows += 1;
        let (tokens, loss_mask) = tokenize_conversation(tokenizer, &conversation.messages)
            .with_context(|| format!("{}: field messages", conversation.origin))?;
        let held_out = (sha256_u64(conversation.group.as_bytes()) % 10_000) as f64 / 10_000.0
            < config.eval_fraction;
        let example = SftExample {
            id: conversation.origin,
            tokens,
            loss_mask,
        };
        let counted = if held_out {
            &mut eval_report
        } else {
            &mut report
        };
        if let Some(example) =
            apply_length_policy(example, config.max_length, config.over_length, counted)
        {
            let key = conversation
                .sample
                .map(|sample| (conversation.group, sample));
            stored.push(LoadedExample {
                key,
                held_out,
                example: writer.append(&example)?,
            });
        }
        Ok(())
    })
    .with_context(|| format!("reading SFT data from {}", config.data.display()))?;
    if rows == 0 {
        bail!("{}: no rows to train on", config.data.display());
    }
    stored.sort_by(|a, b| a.key.cmp(&b.key));
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for loaded in stored {
        if loaded.held_out {
            eval.push(loaded.example);
        } else {
            train.push(loaded.example);
        }
    }
    if train.is_empty() {
        bail!(
            "{}: every example was held out or dropped by max_length {}",
            config.data.display(),
            config.max_length
        );
    }
    report
        .check_lost_fraction(config.max_length, config.max_lost_loss_fraction)
        .with_context(|| format!("{}: SFT data", config.data.display()))?;
    Ok(Dataset {
        store: writer.finish()?,
        train_lengths: train.iter().map(StoredExample::len).collect(),
        train,
        eval,
        report,
    })
}

/// Hash of everything that must not change between a run and its resumption.
fn config_hash(config: &SftConfig) -> String {
    let canonical = json!({
        "student": config.student, "data": config.data, "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_steps, "decay": config.decay, "min_lr_ratio": config.min_lr_ratio,
        "batch_size": config.batch_size, "grad_accum": config.grad_accum, "max_length": config.max_length,
        "over_length": config.over_length, "pack": config.pack, "epochs": config.epochs,
        "max_steps": config.max_steps, "eval_fraction": config.eval_fraction, "seed": config.seed,
        "optimizer": config.optimizer, "precision": config.precision,
    });
    sha256_hex(canonical.to_string().as_bytes())[..16].to_string()
}

/// Mean next-token loss of `examples` of `store` (no gradient), in batches of `batching`.
fn mean_loss(
    trainable: &TrainableDecoder,
    store: &TokenStore,
    examples: &[StoredExample],
    batching: &Batching,
    device: &Device,
) -> anyhow::Result<f64> {
    let model = trainable.compute_model()?.detached()?;
    let (mut total, mut count) = (0.0, 0usize);
    let lengths: Vec<usize> = examples.iter().map(StoredExample::len).collect();
    for plan in batching.plan(&lengths, 0) {
        let batch = store.batch(examples, &plan, device)?;
        let hidden = model.forward(&batch.ids, &batch.positions, Some(&batch.mask), None)?;
        let loss = next_token_loss(&hidden, model.lm_head(), &batch.ids, &batch.loss_mask)?;
        total += f64::from(loss.to_scalar::<f32>()?) * batch.target_tokens as f64;
        count += batch.target_tokens;
    }
    Ok(total / count.max(1) as f64)
}

impl SftConfig {
    /// Refuses impossible values before anything is loaded.
    pub fn validate(&self) -> anyhow::Result<()> {
        use super::config_checks::{count_at_least, finite_at_least, fraction};
        finite_at_least("learning_rate", self.learning_rate, 0.0)?;
        fraction("min_lr_ratio", self.min_lr_ratio)?;
        fraction("eval_fraction", self.eval_fraction)?;
        fraction("max_lost_loss_fraction", self.max_lost_loss_fraction)?;
        count_at_least("batch_size", self.batch_size, 1, "examples per micro-batch")?;
        count_at_least("grad_accum", self.grad_accum, 1, "micro-batches per step")?;
        count_at_least(
            "max_length",
            self.max_length,
            2,
            "a prompt token and a target",
        )?;
        count_at_least("epochs", self.epochs, 1, "passes over the data")?;
        self.trl.validate(self.engine)?;
        if self.engine == Engine::Trl {
            super::trl::settings::refuse_unmappable_sft(self)?;
        }
        Ok(())
    }
}

/// Runs SFT (with the trainer `config.engine` names); with `resume`, continues from the newest
/// complete checkpoint under `config.out`.
pub fn run_sft(config: &SftConfig, resume: bool) -> anyhow::Result<SftSummary> {
    let started = Instant::now();
    config.validate()?;
    if config.engine == Engine::Trl {
        return super::trl::sft_run::run_trl_sft(config, resume);
    }
    let _claim =
        crate::output_dir::OutputDir::claim(&config.out, crate::output_dir::OutputKind::Sft)?;
    let device = crate::runtime::parse_device(&config.device)?;
    let mut loaded = model::load(&config.student, &device, DType::F32)
        .with_context(|| format!("loading student {}", config.student))?;
    let dataset = load_dataset(config, &loaded.tokenizer)?;
    let export = ExportInfo {
        tokenizer: &loaded.tokenizer,
        eos_token_ids: &loaded.eos_token_ids,
        generation_config: loaded.generation_config.as_ref(),
    };
    let compute_dtype = config.precision.compute_dtype(&device);
    let trainable = TrainableDecoder::from_model(&mut loaded.model)?.computing_in(compute_dtype);
    let mut optimizer = AdamW::new(&trainable.params, config.optimizer.clone())?;
    let peak_flops = peak_flops(config.peak_tflops, &device, compute_dtype);
    let (mut run_model_flops, mut run_step_seconds) = (0.0, 0.0);
    let batching = Batching {
        batch_size: config.batch_size.max(1),
        max_length: config.max_length,
        pack: config.pack,
        seed: config.seed,
    };
    let batches_per_epoch = batching.plan(&dataset.train_lengths, 0).len();
    let accum = config.grad_accum.max(1);
    let total_steps = config
        .max_steps
        .unwrap_or((config.epochs * batches_per_epoch).div_ceil(accum) as u64)
        .max(1);
    let schedule = Schedule {
        peak: config.learning_rate,
        warmup_steps: config.warmup_steps,
        total_steps,
        decay: config.decay,
        min_lr_ratio: config.min_lr_ratio,
    };
    let mut state = start_or_resume(
        &config.out,
        &config_hash(config),
        resume,
        &trainable,
        &mut optimizer,
    )?;
    let mut metrics = MetricsLog::open(&config.out.join("metrics.jsonl"), state.step)?;
    let progress = crate::progress::bar(total_steps, "sft");
    progress.set_position(state.step);

    let mut plan = batching.plan(&dataset.train_lengths, state.epoch);
    let mut last_loss = f64::NAN;
    let mut last_eval = None;
    while state.step < total_steps {
        let step_started = Instant::now();
        let (mut step_loss, mut step_tokens, mut step_flops) = (0.0, 0usize, 0.0);
        let model = trainable.compute_model()?;
        let mut batches = Vec::with_capacity(accum);
        for _ in 0..accum {
            if state.batch_in_epoch >= plan.len() {
                state.epoch += 1;
                state.batch_in_epoch = 0;
                plan = batching.plan(&dataset.train_lengths, state.epoch);
            }
            batches.push(dataset.store.batch(
                &dataset.train,
                &plan[state.batch_in_epoch],
                &device,
            )?);
            state.batch_in_epoch += 1;
        }
        // The step's loss is the mean over every loss token of its micro-batches (as transformers ≥
        // 4.46 and TRL normalise accumulated gradients): each micro-batch's token mean is weighted
        // by its share of the step's loss tokens, so a token weighs the same in a short batch as in
        // a long one.
        let step_targets = batches
            .iter()
            .map(|b| b.target_tokens)
            .sum::<usize>()
            .max(1);
        for batch in &batches {
            let share = batch.target_tokens as f64 / step_targets as f64;
            let LossAndGradients { loss, grads, .. } = loss_and_gradients(
                &model,
                &batch.ids,
                &batch.positions,
                Some(&batch.mask),
                Checkpointing::when(config.gradient_checkpointing),
                |hidden| {
                    let loss =
                        next_token_loss(hidden, model.lm_head(), &batch.ids, &batch.loss_mask)?;
                    Ok((loss, ()))
                },
            )?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                bail!(
                    "loss is {value} at step {}: stopping; the last good checkpoint is {}",
                    state.step + 1,
                    latest_checkpoint(&config.out)
                        .map_or("(none)".into(), |p| p.display().to_string())
                );
            }
            optimizer.accumulate(&grads, share as f32)?;
            step_loss += value * share;
            step_tokens += batch.tokens;
            step_flops +=
                training_flops(loaded.model.config(), batch.example_lengths.iter().copied());
        }
        let lr = schedule.lr(state.step);
        let report = optimizer.step(lr).with_context(|| {
            format!(
                "step {}: the last good checkpoint is {}",
                state.step + 1,
                latest_checkpoint(&config.out).map_or("(none)".into(), |p| p.display().to_string())
            )
        })?;
        state.step += 1;
        state.tokens_seen += step_tokens as u64;
        last_loss = step_loss;
        let seconds = step_started.elapsed().as_secs_f64();
        run_model_flops += step_flops;
        run_step_seconds += seconds;
        let mut record = json!({
            "step": state.step, "loss": step_loss, "lr": lr, "grad_norm": report.grad_norm,
            "tokens": step_tokens, "tokens_per_s": step_tokens as f64 / seconds.max(1e-9), "epoch": state.epoch,
        });
        if let Some(peak) = peak_flops {
            record["mfu"] = json!(mfu(step_flops, seconds, peak));
        }
        let eval_due = config.eval_every > 0 && state.step.is_multiple_of(config.eval_every);
        if !dataset.eval.is_empty() && (eval_due || state.step == total_steps) {
            let eval_loss = mean_loss(
                &trainable,
                &dataset.store,
                &dataset.eval,
                &batching,
                &device,
            )?;
            record["eval_loss"] = json!(eval_loss);
            last_eval = Some(eval_loss);
        }
        metrics.log(&record)?;
        progress.set_message(format!("loss {step_loss:.4}"));
        progress.set_position(state.step);
        let save_due = config.save_every > 0 && state.step.is_multiple_of(config.save_every);
        if save_due || state.step == total_steps {
            save_checkpoint(&config.out, &trainable, &export, &optimizer, &state)?;
        }
    }
    progress.finish_and_clear();

    let model_dir = config.out.join("final");
    export.save(&trainable, &model_dir)?;
    write_loss_plot(&config.out)?;
    let summary = SftSummary {
        steps: state.step,
        examples: dataset.report,
        eval_examples: dataset.eval.len(),
        tokens_seen: state.tokens_seen,
        final_loss: last_loss,
        final_eval_loss: last_eval,
        packing_efficiency: config.pack.then(|| {
            let rows = pack_best_fit_decreasing(&dataset.train_lengths, config.max_length);
            packing_efficiency(&rows, &dataset.train_lengths, config.max_length)
        }),
        wall_seconds: started.elapsed().as_secs_f64(),
        parameters: loaded.model.config().parameter_count(),
        flops: estimated_flops(
            loaded.model.config().parameter_count(),
            state.tokens_seen,
            0,
        ),
        compute_dtype: format!("{compute_dtype:?}"),
        mfu: peak_flops
            .filter(|_| run_step_seconds > 0.0)
            .map(|peak| mfu(run_model_flops, run_step_seconds, peak)),
        model_dir,
    };
    let text = serde_json::to_vec_pretty(&summary)?;
    crate::model::save::write_atomic(&config.out.join("summary.json"), &text)?;
    Ok(summary)
}

/// Draws `loss.svg` from the run's `metrics.jsonl`.
pub(crate) fn write_loss_plot(out: &Path) -> anyhow::Result<()> {
    plot_metrics(
        out,
        "loss.svg",
        "SFT loss",
        &[("train loss", "loss"), ("held-out loss", "eval_loss")],
    )?;
    Ok(())
}
