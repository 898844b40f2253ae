//! `distill eval`: sample k completions per problem (R1's protocol: temperature 0.6, top-p 0.95),
//! grade each with the shared verifier, and report pass@1 (mean fraction of correct samples) and
//! cons@k (majority vote over verified-equivalent answers), overall and per source. Code problems
//! are graded by running each sample's program against the tests in the sandbox; their sample's
//! `answer` is its test-outcome key (see [`crate::verify::code::CodeGrade::outcome_key`]), and
//! samples vote together when their keys are identical.
//!
//! Outputs in the run directory: `data/samples.parquet` (one row per sample, see [`samples`]),
//! `summary.json` ([`EvalSummary`]) and a dataset card `README.md` naming the samples as the
//! `train` split, so `load_dataset(DIR)` opens it.

pub mod samples;
pub mod scoring;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::DType;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::card::{how_to_load, CardConfig, DatasetCard};
use crate::data::hashing::sha256_u64;
use crate::data::sources::Problem;
use crate::generate::prompts::{full_generation, think_prefill};
use crate::model::{self, generate, GenerationConfig, GenerationRequest, SamplerConfig};
use crate::sandbox::SandboxSettings;
use crate::train::grpo::render_prompt_text;
use crate::verify::grade::{grade_with, Grade};
use crate::verify::VerifyOptions;
use samples::{samples_path, write_samples, SampleRow};
use scoring::{aggregate, score_problem, GradedSample, ProblemScore};

/// Every knob of an evaluation (an `[eval]` recipe section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The model: directory, hub id or llama2.c file.
    pub model: String,
    /// Output directory (`data/samples.parquet`, `summary.json`, `README.md`).
    pub out: PathBuf,
    /// Samples per problem.
    #[serde(default = "defaults::k")]
    pub k: usize,
    /// Sampling temperature.
    #[serde(default = "defaults::temperature")]
    pub temperature: f32,
    /// Nucleus threshold.
    #[serde(default = "defaults::top_p")]
    pub top_p: f32,
    /// Completion length limit.
    #[serde(default = "defaults::max_new_tokens")]
    pub max_new_tokens: usize,
    /// Evaluate only the first N problems.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Seed of sampling (each problem's samples depend only on the seed and the problem id).
    #[serde(default)]
    pub seed: u64,
    /// Problems per generation batch.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Optional system prompt (use the one training used).
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Appended to each problem in the user turn (use the one training used).
    #[serde(default = "defaults::instruction")]
    pub instruction: String,
    /// `cpu` or `cuda:N`.
    #[serde(default = "defaults::device")]
    pub device: String,
    /// The sandbox code problems are graded in (started only when there are code problems).
    #[serde(default)]
    pub sandbox: SandboxSettings,
}

mod defaults {
    pub fn k() -> usize {
        4
    }
    pub fn temperature() -> f32 {
        0.6
    }
    pub fn top_p() -> f32 {
        0.95
    }
    pub fn max_new_tokens() -> usize {
        1024
    }
    pub fn batch_size() -> usize {
        8
    }
    pub fn instruction() -> String {
        crate::data::schema::DEFAULT_INSTRUCTION.to_string()
    }
    pub fn device() -> String {
        "cpu".into()
    }
}

impl EvalConfig {
    /// A configuration with R1's defaults for `model`, writing to `out`.
    pub fn new(model: &str, out: PathBuf) -> Self {
        EvalConfig {
            model: model.to_string(),
            out,
            k: defaults::k(),
            temperature: defaults::temperature(),
            top_p: defaults::top_p(),
            max_new_tokens: defaults::max_new_tokens(),
            limit: None,
            seed: 0,
            batch_size: defaults::batch_size(),
            system_prompt: None,
            instruction: defaults::instruction(),
            device: defaults::device(),
            sandbox: SandboxSettings::default(),
        }
    }
}

/// Accuracy of a group of problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Problems in the group.
    pub problems: usize,
    /// Mean over problems of the fraction of correct samples.
    pub pass_at_1: f64,
    /// Fraction of problems whose majority-vote answer is correct.
    pub cons_at_k: f64,
}

