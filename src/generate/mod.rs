//! The `distill generate` stage (the data factory): prompts in, a teacher's long
//! chain-of-thought samples out, as resumable Parquet shards with full provenance.
//!
//! [`run_generate`] loads and validates everything that can be wrong with the input (prompt
//! file, column mapping, teacher, chat template) before it creates anything in the output
//! directory, then samples problems in batches through the [`Teacher`] trait and writes one
//! [`TraceRow`] per (problem, sample) through [`ShardWriter`]. Rerunning the same config
//! skips the (problem id, sample index) keys already written; every sample's seed derives from
//! the run seed and the problem id ([`prompts::problem_seed`]), so a resumed, batched
//! differently or split run writes the same rows as one uninterrupted run.
//!
//! Submodules: [`config`] (the serde config and its recipe hash), [`prompts`] (prompt sources
//! and rendering), [`summary`] (the summary and the progress bar).

pub mod config;
pub mod prompts;
pub mod summary;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use candle_core::DType;

pub use config::{GenerateConfig, TeacherConfig};
pub use summary::GenerateSummary;

use crate::data::schema::{rfc3339_utc, split_generation, RowKey, TraceRow};
use crate::data::shards::{ShardOptions, ShardWriter};
use crate::data::sources::Problem;
use crate::data::split::WorkerSplit;
use crate::data::DataError;
use crate::model::{Message, ModelError, Tokenizer};
use crate::teacher::local::LocalTeacher;
use crate::teacher::openai::{ApiKind, OpenAiConfig, OpenAiTeacher};
use crate::teacher::retry::RetryPolicy;
use crate::teacher::{PromptJob, SamplingParams, Teacher, TeacherError, TeacherSample};
use prompts::{full_generation, problem_seed, RenderedPrompt, Renderer};
use summary::Progress;

/// Why a generate run failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The settings are inconsistent or out of range.
    #[error("{0}")]
    Config(String),
    /// Reading prompts or writing shards failed (the message names file, line and field).
    #[error("{0}")]
    Data(DataError),
    /// The teacher failed.
    #[error("{0}")]
    Teacher(TeacherError),
    /// Loading a tokenizer or rendering a chat template failed.
    #[error("{0}")]
    Model(ModelError),
    /// Writing the summary failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

// The wrapped errors are not `source`s: their messages already include their causes, and a
// source chain would print them twice.
impl From<DataError> for GenerateError {
    fn from(error: DataError) -> Self {
        GenerateError::Data(error)
    }
}

impl From<TeacherError> for GenerateError {
    fn from(error: TeacherError) -> Self {
        GenerateError::Teacher(error)
    }
}

impl From<ModelError> for GenerateError {
    fn from(error: ModelError) -> Self {
        GenerateError::Model(error)
    }
}

/// A teacher built from the config, with the tokenizer (if any) that renders its prompts.
enum BuiltTeacher {
    Local(Box<LocalTeacher>),
    Openai(Box<OpenAiTeacher>, Option<Box<Tokenizer>>),
}

impl BuiltTeacher {
    fn tokenizer(&self) -> Option<&Tokenizer> {
        match self {
            BuiltTeacher::Local(teacher) => Some(teacher.tokenizer()),
            BuiltTeacher::Openai(_, tokenizer) => tokenizer.as_deref(),
        }
    }

    fn into_teacher(self) -> Box<dyn Teacher> {
        match self {
            BuiltTeacher::Local(teacher) => teacher,
            BuiltTeacher::Openai(teacher, _) => teacher,
        }
    }
}

fn parse_dtype(name: &str) -> Result<DType, GenerateError> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(GenerateError::Config(format!(
            "unknown dtype `{other}`: use f32, bf16 or f16"
        ))),
    }
}

