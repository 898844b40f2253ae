//! Turning teacher samples into rows as they arrive: the [`TraceRow`] of a sample, the shard
//! writer, the run's totals, the progress bar and the time-based flush.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::prompts::full_generation;
use super::rounds::{Judge, Tally};
use super::summary::{EndpointTotals, Progress};
use super::Pending;
use crate::data::schema::{rfc3339_utc, split_generation, TraceRow};
use crate::data::shards::{read_trace_rows, ShardWriter};
use crate::data::sources::Problem;
use crate::data::DataError;
use crate::model::{Message, Tokenizer};
use crate::teacher::{SamplingParams, TeacherSample};

/// Running totals of a run.
#[derive(Default)]
pub(super) struct Totals {
    pub(super) samples: usize,
    pub(super) rows_written: usize,
    pub(super) prompt_tokens: u64,
    pub(super) completion_tokens: u64,
    pub(super) finish_reasons: BTreeMap<String, usize>,
    pub(super) samples_without_token_counts: usize,
    /// Cost of the samples that have one.
    pub(super) cost: Option<f64>,
    /// Per serving endpoint.
    pub(super) endpoints: BTreeMap<String, EndpointTotals>,
}

/// Where samples go as the teacher delivers them: rows into the shard writer, counts into
/// the totals, the progress bar forward, and a time-based flush.
pub(super) struct RowSink {
    pub(super) writer: ShardWriter<TraceRow>,
    /// Counts the tokens of samples whose endpoint reported no usage.
    pub(super) token_counter: Option<Box<Tokenizer>>,
    pub(super) totals: Totals,
    pub(super) progress: Progress,
    pub(super) flush_every: Duration,
    pub(super) last_flush: Instant,
    pub(super) started: Instant,
    pub(super) teacher: String,
    pub(super) params: SamplingParams,
    /// With `--until-verified`: judges each new row, counted per problem in `tallies`.
    pub(super) judge: Option<Judge>,
    pub(super) tallies: HashMap<String, Tally>,
}

impl RowSink {
    /// Writes the samples of jobs of `chunk` (in key order, so shard contents do not depend on
    /// thread timing within a delivery).
    pub(super) fn accept(
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
            if sample.sample_index >= job.samples {
                continue;
            }
            if last_job != Some(sample.job_index) {
                jobs_done += 1;
                last_job = Some(sample.job_index);
            }
            let sample = self.with_token_counts(job, sample);
            let totals = &mut self.totals;
            totals.samples += 1;
            totals.prompt_tokens += u64::from(sample.prompt_tokens.unwrap_or(0));
            totals.completion_tokens += u64::from(sample.completion_tokens.unwrap_or(0));
            *totals
                .finish_reasons
                .entry(sample.finish_reason.as_str().to_string())
                .or_default() += 1;
            if let Some(cost) = sample.cost {
                *totals.cost.get_or_insert(0.0) += cost;
            }
            if let Some(endpoint) = &sample.endpoint {
                totals
                    .endpoints
                    .entry(endpoint.clone())
                    .or_default()
                    .add(&sample);
            }
            let row = trace_row(job, sample, &self.teacher, &self.params);
            let passes = self.judge.as_ref().map(|judge| judge.passes(&row));
            let id = row.id.clone();
            if self.writer.write(row)? {
                totals.rows_written += 1;
                if let Some(passes) = passes {
                    let tally = self.tallies.entry(id).or_default();
                    tally.drawn += 1;
                    tally.passed += u32::from(passes);
                }
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

impl RowSink {
    /// What has been drawn for problem `id` (with `--until-verified`).
    pub(super) fn tally(&self, id: &str) -> Tally {
        self.tallies.get(id).copied().unwrap_or_default()
    }

    /// Judges the rows of `problems` already in `out_dir` (a resumed run) into the tallies;
    /// returns how many there are.
    pub(super) fn tally_written(
        &mut self,
        problems: &[Problem],
        out_dir: &Path,
    ) -> Result<usize, DataError> {
        let Some(judge) = &self.judge else {
            return Ok(0);
        };
        if self.writer.manifest().total_rows == 0 {
            return Ok(0);
        }
        let ours: HashSet<&str> = problems.iter().map(|p| p.id.as_str()).collect();
        let mut counted = 0;
        for row in read_trace_rows(out_dir)? {
            if !ours.contains(row.id.as_str()) {
                continue;
            }
            let tally = self.tallies.entry(row.id.clone()).or_default();
            tally.drawn += 1;
            tally.passed += u32::from(judge.passes(&row));
            counted += 1;
        }
        Ok(counted)
    }

    /// `sample` with the token counts its endpoint did not report counted by the tokenizer,
    /// when there is one; otherwise they stay unknown, with one warning per run.
    fn with_token_counts(&mut self, job: &Pending<'_>, mut sample: TeacherSample) -> TeacherSample {
        if sample.prompt_tokens.is_some() && sample.completion_tokens.is_some() {
            return sample;
        }
        let count = |text: &str| {
            let counter = self.token_counter.as_ref()?;
            let ids = counter.encode(text, false).ok()?;
            u32::try_from(ids.len()).ok()
        };
        sample.prompt_tokens = sample.prompt_tokens.or_else(|| count(&job.rendered.prompt));
        sample.completion_tokens = sample.completion_tokens.or_else(|| count(&sample.text));
        if sample.prompt_tokens.is_none() || sample.completion_tokens.is_none() {
            if self.totals.samples_without_token_counts == 0 {
                eprintln!(
                    "warning: {} reported no token usage; prompt_tokens and completion_tokens \
                     are recorded as null (give --tokenizer to count them)",
                    self.teacher
                );
            }
            self.totals.samples_without_token_counts += 1;
        }
        sample
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
        sample_index: job.first_sample + sample.sample_index,
        finish_reason: sample.finish_reason,
        prompt_tokens: sample.prompt_tokens,
        completion_tokens: sample.completion_tokens,
        created_at: rfc3339_utc(SystemTime::now()),
        metadata: problem.metadata.clone(),
        teacher_endpoint: sample.endpoint,
        cost: sample.cost,
        round: Some(job.round),
    }
}
