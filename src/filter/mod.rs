//! `distill filter`: rejection sampling over generated traces, as DeepSeek-R1 built its SFT
//! data. A trace is accepted only when its final answer is verified correct against the gold
//! answer and it is readable.
//!
//! [`run_filter`] reads the input shards in parallel ([`input`]), judges each trace on its own
//! ([`mod@judge`]: answer extraction and verification — the countdown checker for countdown
//! problems, the program run against the tests in a [sandbox](crate::sandbox) for code problems,
//! whose result goes into the row's metadata as `code_result` — plus the readability checks), then applies the cross-trace rules: exact
//! deduplication ([`dedup`]), n-gram decontamination of the problem text against evaluation
//! sets ([`decontaminate`]) and the acceptance policy ([`policy`]). It writes accepted and
//! rejected [`FilteredRow`] shards, per-problem pass rates ([`pass_rates`]), a report
//! ([`report`]) and dataset cards ([`card`]) into the output directory ([`output`]). The reason names are in [`reasons`];
//! the configuration is [`FilterConfig`] ([`config`]).
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
pub mod pass_rates;
pub mod policy;
pub mod reasons;
pub mod report;

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::data::schema::{FilteredRow, TraceRow};
use crate::data::shards::ShardOptions;
use crate::data::DataError;
use crate::output_dir::{OutputDir, OutputKind};

pub use config::FilterConfig;
pub use decontaminate::NgramIndex;
pub use pass_rates::{read_pass_rates, PassRate};
pub use policy::Policy;
pub use report::{FilterSummary, TokenStats};

use crate::verify::code::{code_result, CODE_RESULT};
use crate::verify::grade::is_code_problem;
use judge::{judge, Checker};
use output::{ACCEPTED_DIR, PASS_RATES_FILE, REJECTED_DIR};
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

/// A trace with its verdict so far.
#[derive(Debug)]
pub(crate) struct Candidate {
    /// The trace.
    pub(crate) row: TraceRow,
    /// Whether its answer verified.
    pub(crate) verified: bool,
    /// The extracted answer.
    pub(crate) extracted_answer: Option<String>,
    /// Rejection reasons so far; empty means accepted.
    pub(crate) reasons: Vec<String>,
}

impl From<Candidate> for FilteredRow {
    fn from(candidate: Candidate) -> Self {
        FilteredRow {
            trace: candidate.row,
            verified: candidate.verified,
            extracted_answer: candidate.extracted_answer,
            reject_reasons: candidate.reasons,
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
    let input::Input { files, rows } = input::read_input(&config.input)?;
    let sandbox = if rows.iter().any(|r| is_code_problem(&r.row.metadata)) {
        Some(
            config
                .sandbox
                .open()
                .map_err(|e| FilterError::Config(e.to_string()))?,
        )
    } else {
        None
    };
    let _claim = OutputDir::claim(&config.out, OutputKind::Filtered)
        .map_err(|e| FilterError::Config(e.to_string()))?;
    output::prepare(&config.out, &recipe_hash, config.force)?;

    let bar = progress_bar(config.progress, rows.len(), "verify");
    let (readability, options) = (&config.readability, config.verify_options());
    let mut candidates: Vec<Candidate> = rows
        .into_par_iter()
        .map(|mut sourced| {
            let checker = Checker::for_problem(&sourced.row.metadata, sandbox.as_ref())
                .map_err(|message| input::invalid_at(&files, &sourced, "metadata", message))?;
            checker
                .check_gold(&sourced.row.answer)
                .map_err(|message| input::invalid_at(&files, &sourced, "answer", message))?;
            let judgement = judge(&sourced.row, &checker, readability, &options);
            if let Some(code) = &judgement.code {
                sourced
                    .row
                    .metadata
                    .insert(CODE_RESULT.into(), code_result(code));
            }
            bar.inc(1);
            Ok(Candidate {
                row: sourced.row,
                verified: judgement.verified,
                extracted_answer: judgement.extracted_answer,
                reasons: judgement.reasons,
            })
        })
        .collect::<Result<_, DataError>>()?;
    bar.finish_and_clear();

    dedup::mark_duplicates(&mut candidates);
    let contaminated = contaminated_problems(&candidates, &index);
    for candidate in &mut candidates {
        if contaminated.contains_key(&candidate.row.id) {
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
    let provenance: card::Provenance = candidates
        .iter()
        .map(|c| {
            let row = &c.row;
            (
                row.teacher.clone(),
                row.temperature.to_string(),
                row.top_p.to_string(),
            )
        })
        .collect();

    let bar = progress_bar(config.progress, candidates.len(), "write");
    let shard_options = ShardOptions {
        rows_per_shard: config.rows_per_shard,
        recipe_hash: recipe_hash.clone(),
        force: false,
    };
    let (accepted, rejected): (Vec<Candidate>, Vec<Candidate>) = candidates
        .into_iter()
        .partition(|candidate| candidate.reasons.is_empty());
    for (name, rows) in [(ACCEPTED_DIR, accepted), (REJECTED_DIR, rejected)] {
        output::write_shards(
            &config.out.join(name),
            rows.into_iter().map(FilteredRow::from),
            shard_options.clone(),
            &bar,
        )?;
    }
    bar.finish_and_clear();
    pass_rates::write_pass_rates(&config.out.join(PASS_RATES_FILE), &rates)?;
    card::write_cards(config, &summary, &provenance)?;
    summary.write(&config.out)?;
    Ok(summary)
}

/// The problems whose text shares an n-gram with an evaluation problem: id → the id of
/// the first evaluation problem found sharing one.
fn contaminated_problems(candidates: &[Candidate], index: &NgramIndex) -> BTreeMap<String, String> {
    let problems: BTreeMap<&str, &str> = candidates
        .iter()
        .map(|c| (c.row.id.as_str(), c.row.problem.as_str()))
        .collect();
    problems
        .into_par_iter()
        .filter_map(|(id, text)| Some((id.to_string(), index.find(text)?.to_string())))
        .collect()
}
