//! `distill pairs`: preference pairs from a filter's output, for DPO-style training. Chosen = an
//! accepted trace, rejected = a rejected trace of the same problem; written as TRL's
//! conversational preference format ([`PairRow`]).
//!
//! Which rejected traces may be a rejected side, and in what order they are preferred, is a list
//! of rejection reasons (by default a wrong or missing answer first, then the readability
//! issues). A trace rejected for a reason outside the list — `duplicate`, `over_k` (a correct
//! trace cut by the per-problem policy) — is never a rejected side, and a contaminated problem
//! gives no pair. Per problem at most `max_pairs_per_problem` pairs: each rejected trace is used
//! once, the chosen traces in turn; with `length_matched`, each chosen trace takes the
//! eligible rejected trace of the best reason class closest to it in length (so that length
//! alone does not tell the sides apart).
//!
//! Both shard directories the filter writes are sorted by (problem id, sample index), so they
//! are read side by side a problem at a time: memory holds one problem's traces.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use serde::Serialize;

use super::output::{ACCEPTED_DIR, REJECTED_DIR};
use super::reasons::{CONTAMINATED, NO_ANSWER, WRONG_ANSWER};
use crate::data::card::{how_to_load, read_license, CardConfig, DatasetCard};
use crate::data::columns::BatchColumns;
use crate::data::hashing::sha256_hex;
use crate::data::pair_schema::PairRow;
use crate::data::schema::read_message_lists;
use crate::data::shards::{listed_shards, write_atomically, ShardOptions, ShardWriter};
use crate::data::{DataError, Result};
use crate::model::Message;
use crate::verify::ReadabilityIssue;

/// Directory of the pair shards inside the output directory.
pub const PAIRS_DIR: &str = "pairs";

/// File of the summary inside the output directory.
pub const SUMMARY_FILE: &str = "summary.json";

/// How pairs are made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairConfig {
    /// The filter's output directory (with `accepted/` and `rejected/`).
    pub filtered: PathBuf,
    /// Where `pairs/` and `summary.json` go.
    pub out: PathBuf,
    /// Most pairs per problem.
    pub max_pairs_per_problem: usize,
    /// Rejection reasons that make a trace a rejected side, most preferred first.
    pub rejected_reasons: Vec<String>,
    /// Pair each chosen trace with the rejected trace closest to it in length.
    pub length_matched: bool,
    /// Rows per output shard.
    pub rows_per_shard: usize,
}

impl PairConfig {
    /// The defaults for `filtered` and `out`: 4 pairs per problem, wrong or missing answers
    /// preferred over readability rejects, no length matching.
    pub fn new(filtered: PathBuf, out: PathBuf) -> Self {
        PairConfig {
            filtered,
            out,
            max_pairs_per_problem: 4,
            rejected_reasons: default_rejected_reasons(),
            length_matched: false,
            rows_per_shard: crate::data::shards::DEFAULT_ROWS_PER_SHARD,
        }
    }
}

/// Every reason that can make a trace a rejected side, in the default order of preference:
/// wrong and missing answers, code that fails its tests, then every readability issue. (Never:
/// `duplicate`, `over_k` and `contaminated`, nor a sandbox failure, which says nothing of the
/// trace.)
pub fn default_rejected_reasons() -> Vec<String> {
    use crate::verify::code::CodeVerdict;
    let code = [
        CodeVerdict::TestsFailed,
        CodeVerdict::RuntimeError,
        CodeVerdict::Timeout,
        CodeVerdict::MemoryLimit,
        CodeVerdict::NoCode,
    ];
    [WRONG_ANSWER, NO_ANSWER]
        .into_iter()
        .chain(code.map(CodeVerdict::name))
        .chain(ReadabilityIssue::ALL.map(ReadabilityIssue::name))
        .map(str::to_string)
        .collect()
}