/// What an evaluation reports (also `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// The model evaluated.
    pub model: String,
    /// Problems evaluated.
    pub problems: usize,
    /// Samples per problem.
    pub k: usize,
    /// Mean over problems of the fraction of correct samples.
    pub pass_at_1: f64,
    /// Fraction of problems whose majority-vote answer is correct.
    pub cons_at_k: f64,
    /// The same, per prompt source.
    pub per_source: BTreeMap<String, Accuracy>,
    /// Completion tokens generated.
    pub generated_tokens: u64,
    /// Samples cut by the length limit.
    pub truncated_samples: usize,
    /// Wall time, seconds.
    pub wall_seconds: f64,
    /// The settings used.
    pub settings: EvalConfig,
}

/// The `answer` a sample row records: the extracted answer, or for a code problem its
/// test-outcome key (so that cons@k votes by identical test outcomes).
pub fn sample_answer(grade: &Grade) -> Option<String> {
    match &grade.code {
        Some(code) => code.outcome_key(),
        None => grade.answer.clone(),
    }
}

/// Groups rows by problem (in first-appearance order, samples by `sample_index`) and scores each:
/// `(id, source, score)`.
pub fn problem_scores(rows: &[SampleRow]) -> Vec<(String, String, ProblemScore)> {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<&SampleRow>> = BTreeMap::new();
    for row in rows {
        let group = groups.entry(row.id.as_str()).or_default();
        if group.is_empty() {
            order.push(row.id.as_str());
        }
        group.push(row);
    }
    order
        .into_iter()
        .map(|id| {
            let mut group = groups.remove(id).unwrap_or_default();
            group.sort_by_key(|r| r.sample_index);
            let graded: Vec<GradedSample> = group
                .iter()
                .map(|r| GradedSample {
                    answer: r.answer.clone(),
                    correct: r.correct,
                })
                .collect();
            let source = group.first().map(|r| r.source.clone()).unwrap_or_default();
            (id.to_string(), source, score_problem(&graded))
        })
        .collect()
}

/// Overall and per-source accuracy of scored problems.
pub fn accuracy_by_source(
    scores: &[(String, String, ProblemScore)],
) -> (Accuracy, BTreeMap<String, Accuracy>) {
    let accuracy = |group: Vec<ProblemScore>| {
        let (pass_at_1, cons_at_k) = aggregate(&group);
        Accuracy {
            problems: group.len(),
            pass_at_1,
            cons_at_k,
        }
    };
    let mut by_source: BTreeMap<String, Vec<ProblemScore>> = BTreeMap::new();
    for (_, source, score) in scores {
        by_source.entry(source.clone()).or_default().push(*score);
    }
    let overall = accuracy(scores.iter().map(|(_, _, s)| *s).collect());
    let per_source = by_source
        .into_iter()
        .map(|(source, group)| (source, accuracy(group)))
        .collect();
    (overall, per_source)
}

