//! `distill dpo`: preference optimisation (DPO and its IPO, robust and SimPO variants) of a
//! starting model — usually the SFT student — on the pairs `distill pairs` makes from rejection
//! sampling, against a frozen reference (the starting model unless another is named).
//!
//! The reference scores every pair once, before the first step; its log-probs are cached in the
//! output directory and reused on resume. Each step then scores a batch of pairs with the policy,
//! takes the loss and its gradient per pair in closed form ([`super::preference_loss`]) and
//! backpropagates `Σ ∂L/∂logπ · logπ` through the model. Logged, checkpointed and resumable
//! like SFT, with TRL's metric names (`rewards/chosen`, `rewards/margins`, …).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::checkpoint::{latest_checkpoint, save_checkpoint, start_or_resume, ExportInfo};
use super::compute::estimated_flops;
use super::dpo_data::{
    pair_batch, sequence_log_probs, PairLoading, PreferenceData, PreferencePair,
};
use super::metrics::{plot_metrics, MetricsLog};
use super::optim::{AdamW, AdamWConfig};
use super::precision::Precision;
use super::preference_loss::{
    chosen_nll, PairLogProbs, PairLoss, PreferenceLoss, PreferenceLossConfig,
};
use super::schedule::{Decay, Schedule};
use super::sft_data::{Batching, LengthReport, OverLength};
use super::trainable::{cast_decoder, TrainableDecoder};
use crate::data::hashing::sha256_hex;
use crate::model::{self, Decoder};

/// Every knob of a DPO run (a `[dpo]` recipe section; CLI flags override it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoConfig {
    /// The model to train (usually the SFT student): model directory, hub id or llama2.c file.
    pub policy: String,
    /// The frozen reference; the starting policy when unset. SimPO uses none.
    #[serde(default)]
    pub reference: Option<String>,
    /// A `distill pairs` output directory (or its `pairs/` shards).
    pub data: PathBuf,
    /// Output directory: `final/`, `checkpoints/`, `metrics.jsonl`, `loss.svg`, `margins.svg`,
    /// `reference_logps.json`, `summary.json`.
    pub out: PathBuf,
    /// Which preference loss.
    #[serde(default = "defaults::loss")]
    pub loss: PreferenceLoss,
    /// β: the implicit reward's inverse temperature (IPO: its regulariser).
    #[serde(default = "defaults::beta")]
    pub beta: f64,
    /// Label smoothing ε (`sigmoid`: conservative DPO; `robust`; `simpo`).
    #[serde(default)]
    pub label_smoothing: f64,
    /// SimPO's target margin γ.
    #[serde(default = "defaults::simpo_gamma")]
    pub simpo_gamma: f64,
    /// Weight of the chosen replies' negative log-likelihood added to the loss (RPO; TRL's
    /// `loss_type=[…, "sft"]` with this loss weight); 0 = none.
    #[serde(default)]
    pub sft_weight: f64,
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
    /// Pairs per micro-batch (each is two rows: chosen and rejected).
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Micro-batches per optimiser step; the step's loss is the mean over all its pairs.
    #[serde(default = "defaults::one")]
    pub grad_accum: usize,
    /// Longest side (prompt and reply) in tokens.
    #[serde(default = "defaults::max_length")]
    pub max_length: usize,
    /// What to do with a longer side (a dropped side drops its pair).
    #[serde(default = "defaults::over_length")]
    pub over_length: OverLength,
    /// The most of the training pairs' reply tokens that `max_length` may take away before the
    /// run refuses to start.
    #[serde(default = "defaults::max_lost_loss_fraction")]
    pub max_lost_loss_fraction: f64,
    /// Passes over the training pairs (ignored when `max_steps` is set).
    #[serde(default = "defaults::one")]
    pub epochs: usize,
    /// Stop after this many optimiser steps.
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Checkpoint every this many steps (0 = only at the end).
    #[serde(default)]
    pub save_every: u64,
    /// Held-out metrics every this many steps (0 = only at the end).
    #[serde(default)]
    pub eval_every: u64,
    /// Fraction of problems whose pairs are held out.
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
    /// Compute precision: `auto` (bf16 on CUDA, f32 on the CPU), `f32` or `bf16`.
    #[serde(default)]
    pub precision: Precision,
}

