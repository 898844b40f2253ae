//! The `distill generate` stage (the data factory): prompts in, a teacher's long
//! chain-of-thought samples out, as resumable Parquet shards with full provenance.
//!
//! [`run_generate`] loads and validates everything that can be wrong with the input (prompt
//! file, column mapping, teacher, chat template) before it creates anything in the output
//! directory, then samples problems in batches through the [`Teacher`] trait and writes one
//! [`TraceRow`] per (problem, sample) through [`ShardWriter`]. Rerunning the same config
//! skips the (problem id, sample index) keys already written; every sample's seed derives from
//! the run seed and the problem id ([`prompts::problem_seed`]), so a resumed, batched
//! differently or split run writes the same rows as one uninterrupted run. With `repair`, listed
//! shards that are missing or damaged are first dropped from the manifest
//! ([`crate::data::repair`]), so exactly their rows are sampled again.
//!
//! Output: the shards in `data/`, with `manifest.json`, `summary.json` and the dataset card
//! `README.md` ([`card`]) beside that folder.
//!
//! Submodules: [`config`] (the serde config and its recipe hash), [`prompts`] (prompt sources
//! and rendering), [`rounds`] (sampling until verified), [`summary`] (the summary and the
//! progress bar), `teacher_setup` (building the teacher) and `sink` (samples to rows as they
//! arrive).
//!
//! With `until_verified`, problems are sampled in rounds instead of one job of `n` each (see
//! [`rounds`]); keys, seeds and resume follow the same rules.

pub mod card;
pub mod config;
pub mod prompts;
pub mod rounds;
mod sink;
pub mod summary;
mod teacher_setup;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use config::{GenerateConfig, TeacherConfig};
pub use summary::GenerateSummary;

use crate::data::repair::repair_shards;
use crate::data::schema::{RowKey, TraceRow};
use crate::data::shards::{ShardOptions, ShardWriter};
use crate::data::sources::Problem;
use crate::data::split::WorkerSplit;
use crate::data::DataError;
use crate::model::ModelError;
use crate::output_dir::{OutputDir, OutputKind};
use crate::teacher::{PromptJob, SamplingParams, Teacher, TeacherError};
use prompts::{problem_seed, RenderedPrompt, Renderer};
use sink::{RowSink, Totals};
use summary::Progress;
use teacher_setup::build_teacher;

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
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
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

/// Checks the sampling and layout settings.
pub fn validate(config: &GenerateConfig) -> Result<(), GenerateError> {
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
    match (config.until_verified, config.max_samples) {
        (None, None) => {}
        (None, Some(_)) => return bad("--max-samples needs --until-verified"),
        (Some(_), None) => {
            return bad("--until-verified needs --max-samples (the most samples per problem)")
        }
        (Some(0), _) => return bad("--until-verified must be at least 1"),
        (Some(target), Some(most)) if most < target => {
            return bad("--max-samples must be at least --until-verified")
        }
        (Some(_), Some(most)) if u32::try_from(most).is_err() => {
            return bad("--max-samples is too large")
        }
        _ => {}
    }
    Ok(())
}

/// Samples of one problem still to draw in one teacher call: the problem, its prompt, the
/// job's seed, its round and the sample indices `first_sample .. first_sample + samples`.
#[derive(Clone, Copy)]
struct Pending<'a> {
    problem: &'a Problem,
    rendered: &'a RenderedPrompt,
    seed: u64,
    round: u32,
    first_sample: u32,
    samples: u32,
}

/// The problems with samples still to write (each as one job of `n` samples), and the number
/// of rows already written.
fn plan<'a>(
    problems: &'a [Problem],
    rendered: &'a [RenderedPrompt],
    writer: &ShardWriter<TraceRow>,
    run_seed: u64,
    n: u32,
) -> (Vec<Pending<'a>>, usize) {
    let mut pending = Vec::new();
    let mut rows_skipped = 0;
    for (problem, rendered) in problems.iter().zip(rendered) {
        let done = (0..n)
            .filter(|&sample_index| writer.contains(&row_key(problem, sample_index)))
            .count();
        rows_skipped += done;
        if done < n as usize {
            pending.push(Pending {
                problem,
                seed: problem_seed(run_seed, &problem.id),
                rendered,
                round: 0,
                first_sample: 0,
                samples: n,
            });
        }
    }
    (pending, rows_skipped)
}

