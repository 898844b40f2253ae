//! The first pass over the generated shards: every shard file in parallel (rayon), each checked
//! against the manifest first (size, SHA-256 and row count, as generate's resume does), read in
//! record batches and judged row by row. Only what the cross-trace rules need is kept per row
//! ([`Candidate`]: key, source, token count, a hash of the generation, the verdict), so memory
//! does not grow with the length of the traces; the second pass ([`super::sorted_output`])
//! reads the rows again to write them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use indicatif::ProgressBar;
use rayon::prelude::*;

use crate::data::columns::for_each_batch;
use crate::data::schema::{TraceRow, JUDGED_COLUMNS};
use crate::data::shards::{listed_shards, verify_shard};
use crate::data::{DataError, Location, Result};
use crate::sandbox::{Sandbox, SandboxSettings};
use crate::verify::code::code_result;
use crate::verify::grade::is_code_problem;
use crate::verify::{ReadabilityConfig, VerifyOptions};

use super::card::Provenance;
use super::decontaminate::NgramIndex;
use super::judge::{judge, Checker};
use super::{Candidate, RowFacts};

/// The shard files of the input and where each one's rows start in the global row numbering.
#[derive(Debug, Clone)]
pub struct InputFiles {
    /// The shard files, in manifest order.
    pub files: Vec<PathBuf>,
    /// `starts[i]` is the global number of file `i`'s first row; the last entry is the total.
    pub starts: Vec<u64>,
    /// Bytes of trace text in all rows, estimated in the first pass (see
    /// [`estimated_text_bytes`]).
    pub text_bytes: u64,
}

impl InputFiles {
    /// Total rows of the input.
    pub fn total_rows(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    /// The (file, row in file) of global row `position`.
    pub fn locate(&self, position: u64) -> (&Path, usize) {
        let file = self.starts.partition_point(|&start| start <= position) - 1;
        (&self.files[file], (position - self.starts[file]) as usize)
    }
}

/// How each row is judged.
pub struct Judging<'a> {
    readability: &'a ReadabilityConfig,
    options: VerifyOptions,
    index: &'a NgramIndex,
    sandbox_settings: &'a SandboxSettings,
    /// Opened at the first code problem (an input without one never needs a sandbox).
    sandbox: OnceLock<std::result::Result<Arc<Sandbox>, String>>,
}

impl<'a> Judging<'a> {
    /// Judging under these thresholds and options, decontaminating against `index`, running
    /// code problems in a sandbox with `sandbox_settings`.
    pub fn new(
        readability: &'a ReadabilityConfig,
        options: VerifyOptions,
        index: &'a NgramIndex,
        sandbox_settings: &'a SandboxSettings,
    ) -> Self {
        Judging {
            readability,
            options,
            index,
            sandbox_settings,
            sandbox: OnceLock::new(),
        }
    }