mod defaults {
    use super::{Decay, OverLength, PreferenceLoss};
    pub fn loss() -> PreferenceLoss {
        PreferenceLoss::Sigmoid
    }
    pub fn beta() -> f64 {
        0.1
    }
    pub fn simpo_gamma() -> f64 {
        0.5
    }
    pub fn learning_rate() -> f64 {
        1e-6
    }
    pub fn decay() -> Decay {
        Decay::Linear
    }
    pub fn batch_size() -> usize {
        4
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
    pub fn eval_fraction() -> f64 {
        0.05
    }
    pub fn device() -> String {
        "cpu".into()
    }
}

/// What a finished run reports (also written to `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DpoSummary {
    /// The loss trained with.
    pub preference_loss: PreferenceLoss,
    /// Optimiser steps taken in total.
    pub steps: u64,
    /// Training pairs and what the length policy did to them.
    pub examples: LengthReport,
    /// Held-out pairs.
    pub eval_pairs: usize,
    /// Tokens through the policy's forward and backward (both sides of every pair trained on).
    pub tokens_seen: u64,
    /// Tokens the frozen reference scored, once (0 for SimPO).
    pub reference_tokens: u64,
    /// Loss of the last step.
    pub final_loss: f64,
    /// Held-out metrics at the end (when pairs are held out).
    pub final_eval: Option<PreferenceMetrics>,
    /// Wall time of this invocation, seconds.
    pub wall_seconds: f64,
    /// Parameters of the policy.
    pub parameters: usize,
    /// Estimated FLOPs: 6·params per trained token, 2·params per reference token.
    pub flops: f64,
    /// The dtype the steps computed in.
    pub compute_dtype: String,
    /// Where the trained model is.
    pub model_dir: PathBuf,
}

/// File of the output directory holding the tokenised pairs while training runs.
pub const TOKEN_STORE_FILE: &str = ".dpo-tokens";

/// File of the output directory caching the reference's log-probs.
pub const REFERENCE_FILE: &str = "reference_logps.json";

/// Means over a set of pairs of what TRL logs for DPO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PreferenceMetrics {
    /// Mean preference loss, plus the weighted chosen NLL when there is one.
    pub loss: f64,
    /// Mean negative log-likelihood per token of the chosen replies.
    pub chosen_nll: f64,
    /// Mean implicit reward of the chosen replies.
    pub chosen_reward: f64,
    /// Mean implicit reward of the rejected replies.
    pub rejected_reward: f64,
    /// Fraction of pairs whose chosen reward exceeds the rejected one.
    pub accuracy: f64,
    /// Mean of chosen minus rejected reward.
    pub margin: f64,
    /// Mean policy log-prob of the chosen replies.
    pub chosen_logp: f64,
    /// Mean policy log-prob of the rejected replies.
    pub rejected_logp: f64,
    /// Pairs averaged.
    pub pairs: usize,
}

impl PreferenceMetrics {
    /// The means over `pairs` (each its log-probs and loss), the chosen NLL weighted by
    /// `sft_weight` joining the loss.
    pub fn of(pairs: &[(PairLogProbs, PairLoss)], sft_weight: f64) -> Self {
        let n = pairs.len().max(1) as f64;
        let mean =
            |f: &dyn Fn(&(PairLogProbs, PairLoss)) -> f64| pairs.iter().map(f).sum::<f64>() / n;
        let logps: Vec<PairLogProbs> = pairs.iter().map(|(p, _)| *p).collect();
        let (nll, _) = chosen_nll(&logps);
        PreferenceMetrics {
            loss: mean(&|(_, l)| l.loss) + sft_weight * nll,
            chosen_nll: nll,
            chosen_reward: mean(&|(_, l)| l.chosen_reward),
            rejected_reward: mean(&|(_, l)| l.rejected_reward),
            accuracy: mean(&|(_, l)| f64::from(u8::from(l.chosen_reward > l.rejected_reward))),
            margin: mean(&|(_, l)| l.chosen_reward - l.rejected_reward),
            chosen_logp: mean(&|(p, _)| p.policy_chosen),
            rejected_logp: mean(&|(p, _)| p.policy_rejected),
            pairs: pairs.len(),
        }
    }

