//! Conversations to fine-tune on, from the accepted shards of `distill filter` or from another
//! tool's dataset: a JSONL or Parquet file, or a directory of them, whose rows have either
//! - a `messages` column: a list of `{role, content}` (Hugging Face chat datasets such as
//!   OpenR1-Math-220k, TRL's conversational format), or
//! - `prompt` and `completion` columns (TRL's prompt-completion format): strings, read as one user
//!   turn and one assistant turn, or lists of messages.
//!
//! An optional `id` column groups rows that answer the same problem (several samples of one
//! prompt); without it the group is a hash of the first user turn. Every error names the file, the
//! line or row, and the field.
//!
//! Conversations are streamed ([`for_each_conversation`]): a JSONL file a line at a time, a
//! Parquet file a record batch at a time, so reading needs the memory of one batch, not of the
//! dataset.

use std::path::{Path, PathBuf};

use arrow::array::Array;
use serde_json::{Map, Value};

use super::columns::{as_str_column, cell_to_json, for_each_batch, BatchColumns};
use super::errors::{DataError, Result};
use super::hashing::sha256_hex;
use super::hub::{self, HubDatasetSpec};
use super::schema::read_message_lists;
use super::shards::{shard_paths, MANIFEST_FILE};
use super::sources::{file_extension, for_each_line};
use crate::model::Message;

/// One conversation to train on.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The problem the conversation answers: rows with one group are held out together.
    pub group: String,
    /// For rows of a distill shard directory, the sample index: `(group, sample)` is the row's
    /// key, and sorting by it gives the canonical order whatever the shard layout.
    pub sample: Option<u32>,
    /// Where the row came from, for messages: `FILE: line N`, `FILE: row N (0-based)` or, for
    /// distill shards, `DIR: id=… sample=N`.
    pub origin: String,
    /// The turns, in order.
    pub messages: Vec<Message>,
}

/// Calls `visit` with every conversation under `path`, one at a time: a shard directory
/// written by distill (it has a `manifest.json`; rows in shard order, keyed by
/// [`Conversation::sample`]), a `.jsonl`/`.parquet` file, a directory of such files (read in
/// name order), or a Hub dataset split named `hf:ORG/NAME[:CONFIG][:SPLIT]` (see
/// [`crate::data::hub`]). The first error — reading, or returned by `visit` — stops the walk
/// and is returned.
pub fn for_each_conversation<E: From<DataError>>(
    path: &Path,
    mut visit: impl FnMut(Conversation) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    // The readers stop at a data error; `visit`'s own error is kept aside and returned as is.
    let mut visit_error = None;
    let walked = walk_conversations(path, &mut |conversation| {
        visit(conversation).map_err(|error| {
            visit_error = Some(error);
            DataError::InvalidConfig("stopped by the caller".into())
        })
    });
    match visit_error {
        Some(error) => Err(error),
        None => walked.map_err(E::from),
    }
}

/// A callback that takes each conversation read.
type Visit<'a> = dyn FnMut(Conversation) -> Result<()> + 'a;

