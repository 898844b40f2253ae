//! The trace row schema: [`TraceRow`] (what `distill generate` writes) and [`FilteredRow`]
//! (what `distill filter` writes: the same columns plus its verdict), their Arrow schemas and
//! conversion to and from Arrow [`RecordBatch`]es through the [`ArrowRow`] trait.
//!
//! Columns follow the conventions of R1 trace sets (OpenR1-Math-220k) and TRL: a `messages`
//! column of `{role, content}` structs holds the conversation an SFT trainer consumes.
//! `created_at` is an RFC 3339 UTC string (`2026-11-21T10:50:55Z`): readable as-is by pandas,
//! DuckDB and HF datasets without time-zone or unit surprises. `metadata` is a JSON object
//! serialised to a string, so arbitrary per-problem fields survive every tool. The full table
//! is in `datasets/SCHEMA.md`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, ListArray, StringArray, StructArray, UInt32Array,
    UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};

use super::columns::{as_str_column, BatchColumns};
use super::errors::{DataError, Result};

/// The instruction appended to every problem in the user turn (DeepSeek-R1's recommended one).
pub const DEFAULT_INSTRUCTION: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";

/// The user turn for `problem`: the problem, a blank line, then [`DEFAULT_INSTRUCTION`].
pub fn user_turn(problem: &str) -> String {
    format!("{problem}\n\n{DEFAULT_INSTRUCTION}")
}

pub use crate::model::{FinishReason, Message};

/// The resume key of a row: one sample of one problem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    /// [`TraceRow::id`].
    pub problem_id: String,
    /// [`TraceRow::sample_index`].
    pub sample_index: u32,
}

/// Splits a generation into (reasoning, final). The reasoning is the text between an optional
/// leading `<think>` (the DeepSeek-R1 template opens it in the prompt) and the first
/// `</think>`, trimmed; the final is the trimmed text after it. Without `</think>` (an
/// unfinished thought, e.g. `finish_reason = length`) everything is reasoning and final is empty.
pub fn split_generation(generation: &str) -> (String, String) {
    let body = generation.trim_start();
    let body = body.strip_prefix("<think>").unwrap_or(body);
    match body.split_once("</think>") {
        Some((reasoning, answer)) => (reasoning.trim().to_string(), answer.trim().to_string()),
        None => (body.trim().to_string(), String::new()),
    }
}

/// Formats a time as RFC 3339 UTC with second precision, e.g. `2026-11-21T10:50:55Z`.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    // Civil-from-days (proleptic Gregorian), H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// One teacher sample of one problem: a row of a `distill generate` shard.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Problem id ([`crate::data::sources::Problem::id`]).
    pub id: String,
    /// Prompt-set name.
    pub source: String,
    /// The problem text.
    pub problem: String,
    /// The gold answer.
    pub answer: String,
    /// The exact prompt string given to the teacher (chat template applied).
    pub prompt: String,
    /// The conversation for SFT: user turn (problem + instruction), assistant turn (generation).
    pub messages: Vec<Message>,
    /// The raw generated text, including `<think>…</think>`.
    pub generation: String,
    /// The text inside `<think>…</think>` (see [`split_generation`]).
    pub reasoning: String,
    /// The text after `</think>` (column `final`).
    pub final_text: String,
    /// Teacher model name.
    pub teacher: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus sampling threshold.
    pub top_p: f64,
    /// Sampling seed of this sample.
    pub seed: u64,
    /// Which sample of this problem (0-based).
    pub sample_index: u32,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Prompt length in tokens; `None` (null) when an endpoint reported no usage and no
    /// tokenizer was given to count it.
    pub prompt_tokens: Option<u32>,
    /// Generation length in tokens; `None` (null) as for `prompt_tokens`.
    pub completion_tokens: Option<u32>,
    /// When the sample was generated, RFC 3339 UTC (see [`rfc3339_utc`]).
    pub created_at: String,
    /// Free-form metadata (stored as a JSON object string).
    pub metadata: Map<String, Value>,
    /// The endpoint that served the sample (its URL without credentials); `None` (null) for a
    /// local teacher and in files written before the column existed.
    pub teacher_endpoint: Option<String>,
    /// What the sample cost at its endpoint's prices (completion tokens plus its share of the
    /// request's prompt tokens); `None` (null) without prices or token counts.
    pub cost: Option<f64>,
    /// The sampling round that drew it (`--until-verified` samples a problem in rounds; a fixed
    /// `-n` run is round 0); `None` (null) in files written before the column existed.
    pub round: Option<u32>,
}