/// Evaluates `config.model` on `problems` (the first `limit` of them), writes
/// `data/samples.parquet`, `summary.json` and the dataset card into `config.out`, and returns the
/// summary.
pub fn run_eval(config: &EvalConfig, problems: &[Problem]) -> anyhow::Result<EvalSummary> {
    let started = Instant::now();
    if config.k == 0 {
        bail!("eval: k must be at least 1");
    }
    let _claim =
        crate::output_dir::OutputDir::claim(&config.out, crate::output_dir::OutputKind::Eval)?;
    let problems = &problems[..config.limit.unwrap_or(usize::MAX).min(problems.len())];
    if problems.is_empty() {
        bail!("eval: no problems to evaluate");
    }
    let checkers = crate::verify::grade::checkers_for(problems, &config.sandbox, "problem")?;
    let device = crate::runtime::parse_device(&config.device)?;
    let loaded = model::load(&config.model, &device, DType::F32)
        .with_context(|| format!("loading model {}", config.model))?;
    std::fs::create_dir_all(&config.out).with_context(|| config.out.display().to_string())?;
    let generation = GenerationConfig {
        sampler: SamplerConfig {
            temperature: config.temperature,
            top_p: config.top_p,
            top_k: 0,
            min_p: 0.0,
        },
        max_new_tokens: config.max_new_tokens,
        n: config.k,
        eos_token_ids: loaded.eos_token_ids.clone(),
        stop_strings: Vec::new(),
    };
    let progress = crate::progress::bar(problems.len() as u64, "eval");
    let mut rows = Vec::with_capacity(problems.len() * config.k);
    let batch_size = config.batch_size.max(1);
    for (chunk_index, chunk) in problems.chunks(batch_size).enumerate() {
        let texts = chunk
            .iter()
            .map(|problem| {
                render_prompt_text(
                    &loaded.tokenizer,
                    problem,
                    config.system_prompt.as_deref(),
                    &config.instruction,
                )
                .with_context(|| format!("rendering the prompt of problem {}", problem.id))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let requests = chunk
            .iter()
            .zip(&texts)
            .map(|(problem, text)| {
                Ok(GenerationRequest {
                    prompt: loaded.tokenizer.encode(text, false).with_context(|| {
                        format!("tokenizing the prompt of problem {}", problem.id)
                    })?,
                    seed: sha256_u64(format!("eval/{}/{}", config.seed, problem.id).as_bytes()),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut completions = generate(&loaded.model, &loaded.tokenizer, &requests, &generation)?;
        completions.sort_by_key(|c| (c.prompt_index, c.sample_index));
        let graded: Vec<SampleRow> = completions
            .par_iter()
            .map(|completion| {
                let problem = &chunk[completion.prompt_index];
                let checker = &checkers[chunk_index * batch_size + completion.prompt_index];
                let generation = full_generation(
                    think_prefill(&texts[completion.prompt_index]),
                    &completion.text,
                );
                let verdict = grade_with(
                    checker,
                    &problem.answer,
                    &generation,
                    &VerifyOptions::default(),
                );
                SampleRow {
                    id: problem.id.clone(),
                    source: problem.source.clone(),
                    sample_index: completion.sample_index as u32,
                    completion: generation,
                    answer: sample_answer(&verdict),
                    correct: verdict.correct,
                    tokens: completion.completion_tokens as u32,
                    finish_reason: completion.finish_reason.as_str().to_string(),
                }
            })
            .collect();
        rows.extend(graded);
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    write_samples(&samples_path(&config.out), &rows)?;
    let (overall, per_source) = accuracy_by_source(&problem_scores(&rows));
    let summary = EvalSummary {
        model: config.model.clone(),
        problems: problems.len(),
        k: config.k,
        pass_at_1: overall.pass_at_1,
        cons_at_k: overall.cons_at_k,
        per_source,
        generated_tokens: rows.iter().map(|r| u64::from(r.tokens)).sum(),
        truncated_samples: rows.iter().filter(|r| r.finish_reason == "length").count(),
        wall_seconds: started.elapsed().as_secs_f64(),
        settings: config.clone(),
    };
    crate::model::save::write_atomic(
        &config.out.join("summary.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    eval_card(&summary, rows.len()).write(&config.out)?;
    Ok(summary)
}

/// The dataset card of an eval directory: its samples as the `train` split, the scores and settings.
fn eval_card(summary: &EvalSummary, rows: usize) -> DatasetCard {
    let split = CardConfig::default_train();
    let dir_name = summary
        .settings
        .out
        .file_name()
        .map_or_else(|| "eval".into(), |n| n.to_string_lossy().into_owned());
    let mut body = format!(
        "# Evaluation samples of `{}`

`distill eval`: {} problems × {} samples at temperature          {}, top-p {}, seed {}; pass@1 {:.3}, cons@{} {:.3}. One row per sample (`id`, `source`,          `sample_index`, `completion`, `answer`, `correct`, `tokens`, `finish_reason`).

",
        summary.model,
        summary.problems,
        summary.k,
        summary.settings.temperature,
        summary.settings.top_p,
        summary.settings.seed,
        summary.pass_at_1,
        summary.k,
        summary.cons_at_k,
    );
    body.push_str(&how_to_load(&dir_name, &split));
    DatasetCard {
        pretty_name: format!("distill eval samples: {}", summary.model),
        license: None,
        rows,
        tags: vec!["evaluation".into()],
        configs: vec![split],
        body,
    }
}