/// What a run made.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PairSummary {
    /// Problems seen (with an accepted or a rejected trace).
    pub problems: usize,
    /// Problems that gave at least one pair.
    pub problems_with_pairs: usize,
    /// Pairs written.
    pub pairs: usize,
    /// Contaminated problems left out.
    pub contaminated_problems: usize,
    /// Pairs by the most preferred reason of their rejected side.
    pub pairs_by_reason: BTreeMap<String, usize>,
}

/// One trace as the pairing sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// Problem id.
    pub id: String,
    /// Prompt set.
    pub source: String,
    /// Sample index.
    pub sample_index: u32,
    /// Its conversation, ending with the reply.
    pub messages: Vec<Message>,
    /// Completion tokens, when known.
    pub completion_tokens: Option<u32>,
    /// Rejection reasons (empty for accepted traces).
    pub reasons: Vec<String>,
}

impl Side {
    /// Length used for matching: the token count, or the reply's characters / 4 when unknown.
    fn length(&self) -> u64 {
        self.completion_tokens.map_or_else(
            || {
                self.messages
                    .last()
                    .map_or(0, |m| m.content.chars().count() as u64 / 4)
            },
            u64::from,
        )
    }
}

/// The pairs of one problem as (chosen, rejected) indices, in pair order.
pub fn choose_pairs(
    chosen: &[Side],
    rejected: &[Side],
    config: &PairConfig,
) -> Vec<(usize, usize)> {
    if chosen.is_empty()
        || rejected
            .iter()
            .any(|r| r.reasons.iter().any(|x| x == CONTAMINATED))
    {
        return Vec::new();
    }
    // (reason rank, sample index, index) of every eligible rejected trace.
    let mut eligible: Vec<(usize, u32, usize)> = rejected
        .iter()
        .enumerate()
        .filter_map(|(index, side)| {
            let rank = reason_rank(&side.reasons, &config.rejected_reasons)?;
            Some((rank, side.sample_index, index))
        })
        .collect();
    eligible.sort_unstable();
    let count = config.max_pairs_per_problem.min(eligible.len());
    let mut pairs = Vec::with_capacity(count);
    for k in 0..count {
        let c = k % chosen.len();
        let pick = if config.length_matched {
            let best_rank = eligible[0].0;
            let target = chosen[c].length();
            eligible
                .iter()
                .enumerate()
                .take_while(|(_, e)| e.0 == best_rank)
                .min_by_key(|(_, e)| (rejected[e.2].length().abs_diff(target), e.1))
                .map_or(0, |(position, _)| position)
        } else {
            0
        };
        let (_, _, r) = eligible.remove(pick);
        pairs.push((c, r));
    }
    pairs
}

/// The position in `preferred` of the most preferred of `reasons`; `None` when none is listed
/// or one of them disqualifies the trace (a correct trace cut by the policy, a duplicate).
fn reason_rank(reasons: &[String], preferred: &[String]) -> Option<usize> {
    if reasons
        .iter()
        .any(|r| r == super::reasons::OVER_K || r == super::reasons::DUPLICATE)
    {
        return None;
    }
    reasons
        .iter()
        .filter_map(|r| preferred.iter().position(|p| p == r))
        .min()
}

