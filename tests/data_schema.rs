//! The trace schema: column names and types as read by the plain arrow/parquet crates, round
//! trips of `TraceRow` and `FilteredRow`, and errors for malformed shard files.

mod data_common;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use arrow::array::{Array, ArrayRef, Int64Array, ListArray, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use distill::data::schema::{rfc3339_utc, split_generation, ArrowRow, FilteredRow, TraceRow};
use distill::data::shards::{read_rows, read_shard, read_trace_rows, ShardOptions, ShardWriter};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;

fn options(rows_per_shard: usize) -> ShardOptions {
    ShardOptions {
        rows_per_shard,
        ..ShardOptions::new("recipe-1")
    }
}

#[test]
fn shards_read_back_with_the_documented_schema() {
    let dir = tempfile::tempdir().unwrap();
    let rows = data_common::all_rows(&data_common::problems(4), 2);
    let mut writer = ShardWriter::<TraceRow>::open(dir.path(), options(5)).unwrap();
    for row in rows.clone() {
        assert!(writer.write(row).unwrap());
    }
    let manifest = writer.finish().unwrap();
    assert_eq!(manifest.shards.len(), 2);
    assert_eq!(manifest.total_rows, 8);

    let file = File::open(dir.path().join("data/part-00000.parquet")).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let compression = builder.metadata().row_group(0).column(0).compression();
    assert!(
        matches!(compression, Compression::ZSTD(_)),
        "{compression:?}"
    );
    let batch = builder.build().unwrap().next().unwrap().unwrap();
    let schema = batch.schema();
    let columns: Vec<(&str, &DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    let message = DataType::Struct(
        vec![
            Field::new("role", DataType::Utf8, false),
            Field::new("content", DataType::Utf8, false),
        ]
        .into(),
    );
    let messages = DataType::List(Arc::new(Field::new("item", message, true)));
    let expected: Vec<(&str, &DataType)> = vec![
        ("id", &DataType::Utf8),
        ("source", &DataType::Utf8),
        ("problem", &DataType::Utf8),
        ("answer", &DataType::Utf8),
        ("prompt", &DataType::Utf8),
        ("messages", &messages),
        ("generation", &DataType::Utf8),
        ("reasoning", &DataType::Utf8),
        ("final", &DataType::Utf8),
        ("teacher", &DataType::Utf8),
        ("temperature", &DataType::Float64),
        ("top_p", &DataType::Float64),
        ("seed", &DataType::UInt64),
        ("sample_index", &DataType::UInt32),
        ("finish_reason", &DataType::Utf8),
        ("prompt_tokens", &DataType::UInt32),
        ("completion_tokens", &DataType::UInt32),
        ("created_at", &DataType::Utf8),
        ("metadata", &DataType::Utf8),
        ("teacher_endpoint", &DataType::Utf8),
        ("cost", &DataType::Float64),
        ("round", &DataType::UInt32),
    ];
    assert_eq!(columns, expected);

    let list = batch
        .column_by_name("messages")
        .unwrap()
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap();
    let turns = list.value(0);
    let turns = turns.as_any().downcast_ref::<StructArray>().unwrap();
    let roles = turns
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let contents = turns
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!((roles.value(0), roles.value(1)), ("user", "assistant"));
    assert_eq!(contents.value(1), rows[0].generation);
    let metadata = batch.column_by_name("metadata").unwrap();
    let metadata = metadata.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(metadata.value(0), r#"{"difficulty":2}"#);

    assert_eq!(
        read_trace_rows(dir.path()).unwrap(),
        data_common::sorted(rows)
    );
}

#[test]
fn filtered_rows_round_trip_and_read_as_plain_traces() {
    let dir = tempfile::tempdir().unwrap();
    let traces = data_common::all_rows(&data_common::problems(3), 1);
    let filtered: Vec<FilteredRow> = traces
        .iter()
        .enumerate()
        .map(|(index, trace)| FilteredRow {
            trace: trace.clone(),
            verified: index != 1,
            extracted_answer: (index != 2).then(|| trace.answer.clone()),
            reject_reasons: if index == 1 {
                vec!["wrong_answer".into(), "too_long".into()]
            } else {
                Vec::new()
            },
        })
        .collect();
    let mut writer = ShardWriter::<FilteredRow>::open(dir.path(), options(10)).unwrap();
    for row in filtered.clone() {
        writer.write(row).unwrap();
    }
    writer.finish().unwrap();
    let mut expected = filtered;
    expected.sort_by_key(|row| row.key());
    assert_eq!(read_rows::<FilteredRow>(dir.path()).unwrap(), expected);
    assert_eq!(
        read_trace_rows(dir.path()).unwrap(),
        data_common::sorted(traces)
    );
    let schema = FilteredRow::schema();
    let tail: Vec<&str> = schema.fields()[22..]
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(tail, vec!["verified", "extracted_answer", "reject_reasons"]);
}

/// Writes the trace columns of `rows` with `change` applied to (schema fields, arrays).
fn write_altered(path: &Path, change: impl FnOnce(&mut Vec<Field>, &mut Vec<ArrayRef>)) {
    let rows = data_common::all_rows(&data_common::problems(2), 1);
    let batch = TraceRow::to_record_batch(&rows).unwrap();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut arrays = batch.columns().to_vec();
    change(&mut fields, &mut arrays);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn column_index(fields: &[Field], name: &str) -> usize {
    fields.iter().position(|f| f.name() == name).unwrap()
}

#[test]
fn shard_missing_a_column_names_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-final.parquet");
    write_altered(&path, |fields, arrays| {
        let index = column_index(fields, "final");
        fields.remove(index);
        arrays.remove(index);
    });
    let message = read_shard::<TraceRow>(&path).unwrap_err().to_string();
    assert!(message.contains("no-final.parquet"), "{message}");
    assert!(message.contains("missing column `final`"), "{message}");
}

#[test]
fn shards_written_before_the_endpoint_cost_and_round_columns_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("older.parquet");
    write_altered(&path, |fields, arrays| {
        for name in ["round", "cost", "teacher_endpoint"] {
            let index = column_index(fields, name);
            fields.remove(index);
            arrays.remove(index);
        }
    });
    let rows = read_shard::<TraceRow>(&path).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.teacher_endpoint.is_none() && r.cost.is_none() && r.round.is_none()));
}