/// Loads only the tokenizer of a model reference (directory, hub id or llama2.c `.bin`).
fn load_tokenizer(spec: &str) -> Result<Tokenizer, GenerateError> {
    Ok(match crate::model::load::resolve(spec)? {
        crate::model::ModelSource::HfDir(dir) => Tokenizer::from_dir(&dir)?,
        crate::model::ModelSource::Llama2c { tokenizer, .. } => {
            Tokenizer::from_llama2c(&tokenizer)?
        }
    })
}

fn seconds(value: f64, flag: &str) -> Result<Duration, GenerateError> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        GenerateError::Config(format!(
            "{flag} must be a non-negative number of seconds, got {value}"
        ))
    })
}

fn build_teacher(config: &TeacherConfig) -> Result<BuiltTeacher, GenerateError> {
    match config {
        TeacherConfig::Local {
            model,
            device,
            dtype,
            batch_size,
        } => {
            if *batch_size == 0 {
                return Err(GenerateError::Config(
                    "--batch-size must be at least 1".into(),
                ));
            }
            let device = crate::runtime::parse_device(device)
                .map_err(|e| GenerateError::Config(format!("{e:#}")))?;
            let teacher = LocalTeacher::load(model, &device, parse_dtype(dtype)?, *batch_size)?;
            Ok(BuiltTeacher::Local(Box::new(teacher)))
        }
        TeacherConfig::Openai {
            endpoint,
            model,
            api,
            api_key_env,
            tokenizer,
            concurrency,
            timeout_secs,
            max_retries,
            backoff_secs,
        } => {
            if *concurrency == 0 {
                return Err(GenerateError::Config(
                    "--concurrency must be at least 1".into(),
                ));
            }
            let timeout = seconds(*timeout_secs, "--timeout-secs")?;
            if timeout.is_zero() {
                return Err(GenerateError::Config(
                    "--timeout-secs must be above 0".into(),
                ));
            }
            let tokenizer = tokenizer.as_deref().map(load_tokenizer).transpose()?;
            if *api == ApiKind::Completions && tokenizer.is_none() {
                return Err(GenerateError::Config(
                    "--api completions sends the rendered prompt text: give --tokenizer (the served model's directory or hub id) so its chat template can render it".into(),
                ));
            }
            let teacher = OpenAiTeacher::new(&OpenAiConfig {
                endpoint: endpoint.clone(),
                model: model.clone(),
                api: *api,
                api_key_env: api_key_env.clone(),
                concurrency: *concurrency,
                timeout,
                retry: RetryPolicy {
                    max_retries: *max_retries,
                    initial_backoff: seconds(*backoff_secs, "--backoff-secs")?,
                    ..RetryPolicy::default()
                },
            })?;
            Ok(BuiltTeacher::Openai(
                Box::new(teacher),
                tokenizer.map(Box::new),
            ))
        }
    }
}

/// Checks the sampling and layout settings.
fn validate(config: &GenerateConfig) -> Result<(), GenerateError> {
    let bad = |message: &str| Err(GenerateError::Config(message.to_string()));
    if config.n == 0 {
        return bad("-n (samples per problem) must be at least 1");
    }
    if config.max_new_tokens == 0 {
        return bad("--max-new-tokens must be at least 1");
    }
    if config.rows_per_shard == 0 {
        return bad("--rows-per-shard must be at least 1");
    }
    if !(config.temperature >= 0.0 && config.temperature.is_finite()) {
        return bad("--temperature must be a finite number >= 0");
    }
    if !(config.top_p > 0.0 && config.top_p <= 1.0) {
        return bad("--top-p must be in (0, 1]");
    }
    Ok(())
}

/// A problem with at least one sample still to write: the problem, its prompt and its seed.
struct Pending<'a> {
    problem: &'a Problem,
    rendered: RenderedPrompt,
    seed: u64,
}

/// Running totals of a run.
#[derive(Default)]
struct Totals {
    samples: usize,
    rows_written: usize,
    prompt_tokens: u64,
    completion_tokens: u64,
    finish_reasons: BTreeMap<String, usize>,
}