/// A row type stored in Parquet shards: its Arrow schema, its resume key and conversions.
pub trait ArrowRow: Sized {
    /// The columns of the resume key ([`ArrowRow::key`]): a string and a `u32`.
    const KEY_COLUMNS: [&'static str; 2] = ["id", "sample_index"];
    /// The Arrow schema of a batch of these rows.
    fn schema() -> SchemaRef;
    /// The resume key (problem id, sample index).
    fn key(&self) -> RowKey;
    /// Converts rows to a batch with [`ArrowRow::schema`].
    fn to_record_batch(rows: &[Self]) -> std::result::Result<RecordBatch, ArrowError>;
    /// Reads rows from a batch of a file; extra columns are ignored, missing or mistyped
    /// ones are errors naming the file, row and column.
    fn from_columns(columns: &BatchColumns<'_>) -> Result<Vec<Self>>;
}

/// The `{role, content}` struct fields of a message.
fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ])
}

/// The list item field of the `messages` column.
pub(crate) fn message_item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(message_fields()), true))
}

/// The fields of [`TraceRow`], in column order.
fn trace_fields() -> Vec<Field> {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    vec![
        utf8("id"),
        utf8("source"),
        utf8("problem"),
        utf8("answer"),
        utf8("prompt"),
        Field::new("messages", DataType::List(message_item_field()), false),
        utf8("generation"),
        utf8("reasoning"),
        utf8("final"),
        utf8("teacher"),
        Field::new("temperature", DataType::Float64, false),
        Field::new("top_p", DataType::Float64, false),
        Field::new("seed", DataType::UInt64, false),
        Field::new("sample_index", DataType::UInt32, false),
        utf8("finish_reason"),
        Field::new("prompt_tokens", DataType::UInt32, true),
        Field::new("completion_tokens", DataType::UInt32, true),
        utf8("created_at"),
        utf8("metadata"),
        Field::new("teacher_endpoint", DataType::Utf8, true),
        Field::new("cost", DataType::Float64, true),
        Field::new("round", DataType::UInt32, true),
    ]
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// A `list<struct<role, content>>` column with one list of messages per row.
pub(crate) fn message_lists_array(
    lists: &[&[Message]],
) -> std::result::Result<ArrayRef, ArrowError> {
    let all = || lists.iter().flat_map(|list| list.iter());
    let roles = strings(all().map(|m| m.role.as_str()));
    let contents = strings(all().map(|m| m.content.as_str()));
    let items = StructArray::try_new(message_fields(), vec![roles, contents], None)?;
    let offsets = OffsetBuffer::from_lengths(lists.iter().map(|list| list.len()));
    Ok(Arc::new(ListArray::try_new(
        message_item_field(),
        offsets,
        Arc::new(items),
        None,
    )?))
}

/// The arrays of the trace columns, in [`trace_fields`] order.
fn trace_arrays(rows: &[&TraceRow]) -> std::result::Result<Vec<ArrayRef>, ArrowError> {
    let text = |get: fn(&TraceRow) -> &str| strings(rows.iter().map(|row| get(row)));
    let metadata: Vec<String> = rows
        .iter()
        .map(|row| Value::Object(row.metadata.clone()).to_string())
        .collect();
    Ok(vec![
        text(|r| &r.id),
        text(|r| &r.source),
        text(|r| &r.problem),
        text(|r| &r.answer),
        text(|r| &r.prompt),
        message_lists_array(
            &rows
                .iter()
                .map(|r| r.messages.as_slice())
                .collect::<Vec<_>>(),
        )?,
        text(|r| &r.generation),
        text(|r| &r.reasoning),
        text(|r| &r.final_text),
        text(|r| &r.teacher),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.temperature),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.top_p))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.seed))),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.sample_index),
        )),
        text(|r| r.finish_reason.as_str()),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.prompt_tokens))),
        Arc::new(UInt32Array::from_iter(
            rows.iter().map(|r| r.completion_tokens),
        )),
        text(|r| &r.created_at),
        strings(metadata.iter().map(String::as_str)),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.teacher_endpoint.as_deref())
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.cost))),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.round))),
    ])
}