#[test]
fn shard_with_wrong_type_names_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signed-seed.parquet");
    write_altered(&path, |fields, arrays| {
        let index = column_index(fields, "seed");
        fields[index] = Field::new("seed", DataType::Int64, false);
        arrays[index] = Arc::new(Int64Array::from(vec![1, 2]));
    });
    let message = read_shard::<TraceRow>(&path).unwrap_err().to_string();
    assert!(message.contains("signed-seed.parquet"), "{message}");
    assert!(
        message.contains("column `seed` has the wrong type"),
        "{message}"
    );
    assert!(
        message.contains("expected UInt64, found Int64"),
        "{message}"
    );
}

#[test]
fn shard_with_null_names_file_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("null-teacher.parquet");
    write_altered(&path, |fields, arrays| {
        let index = column_index(fields, "teacher");
        fields[index] = Field::new("teacher", DataType::Utf8, true);
        arrays[index] = Arc::new(StringArray::from(vec![Some("t"), None]));
    });
    let message = read_shard::<TraceRow>(&path).unwrap_err().to_string();
    assert!(
        message.contains("null-teacher.parquet: row 1 (0-based)"),
        "{message}"
    );
    assert!(message.contains("field `teacher` is null"), "{message}");
}

#[test]
fn shard_with_bad_finish_reason_names_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("finish.parquet");
    write_altered(&path, |fields, arrays| {
        let index = column_index(fields, "finish_reason");
        arrays[index] = Arc::new(StringArray::from(vec!["stop", "eos"]));
    });
    let message = read_shard::<TraceRow>(&path).unwrap_err().to_string();
    assert!(
        message.contains("finish.parquet: row 1 (0-based)"),
        "{message}"
    );
    assert!(
        message.contains("field `finish_reason` is invalid"),
        "{message}"
    );
}

#[test]
fn generation_splits_into_reasoning_and_final() {
    let split = |text: &str| split_generation(text);
    assert_eq!(
        split("<think>\nstep\n</think>\n\nThe answer is \\boxed{4}."),
        ("step".to_string(), "The answer is \\boxed{4}.".to_string())
    );
    assert_eq!(
        split("step one\n</think>\nok"),
        ("step one".to_string(), "ok".to_string())
    );
    assert_eq!(
        split("<think>\nunfinished"),
        ("unfinished".to_string(), String::new())
    );
}

#[test]
fn created_at_is_rfc3339_utc() {
    let at = |seconds| rfc3339_utc(UNIX_EPOCH + Duration::from_secs(seconds));
    assert_eq!(at(0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
}
