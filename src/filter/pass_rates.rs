//! Per-problem pass rates (`pass_rates.parquet`): how many of a problem's samples have a
//! verified-correct answer, and whether the problem is an RL candidate — its pass rate lies in
//! the configured band (default 0.2–0.8, as open-r1 picks GRPO prompts: neither always solved
//! nor never) and it is not contaminated.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::data::columns::for_each_batch;
use crate::data::shards::write_atomically;
use crate::data::{DataError, Result};

use super::Candidate;

/// One row of `pass_rates.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct PassRate {
    /// Problem id.
    pub id: String,
    /// Prompt-set name.
    pub source: String,
    /// Samples of the problem in the input.
    pub samples: u32,
    /// Samples whose answer verified correct (whatever their readability).
    pub correct: u32,
    /// `correct / samples`.
    pub pass_rate: f64,
    /// Pass rate within the band and not contaminated.
    pub rl_candidate: bool,
    /// The problem shares an n-gram with an evaluation problem.
    pub contaminated: bool,
}

/// The pass rates of every problem of `candidates`, sorted by id.
pub(super) fn pass_rates(
    candidates: &[Candidate],
    contaminated: &BTreeMap<String, String>,
    band: (f64, f64),
) -> Vec<PassRate> {
    let mut counts: BTreeMap<&str, (&str, u32, u32)> = BTreeMap::new();
    for candidate in candidates {
        let entry = counts.entry(candidate.facts.id.as_str()).or_insert((
            candidate.facts.source.as_str(),
            0,
            0,
        ));
        entry.1 += 1;
        entry.2 += u32::from(candidate.verified);
    }
    counts
        .into_iter()
        .map(|(id, (source, samples, correct))| {
            let pass_rate = f64::from(correct) / f64::from(samples.max(1));
            let contaminated = contaminated.contains_key(id);
            PassRate {
                id: id.to_string(),
                source: source.to_string(),
                samples,
                correct,
                pass_rate,
                rl_candidate: !contaminated && band.0 <= pass_rate && pass_rate <= band.1,
                contaminated,
            }
        })
        .collect()
}

/// Writes `rates` to `path` as one zstd Parquet file, atomically.
pub fn write_pass_rates(path: &Path, rates: &[PassRate]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("samples", DataType::UInt32, false),
        Field::new("correct", DataType::UInt32, false),
        Field::new("pass_rate", DataType::Float64, false),
        Field::new("rl_candidate", DataType::Boolean, false),
        Field::new("contaminated", DataType::Boolean, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rates.iter().map(|r| &r.id))),
        Arc::new(StringArray::from_iter_values(
            rates.iter().map(|r| &r.source),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rates.iter().map(|r| r.samples),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rates.iter().map(|r| r.correct),
        )),
        Arc::new(Float64Array::from_iter_values(
            rates.iter().map(|r| r.pass_rate),
        )),
        Arc::new(BooleanArray::from_iter(
            rates.iter().map(|r| Some(r.rl_candidate)),
        )),
        Arc::new(BooleanArray::from_iter(
            rates.iter().map(|r| Some(r.contaminated)),
        )),
    ];
    let arrow_error = |source| DataError::Arrow {
        path: path.to_path_buf(),
        cause: source,
    };
    let parquet_error = |source| DataError::Parquet {
        path: path.to_path_buf(),
        cause: source,
    };
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut bytes = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut bytes, schema, Some(properties)).map_err(parquet_error)?;
    writer.write(&batch).map_err(parquet_error)?;
    writer.close().map_err(parquet_error)?;
    write_atomically(path, &bytes)
}

/// Reads a `pass_rates.parquet` file (e.g. to pick GRPO prompts from its `rl_candidate`
/// rows); errors name the file, row and column.
pub fn read_pass_rates(path: &Path) -> Result<Vec<PassRate>> {
    let mut rates = Vec::new();
    for_each_batch(path, None, |columns| {
        let (ids, sources) = (
            columns.required_strings("id")?,
            columns.required_strings("source")?,
        );
        let (samples, correct) = (
            columns.required_u32("samples")?,
            columns.required_u32("correct")?,
        );
        let pass_rate = columns.required_f64("pass_rate")?;
        let rl_candidate = columns.required_bool("rl_candidate")?;
        let contaminated = columns.required_bool("contaminated")?;
        for index in 0..columns.num_rows() {
            rates.push(PassRate {
                id: ids[index].to_string(),
                source: sources[index].to_string(),
                samples: samples[index],
                correct: correct[index],
                pass_rate: pass_rate[index],
                rl_candidate: rl_candidate[index],
                contaminated: contaminated[index],
            });
        }
        Ok(())
    })?;
    Ok(rates)
}