fn row_key(problem: &Problem, sample_index: u32) -> RowKey {
    RowKey {
        problem_id: problem.id.clone(),
        sample_index,
    }
}

/// Samples `pending` (every job of `samples` samples) in batches of `batch_size` and writes
/// the rows as they arrive; on a teacher error the rows finished so far are kept.
fn sample_jobs(
    teacher: &mut dyn Teacher,
    sink: &mut RowSink,
    pending: &[Pending<'_>],
    params: &SamplingParams,
    batch_size: usize,
) -> Result<(), GenerateError> {
    for chunk in pending.chunks(batch_size.max(1)) {
        let jobs: Vec<PromptJob> = chunk
            .iter()
            .map(|p| PromptJob {
                messages: p.rendered.messages.clone(),
                prompt: p.rendered.prompt.clone(),
                seed: p.seed,
            })
            .collect();
        let mut write_error = None;
        let sampled = teacher.sample_streaming(&jobs, params, &mut |samples| {
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
            sink.writer.flush()?;
            return Err(error.into());
        }
    }
    Ok(())
}

/// Samples every problem in rounds until it has `rounds.target` passing samples or
/// `rounds.most` drawn (see [`rounds`]); returns the problems that reached the target.
fn sample_until_verified(
    teacher: &mut dyn Teacher,
    sink: &mut RowSink,
    problems: &[Problem],
    rendered: &[RenderedPrompt],
    run_seed: u64,
    rounds: rounds::Rounds,
    (params, batch_size): (&SamplingParams, usize),
) -> Result<usize, GenerateError> {
    loop {
        let mut pending = Vec::new();
        for (problem, rendered) in problems.iter().zip(rendered) {
            let tally = sink.tally(&problem.id);
            let present = |index: u32| sink.writer.contains(&row_key(problem, index));
            if let Some(job) = rounds.next(tally, present) {
                pending.push(Pending {
                    problem,
                    rendered,
                    seed: rounds::round_seed(problem_seed(run_seed, &problem.id), job.round),
                    round: job.round,
                    first_sample: job.first_sample,
                    samples: job.samples,
                });
            }
        }
        if pending.is_empty() {
            break;
        }
        // A round's last jobs may be shorter (cut at the most samples): one call per size.
        let mut sizes: Vec<u32> = pending.iter().map(|p| p.samples).collect();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            let group: Vec<Pending<'_>> = pending
                .iter()
                .filter(|p| p.samples == size)
                .copied()
                .collect();
            let params = SamplingParams {
                n: size as usize,
                ..params.clone()
            };
            sample_jobs(teacher, sink, &group, &params, batch_size)?;
        }
    }
    Ok(problems
        .iter()
        .filter(|p| sink.tally(&p.id).passed >= rounds.target)
        .count())
}

/// Checks every prompt against the teacher's limits before anything is sampled, and names the
/// problems that do not fit (a local model's context: prompt + `max_new_tokens`).
fn refuse_prompts_that_do_not_fit(
    teacher: &dyn Teacher,
    problems: &[Problem],
    rendered: &[RenderedPrompt],
    max_new_tokens: usize,
) -> Result<(), GenerateError> {
    const SHOWN: usize = 5;
    let mut refused = Vec::new();
    for (problem, prompt) in problems.iter().zip(rendered) {
        if let Err(e) = teacher.check_prompt(&prompt.prompt, max_new_tokens) {
            refused.push(format!("problem {}: {e}", problem.id));
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    let more = refused.len().saturating_sub(SHOWN);
    refused.truncate(SHOWN);
    Err(GenerateError::Config(format!(
        "{} prompt(s) do not fit the teacher; nothing was sampled:\n  {}{}",
        refused.len() + more,
        refused.join("\n  "),
        if more > 0 {
            format!("\n  … and {more} more")
        } else {
            String::new()
        }
    )))
}

/// Runs the generate stage for `config` (this worker's share when split) and writes
/// `summary.json` beside the shards.
pub fn run_generate(config: &GenerateConfig) -> Result<GenerateSummary, GenerateError> {
    let started = Instant::now();
    validate(config)?;
    let n = u32::try_from(config.n).map_err(|_| GenerateError::Config("-n is too large".into()))?;
    let split = WorkerSplit::new(config.num_shards, config.shard_index)?;
    // Each worker of a split writes (and claims) its own subdirectory.
    let out_dir = if split.num_shards() == 1 {
        config.out.clone()
    } else {
        config.out.join(split.dir_name())
    };
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
    let (mut teacher, token_counter) = built.into_parts();
    refuse_prompts_that_do_not_fit(
        teacher.as_ref(),
        &problems,
        &rendered,
        config.max_new_tokens,
    )?;
    let info = teacher.describe();

    // Claimed only now, so bad prompts or a teacher that cannot load leave nothing behind.
    let _claim = OutputDir::claim(&out_dir, OutputKind::Traces)
        .map_err(|e| GenerateError::Config(e.to_string()))?;
    let recipe_hash = config.recipe_hash();
    if config.repair {
        for dropped in repair_shards(&out_dir)? {
            eprintln!("repair: {dropped}; its rows will be sampled again");
        }
    }
    let writer = ShardWriter::<TraceRow>::open(
        &out_dir,
        ShardOptions {
            rows_per_shard: config.rows_per_shard,
            recipe_hash: recipe_hash.clone(),
            force: config.force,
        },
    )
    .map_err(|error| match error {
        DataError::Manifest { .. } | DataError::Parquet { .. } => GenerateError::Config(format!(
            "{error}\n(`distill generate --repair` drops a missing or damaged shard from the \
             manifest, keeping its file in damaged/, and samples its rows again)"
        )),
        other => other.into(),
    })?;

    let params = SamplingParams {
        temperature: config.temperature,
        top_p: config.top_p,
        top_k: config.top_k,
        n: config.n,
        max_new_tokens: config.max_new_tokens,
    };
    let rounds = match (config.until_verified, config.max_samples) {
        (Some(target), Some(most)) => Some(rounds::Rounds {
            per_round: n,
            target: u32::try_from(target).unwrap_or(u32::MAX),
            most: u32::try_from(most).unwrap_or(u32::MAX),
        }),
        _ => None,
    };
    let (pending, rows_skipped) = match rounds {
        None => plan(&problems, &rendered, &writer, config.seed, n),
        // Rounds are planned as they go; rows already written are counted by the tally.
        Some(_) => (Vec::new(), 0),
    };
    let judge = match rounds {
        Some(_) => Some(
            rounds::Judge::new(&problems).map_err(|e| GenerateError::Config(format!("{e:#}")))?,
        ),
        None => None,
    };
    let mut sink = RowSink {
        writer,
        token_counter,
        totals: Totals::default(),
        progress: Progress::new(
            if rounds.is_some() {
                problems.len()
            } else {
                pending.len()
            },
            config.progress,
            teacher.streamed_tokens(),
        ),
        flush_every: Duration::from_secs(config.flush_every_secs),
        last_flush: Instant::now(),
        started,
        teacher: info.name.clone(),
        params: params.clone(),
        judge,
        tallies: Default::default(),
    };
    let batch_size = info.batch_size.max(1);
    let (problems_already_done, rows_skipped, problems_verified) = match rounds {
        None => {
            sample_jobs(teacher.as_mut(), &mut sink, &pending, &params, batch_size)?;
            (problems.len() - pending.len(), rows_skipped, None)
        }
        Some(rounds) => {
            let before = sink.tally_written(&problems, &out_dir)?;
            let already_done = problems
                .iter()
                .filter(|p| {
                    let present = |index: u32| sink.writer.contains(&row_key(p, index));
                    rounds.next(sink.tally(&p.id), present).is_none()
                })
                .count();
            let verified = sample_until_verified(
                teacher.as_mut(),
                &mut sink,
                &problems,
                &rendered,
                config.seed,
                rounds,
                (&params, batch_size),
            )?;
            (already_done, before, Some(verified))
        }
    };
    sink.progress.finish();
    let manifest = sink.writer.finish()?;
    let totals = sink.totals;

    let wall_seconds = started.elapsed().as_secs_f64();
    let summary = GenerateSummary {
        out_dir: out_dir.clone(),
        teacher: info.name,
        teacher_parameters: info.parameters,
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
        samples_without_token_counts: totals.samples_without_token_counts,
        cost: totals.cost,
        endpoints: totals.endpoints,
        problems_verified,
    };
    summary.write().map_err(|source| GenerateError::Io {
        path: out_dir.join(summary::SUMMARY_FILE),
        cause: source,
    })?;
    let license = crate::data::prompt_source::prompt_license(&config.prompts);
    card::generate_card(config, &summary, license).write(&out_dir)?;
    Ok(summary)
}
