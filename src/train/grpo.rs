//! `distill grpo`: Group Relative Policy Optimisation (R1-Zero's RL) on a student. Each step: sample
//! G completions per prompt from the current weights (detached views, no copy), score them, compute
//! group-relative advantages, then μ clipped-surrogate updates (KL to a frozen reference with the k3
//! estimator) through the fused GRPO loss — logged, checkpointed and resumable like SFT.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::checkpoint::{save_checkpoint, start_or_resume, ExportInfo};
use super::compute::estimated_flops;
use super::loss::next_token_log_probs_and_entropy;
use super::metrics::{plot_metrics, MetricsLog};
use super::optim::{AdamW, AdamWConfig};
use super::precision::Precision;
use super::recompute::{loss_and_gradients, Checkpointing, LossAndGradients};
use super::rewards::{advantages, AdvantageScaling, RewardBreakdown, RewardConfig, Scored};
use super::schedule::{Decay, Schedule};
use super::trainable::{cast_decoder, TrainableDecoder};
use super::trl::{Engine, TrlLaunch};
use crate::data::hashing::{sha256_hex, sha256_u64};
use crate::data::sources::Problem;
use crate::generate::prompts::think_prefill;
use crate::model::generate::{
    generate, Completion, FinishReason, GenerationConfig, GenerationRequest,
};
use crate::model::{self, ChatOptions, Decoder, Message, SamplerConfig, Tokenizer};
use crate::ops::{grpo_loss, GrpoAggregation, GrpoInputs, GrpoLoss};

/// How per-token losses are reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LossAggregation {
    /// Mean over each completion's tokens, then over completions (GRPO).
    Grpo,
    /// Sum over tokens divided by completions × max_new_tokens (Dr. GRPO).
    DrGrpo,
    /// Token-level mean over the whole batch (DAPO).
    Dapo,
}

/// Every knob of a GRPO run (a `[grpo]` recipe section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoConfig {
    /// The policy to train: model directory, hub id or llama2.c file.
    pub policy: String,
    /// Output directory: `final/`, `checkpoints/`, `metrics.jsonl`, `reward.svg`, `summary.json`.
    pub out: PathBuf,
    /// Completions per prompt (G).
    #[serde(default = "defaults::group_size")]
    pub group_size: usize,
    /// Prompts per step.
    #[serde(default = "defaults::prompts_per_step")]
    pub prompts_per_step: usize,
    /// Rollout steps (at most).
    #[serde(default = "defaults::steps")]
    pub steps: u64,
    /// Stop once the estimated training compute (6·params·update tokens + 2·params·generated
    /// tokens) reaches this many FLOPs: how a recipe matches GRPO's compute to SFT's.
    #[serde(default)]
    pub max_flops: Option<f64>,
    /// Completion length limit.
    #[serde(default = "defaults::max_new_tokens")]
    pub max_new_tokens: usize,
    /// Rollout temperature.
    #[serde(default = "defaults::one_f")]
    pub temperature: f32,
    /// Rollout nucleus threshold.
    #[serde(default = "defaults::one_f")]
    pub top_p: f32,
    /// Peak learning rate.
    #[serde(default = "defaults::learning_rate")]
    pub learning_rate: f64,
    /// Linear warmup (optimiser steps).
    #[serde(default)]
    pub warmup_steps: u64,
    /// Decay after warmup.
    #[serde(default = "defaults::decay")]
    pub decay: Decay,
    /// Final learning rate as a fraction of the peak.
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Lower clip range ε_low.
    #[serde(default = "defaults::epsilon")]
    pub epsilon_low: f64,
    /// Upper clip range ε_high.
    #[serde(default = "defaults::epsilon")]
    pub epsilon_high: f64,
    /// KL coefficient β (0 = no reference model).
    #[serde(default)]
    pub beta: f64,
    /// Updates per batch of rollouts (μ).
    #[serde(default = "defaults::mu")]
    pub mu: usize,
    /// Loss reduction.
    #[serde(default = "defaults::aggregation")]
    pub loss: LossAggregation,
    /// Advantage scaling.
    #[serde(default = "defaults::scaling")]
    pub advantage_scaling: AdvantageScaling,
    /// Give no gradient to completions cut by the length limit.
    #[serde(default)]
    pub mask_truncated: bool,
    /// Reward weights.
    #[serde(default)]
    pub rewards: RewardConfig,
    /// The sandbox code problems are graded in (started only when there are code problems).
    #[serde(default)]
    pub sandbox: crate::sandbox::SandboxSettings,
    /// Optional system prompt.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Appended to each problem in the user turn.
    #[serde(default = "defaults::instruction")]
    pub instruction: String,
    /// Checkpoint every this many steps (0 = only at the end).
    #[serde(default)]
    pub save_every: u64,
    /// Seed of prompt order and sampling.
    #[serde(default)]
    pub seed: u64,
    /// `cpu` or `cuda:N`.
    #[serde(default = "defaults::device")]
    pub device: String,
    /// Compute precision of rollouts and updates: `auto` (bf16 on CUDA, f32 on the CPU), `f32` or
    /// `bf16` (over f32 master weights either way).
    #[serde(default)]
    pub precision: Precision,
    /// Activation checkpointing: keep only each decoder layer's input during the forward and
    /// recompute the layer in the backward (less memory, one more forward through the layers; the
    /// gradients are the same).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
    /// Optimiser settings.
    #[serde(default)]
    pub optimizer: AdamWConfig,
    /// Which trainer runs the steps: `distill` (this loop) or `trl` (TRL under accelerate).
    #[serde(default, skip_serializing_if = "Engine::is_distill")]
    pub engine: Engine,
    /// How the `trl` engine is launched (interpreter, processes, nodes, accelerate config).
    #[serde(default, skip_serializing_if = "TrlLaunch::is_default")]
    pub trl: TrlLaunch,
}

