//! `distill filter`: rejection sampling over generated traces, as DeepSeek-R1 built its SFT
//! data. A trace is accepted only when its final answer is verified correct against the gold
//! answer and it is readable.
//!
//! [`run_filter`] works in two passes so that its memory does not grow with the input. The first
//! ([`input`]) reads the shards in parallel and judges each trace on its own ([`mod@judge`]:
//! answer extraction and verification — the countdown checker for countdown problems, the
//! program run against the tests in a [sandbox](crate::sandbox) for code problems, whose result
//! goes into the row's metadata as `code_result` — plus the readability checks), keeping per
//! row only a compact [`Candidate`]. The cross-trace rules
//! then run on those: exact deduplication ([`dedup`]), n-gram decontamination of the problem
//! text against evaluation sets ([`decontaminate`]) and the acceptance policy ([`policy`]),
//! followed by per-problem pass rates ([`pass_rates`]), the report ([`report`]) and dataset
//! cards ([`card`]). The second pass ([`sorted_output`]) reads the rows again and writes the
//! accepted and rejected [`FilteredRow`] shards in (problem id, sample index) order, sorting in
//! memory or, for an input larger than `sort_buffer_mb`, through sorted runs spilled to disk.
//! The output directory is [`output`]; the reason names are in [`reasons`]; the configuration
//! is [`FilterConfig`] ([`config`]).
//!
//! Crash safety and resume follow the shard layer: every file is written to a temporary name
//! and renamed; a rerun with the same configuration and input skips the rows already written
//! and produces the same outputs as an uninterrupted run; a different configuration is refused
//! unless `force`, which clears the earlier outputs first.

pub mod card;
pub mod config;
pub mod decontaminate;
pub mod dedup;
pub mod input;
pub mod judge;
pub mod output;
pub mod pairs;
pub mod pass_rates;
pub mod policy;
pub mod reasons;
pub mod report;
pub mod sorted_output;

use std::cmp::Ordering;

use indicatif::{ProgressBar, ProgressStyle};

use crate::data::hashing::sha256_bytes;
use crate::data::schema::{FilteredRow, TraceRow};
use crate::data::shards::ShardOptions;
use crate::data::DataError;
use crate::output_dir::{OutputDir, OutputKind};

pub use config::FilterConfig;
pub use decontaminate::NgramIndex;
pub use pass_rates::{read_pass_rates, PassRate};
pub use policy::Policy;
pub use report::{FilterSummary, TokenStats};

use crate::verify::code::CODE_RESULT;
use output::PASS_RATES_FILE;
use reasons::CONTAMINATED;
use report::RunFacts;

/// Errors of the filter stage.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Reading or writing data failed; the message names the file, row and field.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The configuration is unusable.
    #[error("invalid filter configuration: {0}")]
    Config(String),
}

/// What the cross-trace rules need to know of a trace, without its text.
#[derive(Debug, Clone)]
pub(crate) struct RowFacts {
    /// Problem id.
    pub(crate) id: String,
    /// Prompt-set name.
    pub(crate) source: String,
    /// Which sample of the problem.
    pub(crate) sample_index: u32,
    /// Generation length in tokens, when known.
    pub(crate) completion_tokens: Option<u32>,
    /// SHA-256 of the generation text (exact duplicates share it).
    pub(crate) generation_hash: [u8; 32],
    /// The row's global number in the input (see [`input::InputFiles`]).
    pub(crate) position: u64,
    /// What generating it cost, when its endpoint had prices.
    pub(crate) cost: Option<f64>,
}

impl RowFacts {
    /// The facts of `row`, the input's row number `position`.
    pub(crate) fn of(row: &TraceRow, position: u64) -> Self {
        RowFacts {
            id: row.id.clone(),
            source: row.source.clone(),
            sample_index: row.sample_index,
            completion_tokens: row.completion_tokens,
            generation_hash: sha256_bytes(row.generation.as_bytes()),
            position,
            cost: row.cost,
        }
    }

