//! Prompt sources: the built-in adapters on the real data files, column mappings over
//! Parquet, and error messages for bad input (file, line/row and field named).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use distill::data::sources::{
    content_hash_id, load_builtin, load_problems, Adapter, AnswerFormat, ColumnMapping,
};
use parquet::arrow::ArrowWriter;

const DATA: &str = "../shared/data";

fn data_file(relative: &str) -> PathBuf {
    Path::new(DATA).join(relative)
}

#[test]
fn gsm8k_test_has_1319_problems_with_hash_ids_and_stripped_commas() {
    let path = data_file("gsm8k/test.jsonl");
    assert_eq!(Adapter::detect(&path).unwrap(), Adapter::Gsm8k);
    let problems = load_builtin(&path, None).unwrap();
    assert_eq!(problems.len(), 1319);
    let first = &problems[0];
    assert_eq!(first.source, "gsm8k-test");
    assert_eq!(first.answer, "18");
    assert!(first.problem.starts_with("Janet"));
    assert_eq!(first.id, content_hash_id("gsm8k-test", &first.problem));
    assert!(first.id.starts_with("gsm8k-test-"));
    assert_eq!(first.id.len(), "gsm8k-test-".len() + 16);
    assert_eq!(problems[146].answer, "2125", "`#### 2,125` loses its comma");
}

#[test]
fn gsm8k_train_has_7473_problems() {
    let problems = load_builtin(&data_file("gsm8k/train.jsonl"), Some(Adapter::Gsm8k)).unwrap();
    assert_eq!(problems.len(), 7473);
    assert_eq!(problems[0].source, "gsm8k-train");
}

#[test]
fn math500_has_500_problems_with_unique_id_ids_and_metadata() {
    let path = data_file("math500/test.jsonl");
    assert_eq!(Adapter::detect(&path).unwrap(), Adapter::Math500);
    let problems = load_builtin(&path, None).unwrap();
    assert_eq!(problems.len(), 500);
    let first = &problems[0];
    assert_eq!(first.id, "math500-test/precalculus/807.json");
    assert_eq!(first.answer, "\\left( 3, \\frac{\\pi}{2} \\right)");
    assert_eq!(first.metadata["subject"], "Precalculus");
    assert_eq!(first.metadata["level"], 2);
    assert_eq!(first.metadata["unique_id"], "test/precalculus/807.json");
}

#[test]
fn aime24_has_30_problems_with_canonical_integer_answers() {
    let path = data_file("qwen25_math_eval/aime24/test.jsonl");
    assert_eq!(Adapter::detect(&path).unwrap(), Adapter::Aime24);
    let problems = load_builtin(&path, None).unwrap();
    assert_eq!(problems.len(), 30);
    assert_eq!(problems[0].id, "aime24-60");
    assert_eq!(problems[0].answer, "204");
    assert_eq!(problems[7].id, "aime24-67");
    assert_eq!(problems[7].answer, "25", "leading zero of `025` removed");
    assert!(problems[0].metadata["url"]
        .as_str()
        .unwrap()
        .contains("2024_AIME_I"));
}

#[test]
fn amc23_has_40_problems_with_float_answers_as_integers() {
    let path = data_file("qwen25_math_eval/amc23/test.jsonl");
    assert_eq!(Adapter::detect(&path).unwrap(), Adapter::Amc23);
    let problems = load_builtin(&path, None).unwrap();
    assert_eq!(problems.len(), 40);
    assert_eq!(problems[0].id, "amc23-0");
    assert_eq!(problems[0].answer, "27");
    assert_eq!(problems[3].answer, "3159");
    assert_eq!(problems[15].answer, "-1");
}

#[test]
fn adapters_are_found_by_name() {
    assert_eq!(Adapter::from_name("MATH-500").unwrap(), Adapter::Math500);
    assert_eq!(Adapter::from_name("gsm8k").unwrap(), Adapter::Gsm8k);
    let error = Adapter::from_name("mmlu").unwrap_err().to_string();
    assert!(error.contains("`mmlu`"), "{error}");
}

#[test]
fn unknown_layout_and_extension_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let odd = write_file(
        dir.path(),
        "odd.jsonl",
        b"{\"text\": \"hi\", \"label\": 1}\n",
    );
    let message = Adapter::detect(&odd).unwrap_err().to_string();
    assert!(message.contains("odd.jsonl"), "{message}");
    assert!(message.contains("[text, label]"), "{message}");
    let csv = write_file(dir.path(), "set.csv", b"question,answer\n");
    let message = load_builtin(&csv, None).unwrap_err().to_string();
    assert!(
        message.contains("set.csv: unsupported file type"),
        "{message}"
    );
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn qa_mapping() -> ColumnMapping {
    ColumnMapping::new("custom", "question", "answer")
}