/// [`for_each_conversation`] with data errors only.
fn walk_conversations(path: &Path, visit: &mut Visit<'_>) -> Result<()> {
    if let Some(spec) = path.to_str().and_then(HubDatasetSpec::parse) {
        return read_files(&hub::resolve(&spec?)?.files, visit);
    }
    if path.join(MANIFEST_FILE).is_file() {
        return read_shard_conversations(path, visit);
    }
    let files = if path.is_dir() {
        dataset_files(path)?
    } else if path.exists() {
        vec![path.to_path_buf()]
    } else {
        return Err(DataError::io(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    };
    read_files(&files, visit)
}

/// The conversations of a distill shard directory, in shard order. Only the `id`,
/// `sample_index` and `messages` columns are decoded (not the generation, reasoning and answer
/// copies of the text).
fn read_shard_conversations(dir: &Path, visit: &mut Visit<'_>) -> Result<()> {
    for file in shard_paths(dir)? {
        for_each_batch(
            &file,
            Some(&["id", "sample_index", "messages"]),
            |columns| {
                let ids = columns.required_strings("id")?;
                let samples = columns.required_u32("sample_index")?;
                let messages = read_message_lists(columns, "messages")?;
                for ((id, sample), messages) in ids.into_iter().zip(samples).zip(messages) {
                    visit(Conversation {
                        origin: format!("{}: id={id} sample={sample}", dir.display()),
                        group: id.to_string(),
                        sample: Some(sample),
                        messages,
                    })?;
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// The conversations of `.jsonl`/`.parquet` files, in order; a file without any is an error.
fn read_files(files: &[PathBuf], visit: &mut Visit<'_>) -> Result<()> {
    for file in files {
        let mut read = 0usize;
        let mut counted = |conversation| {
            read += 1;
            visit(conversation)
        };
        match file_extension(file).as_str() {
            "jsonl" | "json" => read_jsonl(file, &mut counted)?,
            "parquet" => read_parquet(file, &mut counted)?,
            _ => return Err(DataError::UnsupportedFileType { path: file.clone() }),
        }
        if read == 0 {
            return Err(DataError::EmptyFile { path: file.clone() });
        }
    }
    Ok(())
}

/// The `.parquet` and `.jsonl` files directly in `dir`, sorted by name.
fn dataset_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if matches!(file_extension(&path).as_str(), "parquet" | "jsonl") {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(DataError::InvalidConfig(format!(
            "{}: the directory holds no .jsonl or .parquet files",
            dir.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// The group of a conversation without an `id`: a hash of its first user turn (or first turn).
fn content_group(messages: &[Message]) -> String {
    let first = messages
        .iter()
        .find(|m| m.role == "user")
        .or(messages.first())
        .map_or("", |m| m.content.as_str());
    sha256_hex(first.as_bytes())[..16].to_string()
}

fn conversation(
    origin: String,
    id: Option<String>,
    messages: Vec<Message>,
    invalid: impl Fn(String) -> DataError,
) -> Result<Conversation> {
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err(invalid("no assistant turn to train on".into()));
    }
    Ok(Conversation {
        group: id.unwrap_or_else(|| content_group(&messages)),
        sample: None,
        origin,
        messages,
    })
}

/// A JSON value holding a turn list (`[{role, content}, …]`) or, for `prompt`/`completion`, a string
/// (one turn of `default_role`).
fn json_messages(
    value: &Value,
    default_role: Option<&str>,
    wrong: &dyn Fn(String) -> DataError,
) -> Result<Vec<Message>> {
    match (value, default_role) {
        (Value::String(text), Some(role)) => Ok(vec![Message::new(role, text.clone())]),
        (Value::Array(items), _) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let text = |key: &str| {
                    item.get(key)
                        .and_then(Value::as_str)
                        .ok_or_else(|| wrong(format!("message {i} has no string `{key}`")))
                };
                Ok(Message::new(text("role")?, text("content")?))
            })
            .collect(),
        _ => Err(wrong(match default_role {
            Some(_) => "expected a string or a list of {role, content} messages".into(),
            None => "expected a list of {role, content} messages".into(),
        })),
    }
}

/// The row's turns from a JSON record: `messages`, or `prompt` + `completion`.
fn record_messages(
    record: &Map<String, Value>,
    invalid: &dyn Fn(&str, String) -> DataError,
    missing: &dyn Fn(&str) -> DataError,
) -> Result<Vec<Message>> {
    if let Some(messages) = record.get("messages") {
        return json_messages(messages, None, &|m| invalid("messages", m));
    }
    match (record.get("prompt"), record.get("completion")) {
        (Some(prompt), Some(completion)) => {
            let mut messages = json_messages(prompt, Some("user"), &|m| invalid("prompt", m))?;
            messages.extend(json_messages(completion, Some("assistant"), &|m| {
                invalid("completion", m)
            })?);
            Ok(messages)
        }
        (Some(_), None) => Err(missing("completion")),
        _ => Err(missing("messages")),
    }
}

fn json_id(record: &Map<String, Value>) -> Option<String> {
    match record.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn read_jsonl(path: &Path, visit: &mut Visit<'_>) -> Result<()> {
    for_each_line(path, |location, line| {
        if line.trim().is_empty() {
            return Ok(());
        }
        let record: Map<String, Value> =
            serde_json::from_str(line).map_err(|error| DataError::MalformedJson {
                path: path.to_path_buf(),
                location,
                message: error.to_string(),
            })?;
        let invalid = |field: &str, message: String| DataError::InvalidValue {
            path: path.to_path_buf(),
            location,
            field: field.to_string(),
            message,
        };
        let missing = |field: &str| DataError::MissingField {
            path: path.to_path_buf(),
            location,
            field: format!("{field} (or prompt + completion)"),
        };
        let messages = record_messages(&record, &invalid, &missing)?;
        visit(conversation(
            format!("{}: {location}", path.display()),
            json_id(&record),
            messages,
            |m| invalid("messages", m),
        )?)
    })
}

/// A Parquet column of turns: `list<struct<role, content>>`, or (for `prompt`/`completion`) a
/// string column read as one turn of `default_role` per row.
fn column_messages(
    columns: &BatchColumns<'_>,
    name: &str,
    default_role: Option<&str>,
) -> Result<Vec<Vec<Message>>> {
    let array = columns.column(name)?;
    match (as_str_column(array), default_role) {
        (Some(strings), Some(role)) => (0..columns.num_rows())
            .map(|row| {
                let text = strings
                    .get(row)
                    .ok_or_else(|| columns.null_error(name, row))?;
                Ok(vec![Message::new(role, text)])
            })
            .collect(),
        _ => read_message_lists(columns, name),
    }
}

fn read_parquet(path: &Path, visit: &mut Visit<'_>) -> Result<()> {
    // Only the columns a conversation is made of are decoded.
    let wanted = ["messages", "prompt", "completion", "id"];
    for_each_batch(path, Some(&wanted), |columns| {
        let turns = if columns.get("messages").is_some() || columns.get("prompt").is_none() {
            column_messages(columns, "messages", None)?
        } else {
            let prompts = column_messages(columns, "prompt", Some("user"))?;
            let completions = column_messages(columns, "completion", Some("assistant"))?;
            prompts
                .into_iter()
                .zip(completions)
                .map(|(mut prompt, completion)| {
                    prompt.extend(completion);
                    prompt
                })
                .collect()
        };
        let ids = columns.get("id");
        for (row, messages) in turns.into_iter().enumerate() {
            let id = ids
                .filter(|ids| ids.is_valid(row))
                .and_then(|ids| cell_to_json(ids, row))
                .map(|value| match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                });
            visit(conversation(
                format!("{}: {}", path.display(), columns.location(row)),
                id,
                messages,
                |m| columns.invalid("messages", row, m),
            )?)?;
        }
        Ok(())
    })
}
