//! `distill bench filter`: the filter's throughput and peak memory on a synthetic trace set of a
//! chosen size with R1-like shape — several samples per problem, reasoning of log-normally
//! distributed length (a chosen median) in paragraphs of 200–1,200 characters, most answers
//! right, some wrong, a few truncated and a few exact duplicates. The set is written in
//! shards as it is generated (the bench's own memory stays small), then `distill filter` runs
//! as a child process, so its peak resident set is its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use serde::Serialize;

use crate::data::schema::{split_generation, user_turn, FinishReason, TraceRow};
use crate::data::shards::{ShardOptions, ShardWriter};
use crate::model::Message;

/// The shape of a synthetic trace set.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticTraces {
    /// Traces in all.
    pub traces: usize,
    /// Samples per problem.
    pub samples_per_problem: usize,
    /// Median reasoning length, bytes.
    pub median_reasoning_bytes: usize,
    /// Seed of everything random.
    pub seed: u64,
}

/// What one benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FilterBenchResult {
    /// Traces filtered.
    pub traces: usize,
    /// Mean reasoning length, bytes.
    pub mean_reasoning_bytes: f64,
    /// Size of the input shards on disk, bytes.
    pub input_bytes: u64,
    /// Wall time of `distill filter`, seconds.
    pub seconds: f64,
    /// Traces per second.
    pub traces_per_second: f64,
    /// Peak resident set of the filter process, MiB.
    pub peak_rss_mib: f64,
}

/// Words the synthetic reasoning is made of (English, so the language check passes).
const WORDS: &[&str] = &[
    "we",
    "need",
    "the",
    "value",
    "of",
    "so",
    "let",
    "me",
    "check",
    "first",
    "then",
    "compute",
    "sum",
    "product",
    "next",
    "step",
    "gives",
    "because",
    "therefore",
    "wait",
    "actually",
    "term",
    "equation",
    "both",
    "sides",
    "divide",
    "multiply",
    "by",
    "two",
    "three",
    "seven",
    "square",
    "root",
    "factor",
    "prime",
    "number",
    "which",
    "means",
    "answer",
    "is",
    "case",
    "again",
    "carefully",
    "hmm",
    "right",
    "substitute",
    "into",
    "original",
    "result",
    "holds",
];

/// Writes the synthetic set into the shard directory `dir`; returns the mean reasoning length.
pub fn write_synthetic_traces(dir: &Path, shape: &SyntheticTraces) -> anyhow::Result<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(shape.seed);
    let lengths = LogNormal::new((shape.median_reasoning_bytes.max(1) as f64).ln(), 0.6)?;
    let options = ShardOptions::new("bench-filter-synthetic");
    let mut writer = ShardWriter::<TraceRow>::open(dir, options)?;
    let mut total_reasoning = 0usize;
    let per_problem = shape.samples_per_problem.max(1);
    for index in 0..shape.traces {
        let problem_number = index / per_problem;
        let sample = (index % per_problem) as u32;
        let (a, b) = (problem_number % 97 + 3, problem_number % 89 + 5);
        let problem = format!(
            "A farmer has {a} rows of {b} trees and plants the same again. Problem {problem_number}: how many trees are there?"
        );
        let answer = (2 * a * b).to_string();
        let target = lengths.sample(&mut rng) as usize;
        let mut reasoning = String::with_capacity(target + 64);
        while reasoning.len() < target {
            if !reasoning.is_empty() {
                reasoning.push_str("\n\n");
            }
            let paragraph = rng.random_range(200..1200);
            let start = reasoning.len();
            while reasoning.len() - start < paragraph {
                reasoning.push_str(WORDS[rng.random_range(0..WORDS.len())]);
                reasoning.push(' ');
            }
            reasoning.push_str(&format!("{a} times {b} is {}.", a * b));
        }
        total_reasoning += reasoning.len();
        let stated = if rng.random_bool(0.7) {
            answer.clone()
        } else {
            (2 * a * b + 1).to_string()
        };
        let truncated = rng.random_bool(0.03);
        let mut generation = if truncated {
            format!("<think>\n{reasoning}")
        } else {
            format!("<think>\n{reasoning}\n</think>\n\nThe answer is $\\boxed{{{stated}}}$.")
        };
        if sample > 0 && rng.random_bool(0.02) {
            // A short canned trace: such samples of one problem are exact duplicates.
            generation = format!("<think>\n{a} times {b}.\n</think>\n\n$\\boxed{{{answer}}}$");
        }
        let (reasoning_part, final_text) = split_generation(&generation);
        let user = user_turn(&problem);
        writer.write(TraceRow {
            id: format!("bench-{problem_number:08}"),
            source: "bench".into(),
            problem,
            answer,
            prompt: format!("<｜User｜>{user}<｜Assistant｜>"),
            messages: vec![Message::user(user), Message::assistant(generation.clone())],
            completion_tokens: Some((generation.len() / 4) as u32),
            generation,
            reasoning: reasoning_part,
            final_text,
            teacher: "synthetic".into(),
            temperature: 0.6,
            top_p: 0.95,
            seed: index as u64,
            sample_index: sample,
            finish_reason: if truncated {
                FinishReason::Length
            } else {
                FinishReason::Stop
            },
            prompt_tokens: Some(40),
            created_at: "2026-12-04T00:00:00Z".into(),
            metadata: serde_json::Map::new(),
            teacher_endpoint: None,
            cost: None,
            round: None,
        })?;
    }
    writer.finish()?;
    Ok(total_reasoning as f64 / shape.traces.max(1) as f64)
}

/// Writes the set into `work/traces`, runs `distill filter` on it into `work/filtered` as a
/// child process and measures it; the set and outputs are removed afterwards unless `keep`.
pub fn bench_filter(
    work: &Path,
    shape: &SyntheticTraces,
    extra_args: &[String],
    keep: bool,
) -> anyhow::Result<FilterBenchResult> {
    let input = work.join("traces");
    let out = work.join("filtered");
    for dir in [&input, &out] {
        if dir.exists() {
            bail!("{} exists: give an empty --work directory", dir.display());
        }
    }
    let mean_reasoning_bytes = write_synthetic_traces(&input, shape)?;
    let input_bytes = dir_bytes(&input.join(crate::data::shards::DATA_DIR))?;
    let exe = std::env::current_exe().context("locating the distill binary")?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .arg("filter")
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args(extra_args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting distill filter")?;
    let (status, peak_kib) = wait_with_peak_rss(child.id())?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = child.try_wait();
    if !status {
        bail!("distill filter failed");
    }
    if !keep {
        std::fs::remove_dir_all(work).with_context(|| work.display().to_string())?;
    }
    Ok(FilterBenchResult {
        traces: shape.traces,
        mean_reasoning_bytes,
        input_bytes,
        seconds,
        traces_per_second: shape.traces as f64 / seconds,
        peak_rss_mib: peak_kib as f64 / 1024.0,
    })
}

/// Waits for the child `pid`; returns whether it succeeded and its peak resident set, KiB.
fn wait_with_peak_rss(pid: u32) -> anyhow::Result<(bool, i64)> {
    let mut status = 0;
    // SAFETY: `usage` is a plain C struct that wait4 fills; `pid` is our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    if waited < 0 {
        bail!(
            "waiting for distill filter: {}",
            std::io::Error::last_os_error()
        );
    }
    let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((success, usage.ru_maxrss))
}

/// Bytes of the files directly in `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

/// The default work directory of the bench: a fresh folder under the system temp directory.
pub fn default_work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("distill-bench-filter-{}", std::process::id()))
}
