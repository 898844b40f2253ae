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

use std::path::{Path, PathBuf};

use arrow::array::Array;
use serde_json::{Map, Value};

use super::columns::{as_str_column, cell_to_json, for_each_batch, BatchColumns};
use super::errors::{DataError, Location, Result};
use super::hashing::sha256_hex;
use super::hub::{self, HubDatasetSpec};
use super::schema::read_message_lists;
use super::shards::{shard_paths, MANIFEST_FILE};
use super::sources::file_extension;
use crate::model::Message;

/// One conversation to train on.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The problem the conversation answers: rows with one group are held out together.
    pub group: String,
    /// Where the row came from, for messages: `FILE: line N`, `FILE: row N (0-based)` or, for
    /// accepted shards, `DIR: id=… sample=N`.
    pub origin: String,
    /// The turns, in order.
    pub messages: Vec<Message>,
}

/// Reads every conversation under `path`: a shard directory written by distill (it has a
/// `manifest.json`), a `.jsonl`/`.parquet` file, a directory of such files (read in name order),
/// or a Hub dataset split named `hf:ORG/NAME[:CONFIG][:SPLIT]` (see [`crate::data::hub`]).
pub fn load_conversations(path: &Path) -> Result<Vec<Conversation>> {
    if let Some(spec) = path.to_str().and_then(HubDatasetSpec::parse) {
        return read_files(&hub::resolve(&spec?)?.files);
    }
    if path.join(MANIFEST_FILE).is_file() {
        return read_shard_conversations(path);
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
    read_files(&files)
}

/// The conversations of a distill shard directory, sorted by (id, sample index). Only the
/// `id`, `sample_index` and `messages` columns are decoded (not the generation, reasoning and
/// answer copies of the text).
fn read_shard_conversations(dir: &Path) -> Result<Vec<Conversation>> {
    let mut keyed = Vec::new();
    for file in shard_paths(dir)? {
        for_each_batch(
            &file,
            Some(&["id", "sample_index", "messages"]),
            |columns| {
                let ids = columns.required_strings("id")?;
                let samples = columns.required_u32("sample_index")?;
                let messages = read_message_lists(columns, "messages")?;
                for ((id, sample), messages) in ids.into_iter().zip(samples).zip(messages) {
                    keyed.push(((id.to_string(), sample), messages));
                }
                Ok(())
            },
        )?;
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keyed
        .into_iter()
        .map(|((id, sample), messages)| Conversation {
            origin: format!("{}: id={id} sample={sample}", dir.display()),
            group: id,
            messages,
        })
        .collect())
}

/// The conversations of `.jsonl`/`.parquet` files, in order.
fn read_files(files: &[PathBuf]) -> Result<Vec<Conversation>> {
    let mut conversations = Vec::new();
    for file in files {
        let read = match file_extension(file).as_str() {
            "jsonl" | "json" => read_jsonl(file)?,
            "parquet" => read_parquet(file)?,
            _ => return Err(DataError::UnsupportedFileType { path: file.clone() }),
        };
        if read.is_empty() {
            return Err(DataError::EmptyFile { path: file.clone() });
        }
        conversations.extend(read);
    }
    Ok(conversations)
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

fn read_jsonl(path: &Path) -> Result<Vec<Conversation>> {
    let text = crate::data::sources::read_utf8_text(path)?;
    let mut conversations = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = Location::Line(index + 1);
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
        conversations.push(conversation(
            format!("{}: {location}", path.display()),
            json_id(&record),
            messages,
            |m| invalid("messages", m),
        )?);
    }
    Ok(conversations)
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

fn read_parquet(path: &Path) -> Result<Vec<Conversation>> {
    let mut conversations = Vec::new();
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
            conversations.push(conversation(
                format!("{}: {}", path.display(), columns.location(row)),
                id,
                messages,
                |m| columns.invalid("messages", row, m),
            )?);
        }
        Ok(())
    })?;
    Ok(conversations)
}