    /// The metrics under TRL's names, prefixed (`""` or `"eval_"`).
    fn record(&self, prefix: &str) -> serde_json::Map<String, serde_json::Value> {
        [
            ("loss", self.loss),
            ("nll/chosen", self.chosen_nll),
            ("rewards/chosen", self.chosen_reward),
            ("rewards/rejected", self.rejected_reward),
            ("rewards/accuracies", self.accuracy),
            ("rewards/margins", self.margin),
            ("logps/chosen", self.chosen_logp),
            ("logps/rejected", self.rejected_logp),
        ]
        .into_iter()
        .map(|(key, value)| (format!("{prefix}{key}"), json!(value)))
        .collect()
    }
}

impl DpoConfig {
    /// Refuses impossible values before anything is loaded.
    pub fn validate(&self) -> anyhow::Result<()> {
        use super::config_checks::{count_at_least, finite_at_least, fraction};
        finite_at_least("learning_rate", self.learning_rate, 0.0)?;
        fraction("min_lr_ratio", self.min_lr_ratio)?;
        fraction("eval_fraction", self.eval_fraction)?;
        fraction("max_lost_loss_fraction", self.max_lost_loss_fraction)?;
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            bail!(
                "`beta` is {}: it must be a positive finite number",
                self.beta
            );
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            bail!(
                "`label_smoothing` is {}: it must be within 0..0.5 (the chance that a pair's labels are flipped)",
                self.label_smoothing
            );
        }
        if self.loss == PreferenceLoss::Ipo && self.label_smoothing != 0.0 {
            bail!("`label_smoothing` has no meaning for the `ipo` loss: leave it at 0");
        }
        finite_at_least("sft_weight", self.sft_weight, 0.0)?;
        if !self.simpo_gamma.is_finite() {
            bail!("`simpo_gamma` is {}: it must be finite", self.simpo_gamma);
        }
        if !self.loss.needs_reference() && self.reference.is_some() {
            bail!("the `simpo` loss uses no reference model: remove `reference`");
        }
        count_at_least("batch_size", self.batch_size, 1, "pairs per micro-batch")?;
        count_at_least("grad_accum", self.grad_accum, 1, "micro-batches per step")?;
        count_at_least(
            "max_length",
            self.max_length,
            2,
            "a prompt token and a target",
        )?;
        count_at_least("epochs", self.epochs, 1, "passes over the data")?;
        Ok(())
    }

    fn loss_config(&self) -> PreferenceLossConfig {
        PreferenceLossConfig {
            kind: self.loss,
            beta: self.beta,
            label_smoothing: self.label_smoothing,
            simpo_gamma: self.simpo_gamma,
        }
    }

    /// The reference model: the named one, or the starting policy.
    fn reference_model(&self) -> &str {
        self.reference.as_deref().unwrap_or(&self.policy)
    }
}

/// Hash of everything that must not change between a run and its resumption.
fn config_hash(config: &DpoConfig) -> String {
    let mut canonical = serde_json::to_value(config).unwrap_or_default();
    if let Some(map) = canonical.as_object_mut() {
        for volatile in ["out", "save_every", "eval_every", "device"] {
            map.remove(volatile);
        }
    }
    sha256_hex(canonical.to_string().as_bytes())[..16].to_string()
}

/// The reference's summed reply log-probs of every training and held-out pair, `(chosen,
/// rejected)` in the data's order. (serde_json's `float_roundtrip` makes the cached values read
/// back bit for bit, so a resumed run computes exactly what an uninterrupted one does.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ReferenceLogProbs {
    /// Hash of the reference, the data and the tokenisation they were computed for.
    key: String,
    /// Tokens the reference scored to make them.
    tokens: u64,
    train: Vec<(f64, f64)>,
    eval: Vec<(f64, f64)>,
}

/// What the reference cache depends on: the reference model, the data and how it was tokenised.
fn reference_key(config: &DpoConfig) -> String {
    let canonical = json!({
        "reference": config.reference_model(), "data": config.data, "max_length": config.max_length,
        "over_length": config.over_length, "eval_fraction": config.eval_fraction,
        "precision": config.precision,
    });
    sha256_hex(canonical.to_string().as_bytes())[..16].to_string()
}

