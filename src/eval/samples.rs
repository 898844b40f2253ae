//! `samples.parquet`: one row per sampled completion (id, source, sample_index, completion,
//! answer, correct, tokens, finish_reason), written to a temporary name then renamed, and read back
//! by `distill compare`.
//!
//! Layout: the file is `data/samples.parquet` of the eval directory, so the `data/` folder opens as
//! a dataset in every Parquet reader; directories written before that hold it beside
//! `summary.json`, and [`samples_in`] finds it in either place.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::data::shards::DATA_DIR;

/// File name of the samples table.
pub const SAMPLES_FILE: &str = "samples.parquet";

/// Where an eval run in `dir` writes its samples: `dir/data/samples.parquet`.
pub fn samples_path(dir: &Path) -> PathBuf {
    dir.join(DATA_DIR).join(SAMPLES_FILE)
}

/// The samples file of the eval directory `dir`: `data/samples.parquet`, or the legacy
/// `samples.parquet` beside `summary.json` when only that exists.
pub fn samples_in(dir: &Path) -> PathBuf {
    let current = samples_path(dir);
    let legacy = dir.join(SAMPLES_FILE);
    if !current.exists() && legacy.exists() {
        legacy
    } else {
        current
    }
}
use std::sync::Arc;

use anyhow::{bail, Context};
use arrow::array::{Array, ArrayRef, BooleanArray, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// One row of `samples.parquet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRow {
    /// Problem id.
    pub id: String,
    /// Prompt-set name of the problem.
    pub source: String,
    /// Which of the problem's k samples this is.
    pub sample_index: u32,
    /// The graded text: the chat template's prefill (R1-Distill's `<think>\n`, when it opens the
    /// thought) followed by the completion, as generate stores its `generation`.
    pub completion: String,
    /// The extracted final answer, if any.
    pub answer: Option<String>,
    /// Whether it is verified correct.
    pub correct: bool,
    /// Completion tokens (counting the EOS that ended it).
    pub tokens: u32,
    /// `stop` or `length`.
    pub finish_reason: String,
}

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("sample_index", DataType::UInt32, false),
        Field::new("completion", DataType::Utf8, false),
        Field::new("answer", DataType::Utf8, true),
        Field::new("correct", DataType::Boolean, false),
        Field::new("tokens", DataType::UInt32, false),
        Field::new("finish_reason", DataType::Utf8, false),
    ])
}

/// Writes `rows` to `path` (zstd Parquet) through a temporary file and a rename.
pub fn write_samples(path: &Path, rows: &[SampleRow]) -> anyhow::Result<()> {
    let strings = |f: fn(&SampleRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        strings(|r| &r.id),
        strings(|r| &r.source),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.sample_index),
        )),
        strings(|r| &r.completion),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.answer.as_deref()).collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.correct).collect::<Vec<_>>(),
        )),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.tokens))),
        strings(|r| &r.finish_reason),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema()), columns)
        .with_context(|| format!("{}: building the samples table", path.display()))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(properties))
        .with_context(|| path.display().to_string())?;
    writer
        .write(&batch)
        .with_context(|| path.display().to_string())?;
    writer.close().with_context(|| path.display().to_string())?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    crate::model::save::write_atomic(path, &bytes)?;
    Ok(())
}

/// Reads every row of a `samples.parquet`; errors name the file, the row (0-based) and the field.
pub fn read_samples(path: &Path) -> anyhow::Result<Vec<SampleRow>> {
    let file = File::open(path).with_context(|| path.display().to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("{}: reading a row group", path.display()))?;
        let base = rows.len();
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("{}: missing column `{name}`", path.display()))
        };
        let strings = |name: &str| -> anyhow::Result<StringArray> {
            column(name)?
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .with_context(|| format!("{}: column `{name}` is not text", path.display()))
        };
        let numbers = |name: &str| -> anyhow::Result<UInt32Array> {
            column(name)?
                .as_any()
                .downcast_ref::<UInt32Array>()
                .cloned()
                .with_context(|| format!("{}: column `{name}` is not uint32", path.display()))
        };
        let (id, source, completion, answer, finish) = (
            strings("id")?,
            strings("source")?,
            strings("completion")?,
            strings("answer")?,
            strings("finish_reason")?,
        );
        let (sample_index, tokens) = (numbers("sample_index")?, numbers("tokens")?);
        let correct = column("correct")?
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .with_context(|| format!("{}: column `correct` is not boolean", path.display()))?;
        for i in 0..batch.num_rows() {
            let required: [(&str, &dyn Array); 7] = [
                ("id", &id),
                ("source", &source),
                ("completion", &completion),
                ("finish_reason", &finish),
                ("sample_index", &sample_index),
                ("tokens", &tokens),
                ("correct", &correct),
            ];
            if let Some((name, _)) = required.iter().find(|(_, a)| a.is_null(i)) {
                bail!(
                    "{}: row {} (0-based): field `{name}` is null",
                    path.display(),
                    base + i
                );
            }
            rows.push(SampleRow {
                id: id.value(i).to_string(),
                source: source.value(i).to_string(),
                sample_index: sample_index.value(i),
                completion: completion.value(i).to_string(),
                answer: (!answer.is_null(i)).then(|| answer.value(i).to_string()),
                correct: correct.value(i),
                tokens: tokens.value(i),
                finish_reason: finish.value(i).to_string(),
            });
        }
    }
    Ok(rows)
}