mod defaults {
    use super::{AdvantageScaling, Decay, LossAggregation};
    pub fn group_size() -> usize {
        8
    }
    pub fn prompts_per_step() -> usize {
        4
    }
    pub fn steps() -> u64 {
        50
    }
    pub fn max_new_tokens() -> usize {
        256
    }
    pub fn one_f() -> f32 {
        1.0
    }
    pub fn learning_rate() -> f64 {
        1e-5
    }
    pub fn decay() -> Decay {
        Decay::Constant
    }
    pub fn epsilon() -> f64 {
        0.2
    }
    pub fn mu() -> usize {
        1
    }
    pub fn aggregation() -> LossAggregation {
        LossAggregation::Grpo
    }
    pub fn scaling() -> AdvantageScaling {
        AdvantageScaling::Group
    }
    pub fn instruction() -> String {
        crate::data::schema::DEFAULT_INSTRUCTION.to_string()
    }
    pub fn device() -> String {
        "cpu".into()
    }
}

/// What a finished run reports (also `summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct GrpoSummary {
    /// Rollout steps completed.
    pub steps: u64,
    /// Mean total reward over the first step's completions.
    pub first_reward: f64,
    /// Mean total reward over the last step's completions.
    pub last_reward: f64,
    /// Tokens through the policy's forward pass in rollouts: each prompt's prefill (once per group)
    /// and the sampled completions.
    pub rollout_tokens: u64,
    /// Tokens scored by the frozen reference model for the KL term (0 when `beta` is 0).
    pub reference_tokens: u64,
    /// Tokens passed through forward+backward in updates.
    pub update_tokens: u64,
    /// Parameters of the policy.
    pub parameters: usize,
    /// Estimated training FLOPs: 6·params per update token, 2·params per rollout or reference token.
    pub flops: f64,
    /// Wall time of this invocation, seconds.
    pub wall_seconds: f64,
    /// Where the trained policy is.
    pub model_dir: PathBuf,
}

/// Prompt and completion tokens of a rollout batch, right-padded, with the completion mask.
#[derive(Debug)]
pub struct RolloutBatch {
    /// `[B, T]` token ids (prompt then completion, then padding).
    pub ids: Tensor,
    /// `[B, T]` positions.
    pub positions: Tensor,
    /// `[B, T]` f32: 1 on completion tokens that receive gradient.
    pub completion_mask: Tensor,
    /// Completion tokens that receive gradient.
    pub completion_tokens: usize,
    /// Non-padding tokens.
    pub tokens: usize,
}