/// The problems with samples still to write, and the number of rows already written.
fn plan<'a>(
    problems: &'a [Problem],
    rendered: Vec<RenderedPrompt>,
    writer: &ShardWriter<TraceRow>,
    run_seed: u64,
    n: u32,
) -> (Vec<Pending<'a>>, usize) {
    let mut pending = Vec::new();
    let mut rows_skipped = 0;
    for (problem, rendered) in problems.iter().zip(rendered) {
        let done = (0..n)
            .filter(|&sample_index| {
                writer.contains(&RowKey {
                    problem_id: problem.id.clone(),
                    sample_index,
                })
            })
            .count();
        rows_skipped += done;
        if done < n as usize {
            pending.push(Pending {
                problem,
                seed: problem_seed(run_seed, &problem.id),
                rendered,
            });
        }
    }
    (pending, rows_skipped)
}

/// Runs the generate stage for `config` (this worker's share when split) and writes
/// `summary.json` beside the shards.
pub fn run_generate(config: &GenerateConfig) -> Result<GenerateSummary, GenerateError> {
    let started = Instant::now();
    validate(config)?;
    let n = u32::try_from(config.n).map_err(|_| GenerateError::Config("-n is too large".into()))?;
    let split = WorkerSplit::new(config.num_shards, config.shard_index)?;
    let problems = split.select(prompts::load_prompt_set(config)?, |p| p.id.as_str());
    let built = build_teacher(&config.teacher)?;
    let renderer = Renderer {
        tokenizer: built.tokenizer(),
        system_prompt: config.system_prompt.as_deref(),
        instruction: &config.instruction,
    };
    let rendered = problems
        .iter()
        .map(|problem| renderer.render(problem))
        .collect::<Result<Vec<_>, _>>()?;
    let mut teacher = built.into_teacher();
    let info = teacher.describe();

    let out_dir = if split.num_shards() == 1 {
        config.out.clone()
    } else {
        config.out.join(split.dir_name())
    };
    let recipe_hash = config.recipe_hash();
    let writer = ShardWriter::<TraceRow>::open(
        &out_dir,
        ShardOptions {
            rows_per_shard: config.rows_per_shard,
            recipe_hash: recipe_hash.clone(),
            force: config.force,
        },
    )?;

    let (pending, rows_skipped) = plan(&problems, rendered, &writer, config.seed, n);
    let problems_already_done = problems.len() - pending.len();

    let params = SamplingParams {
        temperature: config.temperature,
        top_p: config.top_p,
        top_k: config.top_k,
        n: config.n,
        max_new_tokens: config.max_new_tokens,
    };
    let mut sink = RowSink {
        writer,
        totals: Totals::default(),
        progress: Progress::new(pending.len(), config.progress),
        flush_every: Duration::from_secs(config.flush_every_secs),
        last_flush: Instant::now(),
        started,
        teacher: info.name.clone(),
        params: params.clone(),
        n,
    };
    for chunk in pending.chunks(info.batch_size.max(1)) {
        let jobs: Vec<PromptJob> = chunk
            .iter()
            .map(|p| PromptJob {
                messages: p.rendered.messages.clone(),
                prompt: p.rendered.prompt.clone(),
                seed: p.seed,
            })
            .collect();
        let mut write_error = None;
        let sampled = teacher.sample_streaming(&jobs, &params, &mut |samples| {
            if write_error.is_some() {
                return false;
            }
            match sink.accept(chunk, samples) {
                Ok(()) => true,
                Err(error) => {
                    write_error = Some(error);
                    false
                }
            }
        });
        if let Some(error) = write_error {
            sink.progress.finish();
            return Err(error.into());
        }
        if let Err(error) = sampled {
            // Keep every finished row: a rerun then resumes after them.
            sink.progress.finish();
            sink.writer.finish()?;
            return Err(error.into());
        }
    }
    sink.progress.finish();
    let manifest = sink.writer.finish()?;
    let totals = sink.totals;

    let wall_seconds = started.elapsed().as_secs_f64();
    let summary = GenerateSummary {
        out_dir: out_dir.clone(),
        teacher: info.name,
        recipe_hash,
        problems: problems.len(),
        problems_already_done,
        samples_generated: totals.samples,
        rows_written: totals.rows_written,
        rows_skipped,
        total_rows: manifest.total_rows,
        shards: manifest.shards.len(),
        prompt_tokens: totals.prompt_tokens,
        completion_tokens: totals.completion_tokens,
        wall_seconds,
        tokens_per_second: totals.completion_tokens as f64 / wall_seconds.max(1e-9),
        finish_reasons: totals.finish_reasons,
    };
    summary.write().map_err(|source| GenerateError::Io {
        path: out_dir.join(summary::SUMMARY_FILE),
        source,
    })?;
    Ok(summary)
}