/// Makes the pairs of `config.filtered` into `config.out` (resuming a run that stopped).
pub fn run_pairs(config: &PairConfig) -> anyhow::Result<PairSummary> {
    if config.max_pairs_per_problem == 0 {
        anyhow::bail!("max_pairs_per_problem must be at least 1");
    }
    if config.rejected_reasons.is_empty() {
        anyhow::bail!("rejected_reasons is empty: no trace could be a rejected side");
    }
    let eligible = default_rejected_reasons();
    if let Some(other) = config
        .rejected_reasons
        .iter()
        .find(|r| !eligible.contains(r))
    {
        anyhow::bail!(
            "rejected_reasons: `{other}` cannot make a trace a rejected side (choose from: {})",
            eligible.join(", ")
        );
    }
    let _claim =
        crate::output_dir::OutputDir::claim(&config.out, crate::output_dir::OutputKind::Pairs)?;
    let mut accepted = ProblemStream::open(&config.filtered.join(ACCEPTED_DIR))?;
    let mut rejected = ProblemStream::open(&config.filtered.join(REJECTED_DIR))?;
    let options = ShardOptions {
        rows_per_shard: config.rows_per_shard,
        recipe_hash: recipe_hash(config),
        force: false,
    };
    let mut writer = ShardWriter::<PairRow>::open(&config.out.join(PAIRS_DIR), options)?;
    let mut summary = PairSummary::default();
    loop {
        let next_id = match (accepted.peek_id()?, rejected.peek_id()?) {
            (None, None) => break,
            (Some(a), Some(r)) => a.min(r).to_string(),
            (Some(a), None) => a.to_string(),
            (None, Some(r)) => r.to_string(),
        };
        let chosen = accepted.take_if(&next_id)?;
        let rejected_sides = rejected.take_if(&next_id)?;
        summary.problems += 1;
        if rejected_sides
            .iter()
            .any(|r| r.reasons.iter().any(|x| x == CONTAMINATED))
        {
            summary.contaminated_problems += 1;
            continue;
        }
        let pairs = choose_pairs(&chosen, &rejected_sides, config);
        if !pairs.is_empty() {
            summary.problems_with_pairs += 1;
        }
        for (pair_index, (c, r)) in pairs.into_iter().enumerate() {
            let (good, bad) = (&chosen[c], &rejected_sides[r]);
            let rank = reason_rank(&bad.reasons, &config.rejected_reasons).unwrap_or(0);
            *summary
                .pairs_by_reason
                .entry(config.rejected_reasons[rank].clone())
                .or_default() += 1;
            summary.pairs += 1;
            writer.write(pair_row(good, bad, pair_index as u32))?;
        }
    }
    writer.finish()?;
    pairs_card(config, &summary).write(&config.out.join(PAIRS_DIR))?;
    let json = serde_json::to_vec_pretty(&summary)?;
    write_atomically(&config.out.join(SUMMARY_FILE), &json)?;
    Ok(summary)
}

/// The dataset card of the `pairs/` directory: counts, the policy, and how TRL trains on it.
fn pairs_card(config: &PairConfig, summary: &PairSummary) -> DatasetCard {
    let default = CardConfig::default_train();
    let mut body = format!(
        "# Preference pairs\n\n{} pairs from {} of {} problems ({} contaminated problems left \
         out), made by `distill pairs` from `{}`: chosen = an accepted trace, rejected = a \
         rejected trace of the same problem.\n\n| setting | value |\n|---|---|\n\
         | pairs per problem, at most | {} |\n| rejected sides, preferred first | {} |\n\
         | length-matched | {} |\n\n| rejected for | pairs |\n|---|---:|\n",
        summary.pairs,
        summary.problems_with_pairs,
        summary.problems,
        summary.contaminated_problems,
        config.filtered.display(),
        config.max_pairs_per_problem,
        config.rejected_reasons.join(", "),
        config.length_matched,
    );
    for (reason, count) in &summary.pairs_by_reason {
        body.push_str(&format!("| `{reason}` | {count} |\n"));
    }
    body.push_str(
        "\nColumns `prompt`, `chosen` and `rejected` are lists of `{role, content}` messages: \
         TRL's conversational preference format.\n\n```python\nfrom datasets import \
         load_dataset\nfrom trl import DPOConfig, DPOTrainer\ntrain = load_dataset(\"parquet\", \
         data_dir=\"pairs/data\")[\"train\"]\ntrainer = DPOTrainer(model=MODEL, \
         args=DPOConfig(output_dir=\"dpo\"), train_dataset=train, processing_class=TOKENIZER)\n\
         ```\n\n",
    );
    body.push_str(&how_to_load(PAIRS_DIR, &default));
    DatasetCard {
        pretty_name: "distill preference pairs".into(),
        license: read_license(&config.filtered),
        rows: summary.pairs,
        tags: vec!["preference".into(), "dpo".into()],
        configs: vec![default],
        body,
    }
}

