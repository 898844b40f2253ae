//! SFT on other tools' datasets: JSONL and Parquet with a `messages` column (HF chat datasets, TRL's
//! conversational format) or `prompt` + `completion` columns (TRL's prompt-completion format), read
//! into the same conversations as distill's own shards; bad rows are named by file, line or row,
//! and field.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, ListArray, StringArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema};
use arrow::record_batch::RecordBatch;
use distill::model::Message;

fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ])
}

/// A `list<struct<role, content>>` column, as `datasets` and pandas+pyarrow write chat data.
fn messages_column(rows: &[Vec<(&str, &str)>]) -> ArrayRef {
    let all: Vec<&(&str, &str)> = rows.iter().flatten().collect();
    let roles: ArrayRef = Arc::new(StringArray::from_iter_values(all.iter().map(|m| m.0)));
    let contents: ArrayRef = Arc::new(StringArray::from_iter_values(all.iter().map(|m| m.1)));
    let items = StructArray::try_new(message_fields(), vec![roles, contents], None).unwrap();
    let item_field = Arc::new(Field::new("item", DataType::Struct(message_fields()), true));
    Arc::new(
        ListArray::try_new(
            item_field,
            OffsetBuffer::from_lengths(rows.iter().map(Vec::len)),
            Arc::new(items),
            None,
        )
        .unwrap(),
    )
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, array)| array).collect(),
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn turns(messages: &[Message]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| (m.role.clone(), m.content.clone()))
        .collect()
}

fn pair(role: &str, content: &str) -> (String, String) {
    (role.to_string(), content.to_string())
}

#[test]
fn chat_and_prompt_completion_datasets_read_as_conversations() {
    let tmp = tempfile::tempdir().unwrap();
    // An HF chat dataset in Parquet: `messages` plus columns SFT ignores, no id.
    let chat = tmp.path().join("chat.parquet");
    write_parquet(
        &chat,
        vec![
            (
                "messages",
                messages_column(&[
                    vec![
                        ("system", "Be brief."),
                        ("user", "What is 2+3?"),
                        ("assistant", "<think>2+3=5</think> \\boxed{5}"),
                    ],
                    vec![("user", "What is 2+3?"), ("assistant", "\\boxed{5}")],
                ]),
            ),
            (
                "source",
                Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            ),
        ],
    );
    let rows = common::load_conversations(&chat).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        turns(&rows[0].messages),
        vec![
            pair("system", "Be brief."),
            pair("user", "What is 2+3?"),
            pair("assistant", "<think>2+3=5</think> \\boxed{5}")
        ]
    );
    assert_eq!(
        rows[0].group, rows[1].group,
        "two samples of one prompt are one group"
    );
    assert!(rows[1].origin.ends_with("chat.parquet: row 1 (0-based)"));

    // TRL's prompt-completion format with string columns and an integer id.
    let trl = tmp.path().join("trl.parquet");
    write_parquet(
        &trl,
        vec![
            (
                "prompt",
                Arc::new(StringArray::from(vec!["Add 1 and 1.", "Add 2 and 2."])) as ArrayRef,
            ),
            (
                "completion",
                Arc::new(StringArray::from(vec!["\\boxed{2}", "\\boxed{4}"])) as ArrayRef,
            ),
            ("id", Arc::new(Int64Array::from(vec![7, 8])) as ArrayRef),
        ],
    );
    let rows = common::load_conversations(&trl).unwrap();
    assert_eq!(
        turns(&rows[1].messages),
        vec![
            pair("user", "Add 2 and 2."),
            pair("assistant", "\\boxed{4}")
        ]
    );
    assert_eq!((rows[0].group.as_str(), rows[1].group.as_str()), ("7", "8"));

    // JSONL in both formats, conversational prompt/completion included.
    let jsonl = tmp.path().join("mixed.jsonl");
    std::fs::write(
        &jsonl,
        concat!(
            r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#,
            "\n\n",
            r#"{"id": "p9", "prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]}"#,
            "\n",
            r#"{"prompt": "Q2", "completion": "A2"}"#,
            "\n"
        ),
    )
    .unwrap();
    let rows = common::load_conversations(&jsonl).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        turns(&rows[1].messages),
        vec![pair("user", "Q"), pair("assistant", "A")]
    );
    assert_eq!(rows[1].group, "p9");
    assert!(rows[2].origin.ends_with("mixed.jsonl: line 4"));
}