impl RolloutBatch {
    /// Lays out `prompts[c.prompt_index] ++ c.tokens (++ c.eos_token, the EOS id it sampled, when it
    /// ended on one)` for each completion. With `mask_truncated`, completions that hit the length
    /// limit get no gradient.
    pub fn new(
        prompts: &[Vec<u32>],
        completions: &[Completion],
        mask_truncated: bool,
        device: &Device,
    ) -> model::Result<Self> {
        let sequences: Vec<(Vec<u32>, usize, bool)> = completions
            .iter()
            .map(|c| {
                let mut seq = prompts[c.prompt_index].clone();
                seq.extend(&c.tokens);
                seq.extend(c.eos_token);
                let trains = !(mask_truncated && c.finish_reason == FinishReason::Length);
                (seq, prompts[c.prompt_index].len(), trains)
            })
            .collect();
        let width = sequences
            .iter()
            .map(|s| s.0.len())
            .max()
            .unwrap_or(0)
            .max(2);
        let (mut ids, mut positions, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        let (mut completion_tokens, mut tokens) = (0, 0);
        for (seq, prompt_len, trains) in &sequences {
            let pad = width - seq.len();
            ids.extend(seq.iter().copied().chain(std::iter::repeat_n(0, pad)));
            positions.extend((0..width as u32).map(|p| p.min(seq.len() as u32)));
            let row: Vec<f32> = (0..width)
                .map(|t| f32::from(u8::from(*trains && t >= *prompt_len && t < seq.len())))
                .collect();
            completion_tokens += row.iter().filter(|&&m| m > 0.0).count();
            tokens += seq.len();
            mask.extend(row);
        }
        let shape = (sequences.len(), width);
        Ok(RolloutBatch {
            ids: Tensor::from_vec(ids, shape, device)?,
            positions: Tensor::from_vec(positions, shape, device)?,
            completion_mask: Tensor::from_vec(mask, shape, device)?,
            completion_tokens,
            tokens,
        })
    }

    /// Per-token log-probs (and entropies) of the completion tokens under `model` at the rollout
    /// `temperature` (`log_softmax(logits / T)`, the distribution they were sampled from), `[B, T - 1]`.
    pub fn log_probs(
        &self,
        model: &Decoder,
        temperature: f64,
    ) -> model::Result<crate::ops::SelectiveLogSoftmax> {
        let hidden = model.forward(&self.ids, &self.positions, None, None)?;
        self.log_probs_of_hidden(&hidden, model, temperature)
    }

    /// [`RolloutBatch::log_probs`] from `model`'s final hidden states on the batch.
    pub fn log_probs_of_hidden(
        &self,
        hidden: &Tensor,
        model: &Decoder,
        temperature: f64,
    ) -> model::Result<crate::ops::SelectiveLogSoftmax> {
        next_token_log_probs_and_entropy(
            hidden,
            model.lm_head(),
            &self.ids,
            &self.completion_mask,
            temperature,
        )
    }

    /// The completion mask aligned with [`RolloutBatch::log_probs`], `[B, T - 1]`.
    pub fn target_mask(&self) -> model::Result<Tensor> {
        let t = self.completion_mask.dim(1)?;
        Ok(self.completion_mask.narrow(1, 1, t - 1)?)
    }
}

/// The GRPO objective of `model` on a rollout batch (differentiable through `model`'s weights).
pub fn policy_loss(
    model: &Decoder,
    batch: &RolloutBatch,
    old_logp: &Tensor,
    ref_logp: Option<&Tensor>,
    advantages: &Tensor,
    config: &GrpoConfig,
) -> model::Result<(GrpoLoss, Tensor)> {
    let current = batch.log_probs(model, f64::from(config.temperature))?;
    objective(&current, batch, old_logp, ref_logp, advantages, config)
}

/// The GRPO objective given the current policy's log-probs on the batch (differentiable through
/// them), with the per-token entropy.
pub fn objective(
    current: &crate::ops::SelectiveLogSoftmax,
    batch: &RolloutBatch,
    old_logp: &Tensor,
    ref_logp: Option<&Tensor>,
    advantages: &Tensor,
    config: &GrpoConfig,
) -> model::Result<(GrpoLoss, Tensor)> {
    let mask = batch.target_mask()?;
    let aggregation = match config.loss {
        LossAggregation::Grpo => GrpoAggregation::Grpo,
        LossAggregation::DrGrpo => GrpoAggregation::DrGrpo {
            max_completion_len: config.max_new_tokens,
        },
        LossAggregation::Dapo => GrpoAggregation::Dapo,
    };
    let loss = grpo_loss(
        &GrpoInputs {
            logp: &current.logp,
            old_logp,
            ref_logp,
            advantages,
            completion_mask: &mask,
        },
        &crate::ops::GrpoConfig {
            eps_low: config.epsilon_low,
            eps_high: config.epsilon_high,
            beta: config.beta,
            aggregation,
        },
    )?;
    Ok((loss, current.entropy.clone()))
}

/// The prompt of `problem` rendered with the policy's chat template, as token ids.
pub fn render_prompt(
    tokenizer: &Tokenizer,
    problem: &Problem,
    system: Option<&str>,
    instruction: &str,
) -> model::Result<Vec<u32>> {
    tokenizer.encode(
        &render_prompt_text(tokenizer, problem, system, instruction)?,
        false,
    )
}

/// The prompt of `problem` rendered with the policy's chat template, as text (its end tells
/// whether the template pre-fills `<think>`, see [`crate::generate::prompts::think_prefill`]).
pub fn render_prompt_text(
    tokenizer: &Tokenizer,
    problem: &Problem,
    system: Option<&str>,
    instruction: &str,
) -> model::Result<String> {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(Message::new("system", system));
    }
    let user = if instruction.is_empty() {
        problem.problem.clone()
    } else {
        format!("{}\n\n{instruction}", problem.problem)
    };
    messages.push(Message::user(user));
    tokenizer.render_chat(
        &messages,
        &ChatOptions {
            add_generation_prompt: true,
            enable_thinking: None,
        },
    )
}