    /// The sandbox a problem with `metadata` is graded in: none unless it is a code problem;
    /// opening it fails (saying how to install one) when no sandbox is available.
    fn sandbox_for(
        &self,
        metadata: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<&Arc<Sandbox>>> {
        if !is_code_problem(metadata) {
            return Ok(None);
        }
        let opened = self
            .sandbox
            .get_or_init(|| self.sandbox_settings.open().map_err(|e| e.to_string()));
        match opened {
            Ok(sandbox) => Ok(Some(sandbox)),
            Err(message) => Err(DataError::InvalidConfig(message.clone())),
        }
    }
}

/// What the first pass learned.
#[derive(Debug)]
pub(crate) struct Scan {
    /// The input files.
    pub(crate) input: InputFiles,
    /// One candidate per row, sorted by (problem id, sample index).
    pub(crate) candidates: Vec<Candidate>,
    /// Contaminated problem id → the evaluation problem it shares an n-gram with.
    pub(crate) contaminated: BTreeMap<String, String>,
    /// The distinct (teacher, temperature, top_p) of the rows.
    pub(crate) provenance: Provenance,
}

/// What one file contributed.
struct FileScan {
    candidates: Vec<Candidate>,
    text_bytes: u64,
    contaminated: HashMap<String, Option<String>>,
    provenance: Provenance,
}

/// Reads, verifies and judges every shard of `dir` (see the module docs). A shard that is
/// missing, changed since it was listed, or holds another number of rows than listed is an
/// error naming it, as is a key (id, sample index) present twice (naming both places).
pub(crate) fn scan_input(dir: &Path, judging: &Judging<'_>, bar: &ProgressBar) -> Result<Scan> {
    let listed = listed_shards(dir)?;
    let mut starts = vec![0u64];
    for (_, entry) in &listed {
        starts.push(starts.last().copied().unwrap_or(0) + entry.rows as u64);
    }
    let per_file: Vec<FileScan> = listed
        .par_iter()
        .zip(&starts)
        .map(|((path, entry), &start)| {
            verify_shard(path, entry)?;
            let scanned = scan_file(path, start, judging, bar)?;
            if scanned.candidates.len() != entry.rows {
                return Err(DataError::Manifest {
                    path: path.clone(),
                    message: format!(
                        "shard holds {} rows, the manifest lists {}",
                        scanned.candidates.len(),
                        entry.rows
                    ),
                });
            }
            Ok(scanned)
        })
        .collect::<Result<_>>()?;
    let input = InputFiles {
        files: listed.into_iter().map(|(path, _)| path).collect(),
        starts,
        text_bytes: per_file.iter().map(|file| file.text_bytes).sum(),
    };
    let mut candidates = Vec::with_capacity(input.total_rows() as usize);
    let mut contaminated = BTreeMap::new();
    let mut provenance = Provenance::new();
    for file in per_file {
        candidates.extend(file.candidates);
        contaminated.extend(
            file.contaminated
                .into_iter()
                .filter_map(|(id, eval)| Some((id, eval?))),
        );
        provenance.extend(file.provenance);
    }
    candidates.par_sort_unstable_by(|a, b| a.facts.key_cmp(&b.facts));
    if let Some(pair) = candidates
        .windows(2)
        .find(|pair| pair[0].facts.key_cmp(&pair[1].facts).is_eq())
    {
        let (first_file, first_row) = input.locate(pair[0].facts.position);
        let (path, row) = input.locate(pair[1].facts.position);
        return Err(DataError::InvalidValue {
            path: path.to_path_buf(),
            location: Location::Row(row),
            field: "sample_index".into(),
            message: format!(
                "duplicate key (id `{}`, sample_index {}): also at {} row {first_row}",
                pair[0].facts.id,
                pair[0].facts.sample_index,
                first_file.display(),
            ),
        });
    }
    Ok(Scan {
        input,
        candidates,
        contaminated,
        provenance,
    })
}

/// Judges every row of one shard whose first row has global number `start`, a batch at a time.
fn scan_file(
    path: &Path,
    start: u64,
    judging: &Judging<'_>,
    bar: &ProgressBar,
) -> Result<FileScan> {
    let mut scanned = FileScan {
        candidates: Vec::new(),
        text_bytes: 0,
        contaminated: HashMap::new(),
        provenance: Provenance::new(),
    };
    for_each_batch(path, Some(&JUDGED_COLUMNS), |columns| {
        let rows = TraceRow::judged_from_columns(columns)?;
        let first = start + scanned.candidates.len() as u64;
        let judged: Vec<Candidate> = rows
            .par_iter()
            .enumerate()
            .map(|(offset, row)| {
                let sandbox = judging.sandbox_for(&row.metadata)?;
                let checker = Checker::for_problem(&row.metadata, sandbox)
                    .map_err(|message| columns.invalid("metadata", offset, message))?;
                checker
                    .check_gold(&row.answer)
                    .map_err(|message| columns.invalid("answer", offset, message))?;
                let judgement = judge(row, &checker, judging.readability, &judging.options);
                bar.inc(1);
                Ok(Candidate {
                    facts: RowFacts::of(row, first + offset as u64),
                    verified: judgement.verified,
                    extracted_answer: judgement.extracted_answer,
                    reasons: judgement.reasons,
                    code_result: judgement.code.as_ref().map(code_result),
                })
            })
            .collect::<Result<_>>()?;
        for row in &rows {
            scanned.text_bytes += estimated_text_bytes(row) as u64;
            if !scanned.contaminated.contains_key(&row.id) {
                let eval = judging.index.find(&row.problem).map(str::to_string);
                scanned.contaminated.insert(row.id.clone(), eval);
            }
            scanned.provenance.insert((
                row.teacher.clone(),
                row.temperature.to_string(),
                row.top_p.to_string(),
            ));
        }
        scanned.candidates.extend(judged);
        Ok(())
    })?;
    Ok(scanned)
}

/// [`text_bytes`] of a row read with only the judged columns: the prompt and the user turn
/// hold the problem once each, and the reasoning with the final text and the assistant turn
/// hold the generation once each.
pub fn estimated_text_bytes(judged: &TraceRow) -> usize {
    3 * judged.problem.len() + judged.answer.len() + 3 * judged.generation.len()
}

/// The bytes of a trace's text: the measure of the sort buffer.
pub fn text_bytes(row: &TraceRow) -> usize {
    let messages: usize = row.messages.iter().map(|m| m.content.len()).sum();
    row.problem.len()
        + row.answer.len()
        + row.prompt.len()
        + row.generation.len()
        + row.reasoning.len()
        + row.final_text.len()
        + messages
}