/// Reads the `messages` column: per row, its list of messages.
fn read_messages(columns: &BatchColumns<'_>) -> Result<Vec<Vec<Message>>> {
    read_message_lists(columns, "messages")
}

/// Reads column `name` of type `list<struct<role: string, content: string>>`: per row, its list of
/// messages (extra struct fields are ignored).
pub(crate) fn read_message_lists(
    columns: &BatchColumns<'_>,
    name: &str,
) -> Result<Vec<Vec<Message>>> {
    let array = columns.column(name)?;
    let expected = "list<struct<role: string, content: string>>";
    let list = array
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| columns.wrong_type(name, expected, array.data_type()))?;
    let mut rows = Vec::with_capacity(list.len());
    for index in 0..list.len() {
        if list.is_null(index) {
            return Err(columns.null_error(name, index));
        }
        let items = list.value(index);
        let items = items
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| columns.wrong_type(name, expected, array.data_type()))?;
        let field = |field_name: &str| {
            items
                .column_by_name(field_name)
                .and_then(as_str_column)
                .ok_or_else(|| columns.wrong_type(name, expected, array.data_type()))
        };
        let (roles, contents) = (field("role")?, field("content")?);
        let mut messages = Vec::with_capacity(items.len());
        for item in 0..items.len() {
            let missing = || {
                columns.invalid(
                    name,
                    index,
                    format!("message {item} has a null role or content"),
                )
            };
            messages.push(Message {
                role: roles.get(item).ok_or_else(missing)?.to_string(),
                content: contents.get(item).ok_or_else(missing)?.to_string(),
            });
        }
        rows.push(messages);
    }
    Ok(rows)
}

impl ArrowRow for TraceRow {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(trace_fields()))
    }

    fn key(&self) -> RowKey {
        RowKey {
            problem_id: self.id.clone(),
            sample_index: self.sample_index,
        }
    }

    fn to_record_batch(rows: &[Self]) -> std::result::Result<RecordBatch, ArrowError> {
        let rows: Vec<&TraceRow> = rows.iter().collect();
        RecordBatch::try_new(Self::schema(), trace_arrays(&rows)?)
    }

    fn from_columns(columns: &BatchColumns<'_>) -> Result<Vec<Self>> {
        let text = |name: &str| columns.required_strings(name);
        let (id, source, problem, answer) = (
            text("id")?,
            text("source")?,
            text("problem")?,
            text("answer")?,
        );
        let (prompt, generation, reasoning) =
            (text("prompt")?, text("generation")?, text("reasoning")?);
        let (final_text, teacher, finish_reason) =
            (text("final")?, text("teacher")?, text("finish_reason")?);
        let (created_at, metadata) = (text("created_at")?, text("metadata")?);
        let messages = read_messages(columns)?;
        let temperature = columns.required_f64("temperature")?;
        let top_p = columns.required_f64("top_p")?;
        let seed = columns.required_u64("seed")?;
        let sample_index = columns.required_u32("sample_index")?;
        let prompt_tokens = columns.nullable_u32("prompt_tokens")?;
        let completion_tokens = columns.nullable_u32("completion_tokens")?;
        let teacher_endpoint = optional_strings(columns, "teacher_endpoint")?;
        let cost = optional_f64(columns, "cost")?;
        let round = match columns.get("round") {
            Some(_) => columns.nullable_u32("round")?,
            None => vec![None; columns.num_rows()],
        };
        let mut rows = Vec::with_capacity(columns.num_rows());
        for (index, messages) in messages.into_iter().enumerate() {
            let finish_reason = parse_finish_reason(columns, index, finish_reason[index])?;
            let metadata = parse_metadata(columns, index, metadata[index])?;
            rows.push(TraceRow {
                id: id[index].to_string(),
                source: source[index].to_string(),
                problem: problem[index].to_string(),
                answer: answer[index].to_string(),
                prompt: prompt[index].to_string(),
                messages,
                generation: generation[index].to_string(),
                reasoning: reasoning[index].to_string(),
                final_text: final_text[index].to_string(),
                teacher: teacher[index].to_string(),
                temperature: temperature[index],
                top_p: top_p[index],
                seed: seed[index],
                sample_index: sample_index[index],
                finish_reason,
                prompt_tokens: prompt_tokens[index],
                completion_tokens: completion_tokens[index],
                created_at: created_at[index].to_string(),
                metadata,
                teacher_endpoint: teacher_endpoint[index].clone(),
                cost: cost[index],
                round: round[index],
            });
        }
        Ok(rows)
    }
}