/// Pairs scored by one model.
struct ScoredPairs {
    /// Summed reply log-probs `(chosen, rejected)` of each pair.
    logps: Vec<(f64, f64)>,
    /// Reply lengths `(chosen, rejected)` of each pair.
    lengths: Vec<(usize, usize)>,
    /// Tokens scored (prompts and replies).
    tokens: u64,
}

/// Scores `pairs` with `model` without gradient, `batch_size` pairs at a time.
fn score_pairs(
    model: &Decoder,
    data: &PreferenceData,
    pairs: &[PreferencePair],
    batch_size: usize,
    device: &Device,
) -> anyhow::Result<ScoredPairs> {
    let (mut logps, mut lengths, mut tokens) = (Vec::new(), Vec::new(), 0u64);
    for chunk in pairs.chunks(batch_size.max(1)) {
        let refs: Vec<&PreferencePair> = chunk.iter().collect();
        let scored = sequence_log_probs(model, &pair_batch(&data.store, &refs, device)?)?;
        let values = scored.logps.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let b = chunk.len();
        logps.extend((0..b).map(|i| (values[i], values[b + i])));
        lengths.extend((0..b).map(|i| (scored.tokens[i], scored.tokens[b + i])));
        tokens += scored.batch_tokens as u64;
    }
    Ok(ScoredPairs {
        logps,
        lengths,
        tokens,
    })
}

/// The reference's log-probs: read from the cache when it was made for the same reference and
/// data, otherwise computed (with `policy`, the loaded starting model, unless another reference is
/// named) and cached.
fn reference_log_probs(
    config: &DpoConfig,
    data: &PreferenceData,
    policy: &Decoder,
    device: &Device,
    compute_dtype: DType,
) -> anyhow::Result<ReferenceLogProbs> {
    let path = config.out.join(REFERENCE_FILE);
    let key = reference_key(config);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(cached) = serde_json::from_str::<ReferenceLogProbs>(&text) {
            if cached.key == key
                && cached.train.len() == data.train.len()
                && cached.eval.len() == data.eval.len()
            {
                return Ok(cached);
            }
        }
    }
    // The default reference is the starting policy, already loaded: it is not read again.
    let reference = match &config.reference {
        None => cast_decoder(policy, compute_dtype)?,
        Some(path) => {
            let loaded = model::load(path, device, DType::F32)
                .with_context(|| format!("loading reference {path}"))?;
            cast_decoder(&loaded.model, compute_dtype)?
        }
    };
    let train = score_pairs(&reference, data, &data.train, config.batch_size, device)?;
    let eval = score_pairs(&reference, data, &data.eval, config.batch_size, device)?;
    let scored = ReferenceLogProbs {
        key,
        tokens: train.tokens + eval.tokens,
        train: train.logps,
        eval: eval.logps,
    };
    crate::model::save::write_atomic(&path, &serde_json::to_vec(&scored)?)?;
    Ok(scored)
}

/// Per-pair log-probs (policy and reference) and losses.
fn pair_losses(
    loss: &PreferenceLossConfig,
    policy: &[(f64, f64)],
    reference: &[(f64, f64)],
    lengths: &[(usize, usize)],
) -> Vec<(PairLogProbs, PairLoss)> {
    policy
        .iter()
        .zip(reference)
        .zip(lengths)
        .map(|((&(pc, pr), &(rc, rr)), &(lc, lr))| {
            let logps = PairLogProbs {
                policy_chosen: pc,
                policy_rejected: pr,
                reference_chosen: rc,
                reference_rejected: rr,
                chosen_tokens: lc,
                rejected_tokens: lr,
            };
            (logps, loss.pair_loss(&logps))
        })
        .collect()
}

/// The held-out metrics of the current weights.
fn held_out_metrics(
    trainable: &TrainableDecoder,
    config: &DpoConfig,
    data: &PreferenceData,
    reference: &[(f64, f64)],
    device: &Device,
) -> anyhow::Result<PreferenceMetrics> {
    let model = trainable.compute_model()?.detached()?;
    let policy = score_pairs(&model, data, &data.eval, config.batch_size, device)?;
    Ok(PreferenceMetrics::of(
        &pair_losses(
            &config.loss_config(),
            &policy.logps,
            reference,
            &policy.lengths,
        ),
        config.sft_weight,
    ))
}