/// The pair row of `chosen` over `rejected`.
fn pair_row(chosen: &Side, rejected: &Side, pair_index: u32) -> PairRow {
    let split = |side: &Side| -> (Vec<Message>, Vec<Message>) {
        let (reply, prompt) = side
            .messages
            .split_last()
            .map_or((Vec::new(), Vec::new()), |(r, p)| {
                (vec![r.clone()], p.to_vec())
            });
        (prompt, reply)
    };
    let (prompt, chosen_reply) = split(chosen);
    let (_, rejected_reply) = split(rejected);
    PairRow {
        id: chosen.id.clone(),
        source: chosen.source.clone(),
        pair_index,
        prompt,
        chosen: chosen_reply,
        rejected: rejected_reply,
        chosen_sample_index: chosen.sample_index,
        rejected_sample_index: rejected.sample_index,
        rejected_reasons: rejected.reasons.clone(),
        chosen_tokens: chosen.completion_tokens,
        rejected_tokens: rejected.completion_tokens,
    }
}

/// Hash of what decides the pairs (a resumed run must use the same).
fn recipe_hash(config: &PairConfig) -> String {
    let canonical = serde_json::json!({
        "max_pairs_per_problem": config.max_pairs_per_problem,
        "rejected_reasons": config.rejected_reasons,
        "length_matched": config.length_matched,
    });
    sha256_hex(canonical.to_string().as_bytes())[..16].to_string()
}

/// Columns a side is read from.
const SIDE_COLUMNS: [&str; 6] = [
    "id",
    "source",
    "sample_index",
    "messages",
    "completion_tokens",
    "reject_reasons",
];

/// Rows of a filter shard directory, a problem at a time.
struct ProblemStream {
    dir: PathBuf,
    files: std::vec::IntoIter<PathBuf>,
    reader: Option<(PathBuf, ParquetRecordBatchReader, usize)>,
    /// Decoded rows not yet handed out, in order.
    buffered: std::collections::VecDeque<Side>,
    /// The last id handed out: ids must not go back (the shards are sorted).
    last_id: Option<String>,
}

impl ProblemStream {
    fn open(dir: &Path) -> Result<Self> {
        let files: Vec<PathBuf> = listed_shards(dir)?.into_iter().map(|(p, _)| p).collect();
        Ok(ProblemStream {
            dir: dir.to_path_buf(),
            files: files.into_iter(),
            reader: None,
            buffered: Default::default(),
            last_id: None,
        })
    }