fn config_hash(config: &GrpoConfig) -> String {
    let mut canonical = serde_json::to_value(config).unwrap_or_default();
    if let Some(map) = canonical.as_object_mut() {
        for volatile in ["out", "save_every", "device"] {
            map.remove(volatile);
        }
    }
    sha256_hex(canonical.to_string().as_bytes())[..16].to_string()
}

/// Indices of the prompts of step `step`: a seeded shuffle per pass over the problems.
fn step_prompts(problems: &[Problem], step: u64, per_step: usize, seed: u64) -> Vec<usize> {
    let per_pass = (problems.len() / per_step.max(1)).max(1) as u64;
    let pass = step / per_pass;
    let mut order: Vec<usize> = (0..problems.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
        seed ^ pass.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    ));
    let start = ((step % per_pass) as usize) * per_step;
    (0..per_step)
        .map(|i| order[(start + i) % order.len()])
        .collect()
}

/// The sampling seed of each prompt of step `step`, for the problems `problem_ids` in the step's
/// order: a hash of the run seed, the step and the problem id. When `prompts_per_step` exceeds the
/// number of problems a problem occurs more than once in a step; its second and later occurrences
/// hash their occurrence too, so that they sample groups of their own instead of copies.
pub fn rollout_seeds(seed: u64, step: u64, problem_ids: &[&str]) -> Vec<u64> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    problem_ids
        .iter()
        .map(|&id| {
            let occurrence = seen.entry(id).or_insert(0);
            let key = match *occurrence {
                0 => format!("{seed}/{step}/{id}"),
                n => format!("{seed}/{step}/{id}/{n}"),
            };
            *occurrence += 1;
            sha256_u64(key.as_bytes())
        })
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n.max(1) as f64
}