    /// Orders by the row key (problem id, sample index).
    pub(crate) fn key_cmp(&self, other: &RowFacts) -> Ordering {
        (&self.id, self.sample_index).cmp(&(&other.id, other.sample_index))
    }
}

/// A trace's facts with its verdict so far.
#[derive(Debug)]
pub(crate) struct Candidate {
    /// The trace, without its text.
    pub(crate) facts: RowFacts,
    /// Whether its answer verified.
    pub(crate) verified: bool,
    /// The extracted answer.
    pub(crate) extracted_answer: Option<String>,
    /// Rejection reasons so far; empty means accepted.
    pub(crate) reasons: Vec<String>,
    /// For code problems: the `code_result` (verdict, tests passed and run) the output row's
    /// metadata gets.
    pub(crate) code_result: Option<serde_json::Value>,
}

impl Candidate {
    /// The output row of `row`, whose candidate this is.
    pub(crate) fn output_row(&self, mut row: TraceRow) -> FilteredRow {
        if let Some(result) = &self.code_result {
            row.metadata.insert(CODE_RESULT.into(), result.clone());
        }
        FilteredRow {
            trace: row,
            verified: self.verified,
            extracted_answer: self.extracted_answer.clone(),
            reject_reasons: self.reasons.clone(),
        }
    }
}

/// A progress bar on stderr (drawn only on a terminal) when `show`, else a hidden one.
fn progress_bar(show: bool, len: usize, message: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{msg:>8} [{bar:32}] {pos}/{len} traces, {per_sec}, eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len as u64)
        .with_style(style)
        .with_message(message)
}

/// Runs the filter stage described by `config`; see the module docs.
pub fn run_filter(config: &FilterConfig) -> Result<FilterSummary, FilterError> {
    config.validate()?;
    // The whole input is read and checked before the output directory is claimed or touched,
    // so a damaged input leaves a finished run's outputs as they were.
    let recipe_hash = config.recipe_hash()?;
    let index = NgramIndex::from_files(&config.decontaminate, config.ngram)?;
    let judging = input::Judging::new(
        &config.readability,
        config.verify_options(),
        &index,
        &config.sandbox,
    );
    let total = crate::data::shards::read_manifest(&config.input)?.total_rows;
    let bar = progress_bar(config.progress, total, "verify");
    let input::Scan {
        input,
        mut candidates,
        contaminated,
        provenance,
    } = input::scan_input(&config.input, &judging, &bar)?;
    bar.finish_and_clear();
    let _claim = OutputDir::claim(&config.out, OutputKind::Filtered)
        .map_err(|e| FilterError::Config(e.to_string()))?;
    output::prepare(&config.out, &recipe_hash, config.force)?;

    dedup::mark_duplicates(&mut candidates);
    for candidate in &mut candidates {
        if contaminated.contains_key(&candidate.facts.id) {
            candidate.reasons.push(CONTAMINATED.to_string());
        }
    }
    config.policy.apply(&mut candidates);

    let band = (config.min_pass_rate, config.max_pass_rate);
    let rates = pass_rates::pass_rates(&candidates, &contaminated, band);
    let facts = RunFacts {
        recipe_hash: &recipe_hash,
        policy: config.policy.to_string(),
        eval_problems: index.problems(),
        band,
    };
    let summary = report::summarise(&candidates, &rates, facts, contaminated);

    let bar = progress_bar(config.progress, candidates.len(), "write");
    let shard_options = ShardOptions {
        rows_per_shard: config.rows_per_shard,
        recipe_hash: recipe_hash.clone(),
        force: false,
    };
    let sorting = sorted_output::Sorting {
        buffer_bytes: (config.sort_buffer_mb * f64::from(1 << 20)) as usize,
        runs_dir: config.out.join(sorted_output::RUNS_DIR),
    };
    sorted_output::write_sorted(
        &input,
        &candidates,
        &config.out,
        shard_options,
        &sorting,
        &bar,
    )?;
    bar.finish_and_clear();
    pass_rates::write_pass_rates(&config.out.join(PASS_RATES_FILE), &rates)?;
    card::write_cards(config, &summary, &provenance)?;
    summary.write(&config.out)?;
    Ok(summary)
}