#[test]
fn bad_rows_are_named_by_file_line_or_row_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let error = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        common::load_conversations(&path).unwrap_err().to_string()
    };
    let ok = r#"{"prompt": "Q", "completion": "A"}"#;
    let message = error("missing.jsonl", &format!("{ok}\n{{\"text\": \"Q\"}}\n"));
    assert!(
        message.contains("missing.jsonl")
            && message.contains("line 2")
            && message.contains("messages"),
        "{message}"
    );
    let message = error(
        "half.jsonl",
        &format!("{ok}\n{ok}\n{{\"prompt\": \"Q\"}}\n"),
    );
    assert!(
        message.contains("line 3") && message.contains("completion"),
        "{message}"
    );
    let message = error(
        "role.jsonl",
        r#"{"messages": [{"role": "user", "content": "Q"}, {"content": "A"}]}"#,
    );
    assert!(
        message.contains("line 1") && message.contains("messages") && message.contains("role"),
        "{message}"
    );
    let message = error(
        "no_reply.jsonl",
        r#"{"messages": [{"role": "user", "content": "Q"}]}"#,
    );
    assert!(message.contains("no assistant turn"), "{message}");

    let parquet = tmp.path().join("wrong_type.parquet");
    write_parquet(
        &parquet,
        vec![(
            "messages",
            Arc::new(StringArray::from(vec!["not a list"])) as ArrayRef,
        )],
    );
    let message = common::load_conversations(&parquet)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("wrong_type.parquet")
            && message.contains("messages")
            && message.contains("list"),
        "{message}"
    );
    let parquet = tmp.path().join("no_reply.parquet");
    write_parquet(
        &parquet,
        vec![(
            "messages",
            messages_column(&[
                vec![("user", "Q"), ("assistant", "A")],
                vec![("user", "Q only")],
            ]),
        )],
    );
    let message = common::load_conversations(&parquet)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("no_reply.parquet")
            && message.contains("row 1")
            && message.contains("messages"),
        "{message}"
    );
}

#[test]
fn train_runs_on_a_trl_prompt_completion_parquet_file() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 6);
    let conversations = common::synthetic_conversations(48, 1, 17);
    let data = tmp.path().join("trl.parquet");
    write_parquet(
        &data,
        vec![
            (
                "prompt",
                Arc::new(StringArray::from_iter_values(
                    conversations.iter().map(|(p, _)| p.problem.as_str()),
                )) as ArrayRef,
            ),
            (
                "completion",
                Arc::new(StringArray::from_iter_values(
                    conversations.iter().map(|(_, cot)| cot.as_str()),
                )) as ArrayRef,
            ),
        ],
    );
    let config: distill::train::sft::SftConfig = toml::from_str(&format!(
        "student = {student:?}\ndata = {:?}\nout = {:?}\nmax_steps = 30\nbatch_size = 8\nlearning_rate = 1e-2\neval_fraction = 0.2\n",
        data.display().to_string(),
        tmp.path().join("run").display().to_string()
    ))
    .unwrap();
    let summary = distill::train::sft::run_sft(&config, false).unwrap();
    let records =
        distill::train::metrics::MetricsLog::read(&tmp.path().join("run/metrics.jsonl")).unwrap();
    let first = records[0]["loss"].as_f64().unwrap();
    println!(
        "TRL-format Parquet: {} train / {} held-out examples, loss {first:.3} → {:.3}",
        summary.examples.kept, summary.eval_examples, summary.final_loss
    );
    assert_eq!(summary.examples.kept + summary.eval_examples, 48);
    assert!(summary.eval_examples > 0, "some problems are held out");
    assert!(
        summary.final_loss < 0.5 * first,
        "the student learns from it"
    );
}