    /// Decodes the next batch into `buffered`; `false` at the end of the last file.
    fn fill(&mut self) -> Result<bool> {
        loop {
            if let Some((path, reader, first_row)) = &mut self.reader {
                if let Some(batch) = reader.next() {
                    let batch = batch.map_err(|cause| DataError::Arrow {
                        path: path.clone(),
                        cause,
                    })?;
                    let columns = BatchColumns::new(&batch, path, *first_row);
                    self.buffered.extend(read_sides(&columns)?);
                    *first_row += batch.num_rows();
                    return Ok(true);
                }
                self.reader = None;
            }
            let Some(path) = self.files.next() else {
                return Ok(false);
            };
            let parquet_error = |cause| DataError::Parquet {
                path: path.clone(),
                cause,
            };
            let file = File::open(&path).map_err(|e| DataError::io(&path, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_error)?;
            let mask = ProjectionMask::columns(builder.parquet_schema(), SIDE_COLUMNS);
            let reader = builder
                .with_projection(mask)
                .with_batch_size(256)
                .build()
                .map_err(parquet_error)?;
            self.reader = Some((path, reader, 0));
        }
    }

    /// The id of the next problem, `None` at the end.
    fn peek_id(&mut self) -> Result<Option<&str>> {
        if self.buffered.is_empty() && !self.fill()? {
            return Ok(None);
        }
        Ok(self.buffered.front().map(|side| side.id.as_str()))
    }

    /// Every row of problem `id` when it is next (none otherwise).
    fn take_if(&mut self, id: &str) -> Result<Vec<Side>> {
        let mut taken = Vec::new();
        while self.peek_id()? == Some(id) {
            taken.extend(self.buffered.pop_front());
        }
        if !taken.is_empty() {
            if let Some(last) = &self.last_id {
                if last.as_str() > id {
                    return Err(DataError::InvalidConfig(format!(
                        "{}: rows are not sorted by id (`{id}` after `{last}`): pairs need the \
                         accepted/ and rejected/ directories `distill filter` writes",
                        self.dir.display()
                    )));
                }
            }
            self.last_id = Some(id.to_string());
        }
        Ok(taken)
    }
}

/// The sides of a batch of filter rows.
fn read_sides(columns: &BatchColumns<'_>) -> Result<Vec<Side>> {
    let ids = columns.required_strings("id")?;
    let sources = columns.required_strings("source")?;
    let samples = columns.required_u32("sample_index")?;
    let messages = read_message_lists(columns, "messages")?;
    let tokens = columns.nullable_u32("completion_tokens")?;
    let reasons = columns.required_string_lists("reject_reasons")?;
    let mut sides = Vec::with_capacity(ids.len());
    for (row, (messages, reasons)) in messages.into_iter().zip(reasons).enumerate() {
        if messages.last().is_none_or(|m| m.role != "assistant") {
            return Err(columns.invalid("messages", row, "the last turn is not the assistant's"));
        }
        sides.push(Side {
            id: ids[row].to_string(),
            source: sources[row].to_string(),
            sample_index: samples[row],
            messages,
            completion_tokens: tokens[row],
            reasons,
        });
    }
    Ok(sides)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(sample_index: u32, tokens: u32, reasons: &[&str]) -> Side {
        Side {
            id: "p".into(),
            source: "s".into(),
            sample_index,
            messages: vec![Message::user("q"), Message::assistant("a")],
            completion_tokens: Some(tokens),
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn config(max: usize, length_matched: bool) -> PairConfig {
        let mut config = PairConfig::new(PathBuf::new(), PathBuf::new());
        config.max_pairs_per_problem = max;
        config.length_matched = length_matched;
        config
    }

    #[test]
    fn chosen_traces_take_turns_and_the_preferred_reasons_go_first() {
        let chosen = [side(0, 100, &[]), side(3, 300, &[])];
        let rejected = [
            side(1, 100, &["repetition"]),
            side(2, 100, &["wrong_answer", "truncated"]),
            side(4, 100, &["over_k"]),
            side(5, 100, &["no_answer"]),
        ];
        assert_eq!(
            choose_pairs(&chosen, &rejected, &config(10, false)),
            vec![(0, 1), (1, 3), (0, 0)]
        );
        assert_eq!(
            choose_pairs(&chosen, &rejected, &config(2, false)),
            vec![(0, 1), (1, 3)]
        );
        assert!(choose_pairs(&[], &rejected, &config(10, false)).is_empty());
    }

    #[test]
    fn length_matching_takes_the_closest_of_the_best_reason() {
        let chosen = [side(0, 500, &[]), side(1, 90, &[])];
        let rejected = [
            side(2, 100, &["wrong_answer"]),
            side(3, 480, &["wrong_answer"]),
            side(4, 500, &["repetition"]),
        ];
        // Chosen 0 (500 tokens) takes the 480-token wrong answer, not the 500-token repetition
        // (a worse reason); chosen 1 then takes the remaining wrong answer.
        assert_eq!(
            choose_pairs(&chosen, &rejected, &config(3, true)),
            vec![(0, 1), (1, 0), (0, 2)]
        );
        assert_eq!(
            choose_pairs(&chosen, &rejected, &config(3, false)),
            vec![(0, 0), (1, 1), (0, 2)]
        );
    }

    #[test]
    fn a_contaminated_problem_gives_no_pair() {
        let chosen = [side(0, 100, &[])];
        let rejected = [side(1, 100, &["wrong_answer", "contaminated"])];
        assert!(choose_pairs(&chosen, &rejected, &config(4, false)).is_empty());
    }
}