/// Where samples go as the teacher delivers them: rows into the shard writer, counts into
/// the totals, the progress bar forward, and a time-based flush.
struct RowSink {
    writer: ShardWriter<TraceRow>,
    totals: Totals,
    progress: Progress,
    flush_every: Duration,
    last_flush: Instant,
    started: Instant,
    teacher: String,
    params: SamplingParams,
    n: u32,
}

impl RowSink {
    /// Writes the samples of jobs of `chunk` (in key order, so shard contents do not depend on
    /// thread timing within a delivery).
    fn accept(
        &mut self,
        chunk: &[Pending<'_>],
        mut samples: Vec<TeacherSample>,
    ) -> Result<(), DataError> {
        samples.sort_by_key(|s| (s.job_index, s.sample_index));
        let mut jobs_done = 0;
        let mut last_job = None;
        for sample in samples {
            let Some(job) = chunk.get(sample.job_index) else {
                continue;
            };
            if sample.sample_index >= self.n {
                continue;
            }
            if last_job != Some(sample.job_index) {
                jobs_done += 1;
                last_job = Some(sample.job_index);
            }
            let totals = &mut self.totals;
            totals.samples += 1;
            totals.prompt_tokens += u64::from(sample.prompt_tokens);
            totals.completion_tokens += u64::from(sample.completion_tokens);
            *totals
                .finish_reasons
                .entry(sample.finish_reason.as_str().to_string())
                .or_default() += 1;
            let row = trace_row(job, sample, &self.teacher, &self.params);
            if self.writer.write(row)? {
                totals.rows_written += 1;
            }
        }
        if !self.flush_every.is_zero() && self.last_flush.elapsed() >= self.flush_every {
            self.writer.flush()?;
            self.last_flush = Instant::now();
        }
        self.progress.advance(
            jobs_done,
            self.totals.samples,
            self.totals.completion_tokens,
            self.started.elapsed(),
        );
        Ok(())
    }
}

/// The row of one sample.
fn trace_row(
    job: &Pending<'_>,
    sample: TeacherSample,
    teacher: &str,
    params: &SamplingParams,
) -> TraceRow {
    let problem = job.problem;
    let generation = full_generation(&job.rendered.prefill, &sample.text);
    let (reasoning, final_text) = split_generation(&generation);
    let mut messages = job.rendered.messages.clone();
    messages.push(Message::assistant(generation.clone()));
    TraceRow {
        id: problem.id.clone(),
        source: problem.source.clone(),
        problem: problem.problem.clone(),
        answer: problem.answer.clone(),
        prompt: job.rendered.prompt.clone(),
        messages,
        generation,
        reasoning,
        final_text,
        teacher: teacher.to_string(),
        temperature: params.temperature,
        top_p: params.top_p,
        seed: sample.seed,
        sample_index: sample.sample_index,
        finish_reason: sample.finish_reason,
        prompt_tokens: sample.prompt_tokens,
        completion_tokens: sample.completion_tokens,
        created_at: rfc3339_utc(SystemTime::now()),
        metadata: problem.metadata.clone(),
    }
}