impl GrpoConfig {
    /// Refuses impossible values before anything is loaded.
    pub fn validate(&self) -> anyhow::Result<()> {
        use super::config_checks::{count_at_least, finite_at_least, fraction};
        count_at_least(
            "group_size",
            self.group_size,
            2,
            "a group needs two samples for a baseline",
        )?;
        count_at_least(
            "prompts_per_step",
            self.prompts_per_step,
            1,
            "prompts per rollout step",
        )?;
        count_at_least(
            "max_new_tokens",
            self.max_new_tokens,
            1,
            "tokens per completion",
        )?;
        count_at_least("mu", self.mu, 1, "updates per rollout step")?;
        finite_at_least("learning_rate", self.learning_rate, 0.0)?;
        fraction("min_lr_ratio", self.min_lr_ratio)?;
        finite_at_least(
            "temperature",
            f64::from(self.temperature),
            f64::MIN_POSITIVE,
        )?;
        finite_at_least("top_p", f64::from(self.top_p), f64::MIN_POSITIVE)?;
        fraction("top_p", f64::from(self.top_p))?;
        finite_at_least("epsilon_low", self.epsilon_low, 0.0)?;
        finite_at_least("epsilon_high", self.epsilon_high, 0.0)?;
        finite_at_least("beta", self.beta, 0.0)?;
        if let Some(budget) = self.max_flops {
            finite_at_least("max_flops", budget, 0.0)?;
        }
        self.trl.validate(self.engine)?;
        if self.engine == Engine::Trl {
            super::trl::settings::refuse_unmappable_grpo(self, &self.trl)?;
        }
        Ok(())
    }
}