/// Column `name` of nullable strings, all `None` when the file has no such column (written
/// before it existed).
fn optional_strings(columns: &BatchColumns<'_>, name: &str) -> Result<Vec<Option<String>>> {
    if columns.get(name).is_none() {
        return Ok(vec![None; columns.num_rows()]);
    }
    let column = columns.strings(name)?;
    Ok((0..columns.num_rows())
        .map(|index| column.get(index).map(str::to_string))
        .collect())
}

/// Column `name` of nullable `Float64`s, all `None` when the file has no such column.
fn optional_f64(columns: &BatchColumns<'_>, name: &str) -> Result<Vec<Option<f64>>> {
    let Some(array) = columns.get(name) else {
        return Ok(vec![None; columns.num_rows()]);
    };
    let values = array
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| columns.wrong_type(name, "double", array.data_type()))?;
    Ok(values.iter().collect())
}

/// The columns [`TraceRow::judged_from_columns`] reads.
pub const JUDGED_COLUMNS: [&str; 13] = [
    "id",
    "source",
    "problem",
    "answer",
    "generation",
    "teacher",
    "temperature",
    "top_p",
    "sample_index",
    "finish_reason",
    "completion_tokens",
    "metadata",
    "cost",
];

impl TraceRow {
    /// Rows of a batch read with only [`JUDGED_COLUMNS`] — what judging and reporting a trace
    /// need — with the other fields left empty (`prompt`, `messages`, `reasoning`,
    /// `final_text`, `created_at`; `seed`, `prompt_tokens`, `teacher_endpoint` and `round`
    /// zero / `None`). Decoding skips the copies of
    /// the text in `messages` and `reasoning`.
    pub fn judged_from_columns(columns: &BatchColumns<'_>) -> Result<Vec<Self>> {
        let text = |name: &str| columns.required_strings(name);
        let (id, source, problem, answer) = (
            text("id")?,
            text("source")?,
            text("problem")?,
            text("answer")?,
        );
        let (generation, teacher, finish_reason, metadata) = (
            text("generation")?,
            text("teacher")?,
            text("finish_reason")?,
            text("metadata")?,
        );
        let temperature = columns.required_f64("temperature")?;
        let top_p = columns.required_f64("top_p")?;
        let sample_index = columns.required_u32("sample_index")?;
        let completion_tokens = columns.nullable_u32("completion_tokens")?;
        let cost = optional_f64(columns, "cost")?;
        (0..columns.num_rows())
            .map(|index| {
                Ok(TraceRow {
                    id: id[index].to_string(),
                    source: source[index].to_string(),
                    problem: problem[index].to_string(),
                    answer: answer[index].to_string(),
                    prompt: String::new(),
                    messages: Vec::new(),
                    generation: generation[index].to_string(),
                    reasoning: String::new(),
                    final_text: String::new(),
                    teacher: teacher[index].to_string(),
                    temperature: temperature[index],
                    top_p: top_p[index],
                    seed: 0,
                    sample_index: sample_index[index],
                    finish_reason: parse_finish_reason(columns, index, finish_reason[index])?,
                    prompt_tokens: None,
                    completion_tokens: completion_tokens[index],
                    created_at: String::new(),
                    metadata: parse_metadata(columns, index, metadata[index])?,
                    teacher_endpoint: None,
                    cost: cost[index],
                    round: None,
                })
            })
            .collect()
    }
}