/// Runs DPO; with `resume`, continues from the newest complete checkpoint under `config.out`.
pub fn run_dpo(config: &DpoConfig, resume: bool) -> anyhow::Result<DpoSummary> {
    let started = Instant::now();
    config.validate()?;
    let _claim =
        crate::output_dir::OutputDir::claim(&config.out, crate::output_dir::OutputKind::Dpo)?;
    let device = crate::runtime::parse_device(&config.device)?;
    let mut loaded = model::load(&config.policy, &device, DType::F32)
        .with_context(|| format!("loading policy {}", config.policy))?;
    let data = PairLoading {
        data: &config.data,
        tokenizer: &loaded.tokenizer,
        max_length: config.max_length,
        over_length: config.over_length,
        eval_fraction: config.eval_fraction,
        store: &config.out.join(TOKEN_STORE_FILE),
    }
    .load()
    .with_context(|| format!("reading preference pairs from {}", config.data.display()))?;
    data.report
        .check_lost_fraction(config.max_length, config.max_lost_loss_fraction)
        .with_context(|| format!("{}: preference pairs", config.data.display()))?;
    let compute_dtype = config.precision.compute_dtype(&device);
    let reference = if config.loss.needs_reference() {
        reference_log_probs(config, &data, &loaded.model, &device, compute_dtype)?
    } else {
        let zeros = |n: usize| vec![(0.0, 0.0); n];
        ReferenceLogProbs {
            key: String::new(),
            tokens: 0,
            train: zeros(data.train.len()),
            eval: zeros(data.eval.len()),
        }
    };
    let export = ExportInfo {
        tokenizer: &loaded.tokenizer,
        eos_token_ids: &loaded.eos_token_ids,
        generation_config: loaded.generation_config.as_ref(),
    };
    let trainable = TrainableDecoder::from_model(&mut loaded.model)?.computing_in(compute_dtype);
    let mut optimizer = AdamW::new(&trainable.params, config.optimizer.clone())?;
    let batching = Batching {
        batch_size: config.batch_size,
        max_length: 2 * config.max_length,
        pack: false,
        seed: config.seed,
    };
    let pair_tokens: Vec<usize> = data.train.iter().map(PreferencePair::tokens).collect();
    let batches_per_epoch = batching.plan(&pair_tokens, 0).len();
    let accum = config.grad_accum;
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
    let loss_config = config.loss_config();
    let progress = crate::progress::bar(total_steps, "dpo");
    progress.set_position(state.step);
    let mut plan = batching.plan(&pair_tokens, state.epoch);
    let (mut last_loss, mut last_eval) = (f64::NAN, None);
    while state.step < total_steps {
        let step_started = Instant::now();
        let model = trainable.compute_model()?;
        let mut micro_batches: Vec<Vec<usize>> = Vec::with_capacity(accum);
        for _ in 0..accum {
            if state.batch_in_epoch >= plan.len() {
                state.epoch += 1;
                state.batch_in_epoch = 0;
                plan = batching.plan(&pair_tokens, state.epoch);
            }
            micro_batches.push(
                plan[state.batch_in_epoch]
                    .iter()
                    .map(|row| row[0])
                    .collect(),
            );
            state.batch_in_epoch += 1;
        }
        // The step's loss is the mean over every pair of its micro-batches, plus each
        // micro-batch's chosen NLL (a token mean, as TRL's `sft` term) weighted by its share of
        // the step's pairs.
        let step_pairs = micro_batches.iter().map(Vec::len).sum::<usize>().max(1) as f64;
        let (mut scored, mut step_tokens, mut step_nll) = (Vec::new(), 0usize, 0.0);
        for indices in &micro_batches {
            let pairs: Vec<&PreferencePair> = indices.iter().map(|&i| &data.train[i]).collect();
            let policy = sequence_log_probs(&model, &pair_batch(&data.store, &pairs, &device)?)?;
            let values = policy.logps.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let b = pairs.len();
            let losses = pair_losses(
                &loss_config,
                &(0..b)
                    .map(|i| (values[i], values[b + i]))
                    .collect::<Vec<_>>(),
                &indices
                    .iter()
                    .map(|&i| reference.train[i])
                    .collect::<Vec<_>>(),
                &(0..b)
                    .map(|i| (policy.tokens[i], policy.tokens[b + i]))
                    .collect::<Vec<_>>(),
            );
            let share = b as f64 / step_pairs;
            let (nll, nll_grad) = chosen_nll(&losses.iter().map(|(p, _)| *p).collect::<Vec<_>>());
            step_nll += share * nll;
            // d(step loss)/d(log-prob) per row; the surrogate Σ w·logπ has the loss's gradient.
            let weights: Vec<f64> = losses
                .iter()
                .map(|(_, l)| l.grad_chosen / step_pairs + config.sft_weight * share * nll_grad)
                .chain(losses.iter().map(|(_, l)| l.grad_rejected / step_pairs))
                .collect();
            let weights = Tensor::new(weights, &device)?.to_dtype(policy.logps.dtype())?;
            let surrogate = (&policy.logps * weights)?.sum_all()?;
            optimizer.accumulate(&surrogate.backward()?, 1.0)?;
            step_tokens += policy.batch_tokens;
            scored.extend(losses);
        }
        let mut step = PreferenceMetrics::of(&scored, 0.0);
        step.chosen_nll = step_nll;
        step.loss += config.sft_weight * step_nll;
        if !step.loss.is_finite() {
            bail!(
                "loss is {} at step {}: stopping; the last good checkpoint is {}",
                step.loss,
                state.step + 1,
                latest_checkpoint(&config.out).map_or("(none)".into(), |p| p.display().to_string())
            );
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
        last_loss = step.loss;
        let seconds = step_started.elapsed().as_secs_f64();
        let mut record = step.record("");
        record.extend(
            json!({
                "step": state.step, "lr": lr, "grad_norm": report.grad_norm, "tokens": step_tokens,
                "tokens_per_s": step_tokens as f64 / seconds.max(1e-9), "epoch": state.epoch,
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        let eval_due = config.eval_every > 0 && state.step.is_multiple_of(config.eval_every);
        if !data.eval.is_empty() && (eval_due || state.step == total_steps) {
            let held_out = held_out_metrics(&trainable, config, &data, &reference.eval, &device)?;
            record.extend(held_out.record("eval_"));
            last_eval = Some(held_out);
        }
        metrics.log(&serde_json::Value::Object(record))?;
        progress.set_message(format!("loss {:.4} margin {:.3}", step.loss, step.margin));
        progress.set_position(state.step);
        let save_due = config.save_every > 0 && state.step.is_multiple_of(config.save_every);
        if save_due || state.step == total_steps {
            save_checkpoint(&config.out, &trainable, &export, &optimizer, &state)?;
        }
    }
    progress.finish_and_clear();

    let model_dir = config.out.join("final");
    export.save(&trainable, &model_dir)?;
    write_plots(&config.out)?;
    let parameters = loaded.model.config().parameter_count();
    let summary = DpoSummary {
        preference_loss: config.loss,
        steps: state.step,
        examples: data.report,
        eval_pairs: data.eval.len(),
        tokens_seen: state.tokens_seen,
        reference_tokens: reference.tokens,
        final_loss: last_loss,
        final_eval: last_eval,
        wall_seconds: started.elapsed().as_secs_f64(),
        parameters,
        flops: estimated_flops(parameters, state.tokens_seen, reference.tokens),
        compute_dtype: format!("{compute_dtype:?}"),
        model_dir,
    };
    let text = serde_json::to_vec_pretty(&summary)?;
    crate::model::save::write_atomic(&config.out.join("summary.json"), &text)?;
    Ok(summary)
}

/// Draws `loss.svg` and `margins.svg` from the run's `metrics.jsonl`.
fn write_plots(out: &Path) -> anyhow::Result<()> {
    plot_metrics(
        out,
        "loss.svg",
        "DPO loss",
        &[("train loss", "loss"), ("held-out loss", "eval_loss")],
    )?;
    plot_metrics(
        out,
        "margins.svg",
        "DPO reward margin (chosen − rejected)",
        &[
            ("train", "rewards/margins"),
            ("held-out", "eval_rewards/margins"),
        ],
    )?;
    Ok(())
}