#[test]
fn malformed_json_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "bad.jsonl",
        b"{\"question\": \"1+1?\", \"answer\": \"2\"}\n{\"question\": \"2+2?\", \"answer\": 4,\n",
    );
    let message = load_problems(&path, &qa_mapping()).unwrap_err().to_string();
    assert!(message.contains("bad.jsonl"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("malformed JSON"), "{message}");
}

#[test]
fn missing_field_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "missing.jsonl",
        b"{\"question\": \"1+1?\", \"answer\": \"2\"}\n\n{\"question\": \"2+2?\"}\n",
    );
    let message = load_problems(&path, &qa_mapping()).unwrap_err().to_string();
    assert!(message.contains("missing.jsonl"), "{message}");
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("missing field `answer`"), "{message}");
}

#[test]
fn wrong_type_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "typed.jsonl",
        b"{\"question\": [\"1+1?\"], \"answer\": \"2\"}\n",
    );
    let message = load_problems(&path, &qa_mapping()).unwrap_err().to_string();
    assert!(message.contains("typed.jsonl: line 1"), "{message}");
    assert!(message.contains("field `question`"), "{message}");
    assert!(
        message.contains("expected string, found array"),
        "{message}"
    );
}

#[test]
fn non_utf8_file_names_file_line_byte_offset_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"{\"question\": \"ok\", \"answer\": \"1\"}\n".to_vec();
    let bad_offset = bytes.len() + "{\"question\": \"caf".len();
    bytes.extend_from_slice(b"{\"question\": \"caf\xe9\", \"answer\": \"2\"}\n");
    let path = write_file(dir.path(), "latin1.jsonl", &bytes);
    let message = load_problems(&path, &qa_mapping()).unwrap_err().to_string();
    assert!(message.contains("latin1.jsonl"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(
        message.contains(&format!("byte offset {bad_offset}")),
        "{message}"
    );
    assert!(message.contains("field `question`"), "{message}");
}

#[test]
fn empty_file_and_gsm8k_answer_without_marker_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write_file(dir.path(), "empty.jsonl", b"\n\n");
    let message = load_problems(&empty, &qa_mapping())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("empty.jsonl: the file is empty"),
        "{message}"
    );

    let unmarked = write_file(
        dir.path(),
        "unmarked.jsonl",
        b"{\"question\": \"1+1?\", \"answer\": \"It is 2.\"}\n",
    );
    let message = load_builtin(&unmarked, Some(Adapter::Gsm8k))
        .unwrap_err()
        .to_string();
    assert!(message.contains("unmarked.jsonl: line 1"), "{message}");
    assert!(message.contains("field `answer`"), "{message}");
    assert!(message.contains("####"), "{message}");
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, array)| array).collect(),
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn parquet_prompt_set_reads_through_a_column_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set.parquet");
    write_parquet(
        &path,
        vec![
            (
                "q",
                Arc::new(StringArray::from(vec!["1+1?", "2*3?"])) as ArrayRef,
            ),
            ("gold", Arc::new(Int64Array::from(vec![2, 6]))),
            ("qid", Arc::new(Int64Array::from(vec![10, 11]))),
            (
                "topic",
                Arc::new(StringArray::from(vec![Some("add"), None])),
            ),
        ],
    );
    let mapping = ColumnMapping {
        id: Some("qid".into()),
        id_prefix: "set-".into(),
        metadata: vec!["topic".into()],
        answer_format: AnswerFormat::Number,
        ..ColumnMapping::new("set", "q", "gold")
    };
    let problems = load_problems(&path, &mapping).unwrap();
    assert_eq!(problems.len(), 2);
    assert_eq!(problems[1].id, "set-11");
    assert_eq!(problems[1].answer, "6");
    assert_eq!(problems[0].metadata["topic"], "add");
    assert!(problems[1].metadata["topic"].is_null());
}

#[test]
fn parquet_missing_column_and_null_name_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nogold.parquet");
    write_parquet(
        &path,
        vec![(
            "question",
            Arc::new(StringArray::from(vec!["1+1?"])) as ArrayRef,
        )],
    );
    let message = load_problems(&path, &qa_mapping()).unwrap_err().to_string();
    assert!(message.contains("nogold.parquet"), "{message}");
    assert!(message.contains("missing column `answer`"), "{message}");
    assert!(message.contains("every row"), "{message}");

    let nulls = dir.path().join("nulls.parquet");
    write_parquet(
        &nulls,
        vec![
            (
                "question",
                Arc::new(StringArray::from(vec![Some("a?"), None])) as ArrayRef,
            ),
            ("answer", Arc::new(StringArray::from(vec!["1", "2"]))),
        ],
    );
    let message = load_problems(&nulls, &qa_mapping())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("nulls.parquet: row 1 (0-based)"),
        "{message}"
    );
    assert!(message.contains("field `question` is null"), "{message}");
}