/// The `finish_reason` cell `text` of row `index`.
fn parse_finish_reason(
    columns: &BatchColumns<'_>,
    index: usize,
    text: &str,
) -> Result<FinishReason> {
    FinishReason::parse(text).ok_or_else(|| {
        columns.invalid(
            "finish_reason",
            index,
            format!("`{text}` is not `stop` or `length`"),
        )
    })
}

/// The `metadata` cell `text` of row `index`: a JSON object string.
fn parse_metadata(
    columns: &BatchColumns<'_>,
    index: usize,
    text: &str,
) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(columns.invalid("metadata", index, "not a JSON object string")),
    }
}

/// A trace with the filter stage's verdict: a row of an accepted or rejected shard of
/// `distill filter`. Its columns are all of [`TraceRow`]'s, in the same order, then
/// `verified`, `extracted_answer` and `reject_reasons`; so a filtered shard can also be read
/// as plain [`TraceRow`]s. A later stage adding columns adds fields here the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct FilteredRow {
    /// The trace as generated.
    pub trace: TraceRow,
    /// Whether the extracted answer matched the gold answer.
    pub verified: bool,
    /// The answer found in the generation (last `\boxed{}`), null when none.
    pub extracted_answer: Option<String>,
    /// Why the row was rejected (empty for accepted rows), e.g. `wrong_answer`, `no_think`.
    pub reject_reasons: Vec<String>,
}

impl ArrowRow for FilteredRow {
    fn schema() -> SchemaRef {
        let mut fields = trace_fields();
        fields.push(Field::new("verified", DataType::Boolean, false));
        fields.push(Field::new("extracted_answer", DataType::Utf8, true));
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        fields.push(Field::new("reject_reasons", DataType::List(item), false));
        Arc::new(Schema::new(fields))
    }

    fn key(&self) -> RowKey {
        self.trace.key()
    }

    fn to_record_batch(rows: &[Self]) -> std::result::Result<RecordBatch, ArrowError> {
        let traces: Vec<&TraceRow> = rows.iter().map(|row| &row.trace).collect();
        let mut arrays = trace_arrays(&traces)?;
        arrays.push(Arc::new(BooleanArray::from(
            rows.iter().map(|row| row.verified).collect::<Vec<_>>(),
        )));
        arrays.push(Arc::new(StringArray::from(
            rows.iter()
                .map(|row| row.extracted_answer.as_deref())
                .collect::<Vec<_>>(),
        )));
        let reasons = strings(
            rows.iter()
                .flat_map(|r| r.reject_reasons.iter().map(String::as_str)),
        );
        let offsets = OffsetBuffer::from_lengths(rows.iter().map(|row| row.reject_reasons.len()));
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        arrays.push(Arc::new(ListArray::try_new(item, offsets, reasons, None)?));
        RecordBatch::try_new(Self::schema(), arrays)
    }

    fn from_columns(columns: &BatchColumns<'_>) -> Result<Vec<Self>> {
        let traces = TraceRow::from_columns(columns)?;
        let verified = columns.required_bool("verified")?;
        let extracted = columns.strings("extracted_answer")?;
        let reasons = columns.required_string_lists("reject_reasons")?;
        Ok(traces
            .into_iter()
            .zip(verified)
            .zip(reasons)
            .enumerate()
            .map(|(index, ((trace, verified), reject_reasons))| FilteredRow {
                trace,
                verified,
                extracted_answer: extracted.get(index).map(str::to_string),
                reject_reasons,
            })
            .collect())
    }
}

/// Converts rows to a batch, reporting failures against `path` (the file being written).
pub fn rows_to_batch<R: ArrowRow>(rows: &[R], path: &std::path::Path) -> Result<RecordBatch> {
    R::to_record_batch(rows).map_err(|source| DataError::Arrow {
        path: path.to_path_buf(),
        cause: source,
    })
}