/// Runs GRPO on `problems` (with the trainer `config.engine` names); with `resume`, continues
/// from the newest complete checkpoint.
pub fn run_grpo(
    config: &GrpoConfig,
    problems: &[Problem],
    resume: bool,
) -> anyhow::Result<GrpoSummary> {
    let started = Instant::now();
    config.validate()?;
    if config.engine == Engine::Trl {
        return super::trl::grpo_run::run_trl_grpo(config, problems, resume);
    }
    let _claim =
        crate::output_dir::OutputDir::claim(&config.out, crate::output_dir::OutputKind::Grpo)?;
    if problems.is_empty() {
        bail!("GRPO needs at least one prompt");
    }
    let checkers = crate::verify::grade::checkers_for(problems, &config.sandbox, "prompt")?;
    let device = crate::runtime::parse_device(&config.device)?;
    let mut loaded = model::load(&config.policy, &device, DType::F32)
        .with_context(|| format!("loading policy {}", config.policy))?;
    let tokenizer = &loaded.tokenizer;
    let export = ExportInfo {
        tokenizer,
        eos_token_ids: &loaded.eos_token_ids,
        generation_config: loaded.generation_config.as_ref(),
    };
    let compute_dtype = config.precision.compute_dtype(&device);
    // The reference is the loaded weights, frozen; taken before they become the trainable view.
    let reference = if config.beta > 0.0 {
        Some(cast_decoder(&loaded.model, compute_dtype)?)
    } else {
        None
    };
    let trainable = TrainableDecoder::from_model(&mut loaded.model)?.computing_in(compute_dtype);
    let mut optimizer = AdamW::new(&trainable.params, config.optimizer.clone())?;
    let schedule = Schedule {
        peak: config.learning_rate,
        warmup_steps: config.warmup_steps,
        total_steps: config.steps * config.mu.max(1) as u64,
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
    let progress = crate::progress::bar(config.steps, "grpo");
    progress.set_position(state.step);
    let generation = GenerationConfig {
        sampler: SamplerConfig {
            temperature: config.temperature,
            top_p: config.top_p,
            top_k: 0,
            min_p: 0.0,
        },
        max_new_tokens: config.max_new_tokens,
        n: config.group_size,
        eos_token_ids: loaded.eos_token_ids.clone(),
        stop_strings: Vec::new(),
    };
    let parameters = loaded.model.config().parameter_count();
    let logged = MetricsLog::read(&config.out.join("metrics.jsonl"))?;
    let logged_total = |key: &str| {
        logged
            .iter()
            .filter_map(|r| r.get(key)?.as_u64())
            .sum::<u64>()
    };
    let (mut rollout_tokens, mut reference_tokens, mut update_tokens) = (
        logged_total("rollout_tokens"),
        logged_total("reference_tokens"),
        logged_total("update_tokens"),
    );
    let flops = |forward_only: u64, update: u64| estimated_flops(parameters, update, forward_only);
    let budget_left = |forward_only: u64, update: u64| {
        config
            .max_flops
            .is_none_or(|budget| flops(forward_only, update) < budget)
    };

    while state.step < config.steps && budget_left(rollout_tokens + reference_tokens, update_tokens)
    {
        let rollout_started = Instant::now();
        let chosen_indices =
            step_prompts(problems, state.step, config.prompts_per_step, config.seed);
        let chosen: Vec<&Problem> = chosen_indices.iter().map(|&i| &problems[i]).collect();
        let prompt_texts: Vec<String> = chosen
            .iter()
            .map(|p| {
                render_prompt_text(
                    tokenizer,
                    p,
                    config.system_prompt.as_deref(),
                    &config.instruction,
                )
            })
            .collect::<model::Result<_>>()?;
        let prompts: Vec<Vec<u32>> = prompt_texts
            .iter()
            .map(|text| tokenizer.encode(text, false))
            .collect::<model::Result<_>>()?;
        let ids: Vec<&str> = chosen.iter().map(|p| p.id.as_str()).collect();
        let requests: Vec<GenerationRequest> = prompts
            .iter()
            .zip(rollout_seeds(config.seed, state.step, &ids))
            .map(|(prompt, seed)| GenerationRequest {
                prompt: prompt.clone(),
                seed,
            })
            .collect();
        let policy_view = trainable.compute_model()?.detached()?;
        let completions = generate(&policy_view, tokenizer, &requests, &generation)?;
        let scores: Vec<RewardBreakdown> = completions
            .par_iter()
            .map(|c| {
                let problem = chosen[c.prompt_index];
                config.rewards.score(&Scored {
                    prompt: &problem.problem,
                    prefill: think_prefill(&prompt_texts[c.prompt_index]),
                    completion: &c.text,
                    gold: &problem.answer,
                    checker: &checkers[chosen_indices[c.prompt_index]],
                    completion_tokens: c.completion_tokens,
                    max_new_tokens: config.max_new_tokens,
                })
            })
            .collect();
        let totals: Vec<f64> = scores.iter().map(|s| s.total).collect();
        let (advantage, flat_groups) =
            advantages(&totals, config.group_size, config.advantage_scaling);
        let rollout_seconds = rollout_started.elapsed().as_secs_f64();

        let update_started = Instant::now();
        let batch = RolloutBatch::new(&prompts, &completions, config.mask_truncated, &device)?;
        let advantage = Tensor::from_vec(
            advantage.iter().map(|&a| a as f32).collect::<Vec<_>>(),
            advantage.len(),
            &device,
        )?;
        let temperature = f64::from(config.temperature);
        let ref_logp = match &reference {
            Some(reference) => Some(batch.log_probs(reference, temperature)?.logp.detach()),
            None => None,
        };
        // Loss, clip fraction, KL and entropy summed over the μ iterations; logged as their means.
        let (mut loss_value, mut clip_fraction, mut kl, mut entropy) = (0.0, 0.0, 0.0, 0.0);
        let mut old_logp: Option<Tensor> = None;
        let mu = config.mu.max(1);
        for _ in 0..mu {
            let model = trainable.compute_model()?;
            let LossAndGradients {
                extra: (loss, token_entropy),
                grads,
                ..
            } = loss_and_gradients(
                &model,
                &batch.ids,
                &batch.positions,
                None,
                Checkpointing::when(config.gradient_checkpointing),
                |hidden| {
                    let current = batch.log_probs_of_hidden(hidden, &model, temperature)?;
                    // The first iteration runs before any update, on the weights that sampled
                    // the rollouts: its log-probs are the old policy's, with no extra forward.
                    let old = old_logp.get_or_insert_with(|| current.logp.detach());
                    let (loss, token_entropy) =
                        objective(&current, &batch, old, ref_logp.as_ref(), &advantage, config)?;
                    Ok((loss.loss.clone(), (loss.detach(), token_entropy.detach())))
                },
            )?;
            let value = f64::from(loss.loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                bail!("GRPO loss is {value} at step {}: stopping", state.step + 1);
            }
            optimizer.accumulate(&grads, 1.0)?;
            let lr = schedule.lr(optimizer.steps());
            optimizer.step(lr)?;
            loss_value += value / mu as f64;
            clip_fraction += f64::from(loss.clip_fraction.to_scalar::<f32>()?) / mu as f64;
            kl += f64::from(loss.mean_kl.to_scalar::<f32>()?) / mu as f64;
            let mask = batch.target_mask()?;
            let count = f64::from(mask.sum_all()?.to_scalar::<f32>()?).max(1.0);
            entropy += f64::from(
                (token_entropy.detach() * &mask)?
                    .sum_all()?
                    .to_scalar::<f32>()?,
            ) / count
                / mu as f64;
        }
        let step_update_tokens = (batch.tokens * mu) as u64;
        update_tokens += step_update_tokens;
        let update_seconds = update_started.elapsed().as_secs_f64();
        let generated: u64 = completions.iter().map(|c| c.completion_tokens as u64).sum();
        let prefilled: u64 = prompts.iter().map(|p| p.len() as u64).sum();
        let step_reference_tokens = if reference.is_some() {
            batch.tokens as u64
        } else {
            0
        };
        rollout_tokens += prefilled + generated;
        reference_tokens += step_reference_tokens;
        state.step += 1;
        state.tokens_seen += batch.tokens as u64;
        let reward_mean = mean(totals.iter().copied());
        let lengths: Vec<usize> = completions.iter().map(|c| c.completion_tokens).collect();
        metrics.log(&json!({
            "step": state.step,
            "reward": reward_mean,
            "reward_accuracy": mean(scores.iter().map(|s| s.accuracy)),
            "reward_code_tests": mean(scores.iter().map(|s| s.code_tests)),
            "reward_format": mean(scores.iter().map(|s| s.format)),
            "reward_language": mean(scores.iter().map(|s| s.language)),
            "reward_length": mean(scores.iter().map(|s| s.length)),
            "reward_cosine_length": mean(scores.iter().map(|s| s.cosine_length)),
            "reward_repetition": mean(scores.iter().map(|s| s.repetition)),
            "reward_overlong": mean(scores.iter().map(|s| s.overlong)),
            "accuracy": mean(scores.iter().map(|s| s.accuracy)),
            "completion_length_mean": mean(lengths.iter().map(|&l| l as f64)),
            "completion_length_max": lengths.iter().max().copied().unwrap_or(0),
            "truncated_fraction": mean(completions.iter().map(|c| f64::from(u8::from(c.finish_reason == FinishReason::Length)))),
            "loss": loss_value,
            "clip_fraction": clip_fraction,
            "kl": kl,
            "entropy": entropy,
            "zero_std_group_fraction": flat_groups as f64 / chosen.len().max(1) as f64,
            "rollout_seconds": rollout_seconds,
            "update_seconds": update_seconds,
            "rollout_tokens": prefilled + generated,
            "generated_tokens": generated,
            "reference_tokens": step_reference_tokens,
            "update_tokens": step_update_tokens,
        }))?;
        progress.set_message(format!("reward {reward_mean:.3}"));
        progress.set_position(state.step);
        let save_due = config.save_every > 0 && state.step.is_multiple_of(config.save_every);
        let last_step = state.step == config.steps
            || !budget_left(rollout_tokens + reference_tokens, update_tokens);
        if save_due || last_step {
            save_checkpoint(&config.out, &trainable, &export, &optimizer, &state)?;
        }
    }
    progress.finish_and_clear();

    let model_dir = config.out.join("final");
    export.save(&trainable, &model_dir)?;
    plot_metrics(
        &config.out,
        "reward.svg",
        "GRPO reward",
        &[("reward", "reward"), ("accuracy", "accuracy")],
    )?;
    let records = MetricsLog::read(&config.out.join("metrics.jsonl"))?;
    let summary = GrpoSummary {
        steps: state.step,
        first_reward: records
            .first()
            .and_then(|r| r["reward"].as_f64())
            .unwrap_or(0.0),
        last_reward: records
            .last()
            .and_then(|r| r["reward"].as_f64())
            .unwrap_or(0.0),
        rollout_tokens,
        reference_tokens,
        update_tokens,
        parameters,
        flops: flops(rollout_tokens + reference_tokens, update_tokens),
        wall_seconds: started.elapsed().as_secs_f64(),
        model_dir,
    };
    crate::model::save::write_atomic(
        &config.out.join("summary.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    Ok(summary)
}
