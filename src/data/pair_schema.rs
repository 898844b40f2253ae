//! Preference pairs as TRL's conversational preference format: `prompt` (the turns before the
//! reply), `chosen` and `rejected` (each a one-turn assistant list), as
//! `list<struct<role, content>>` columns that `DPOTrainer` reads as they are, plus where each
//! side came from (problem id, source, sample indices), why the rejected side was rejected, and
//! both sides' completion token counts.

use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray, StringArray, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::columns::BatchColumns;
use super::errors::Result;
use super::schema::{
    message_item_field, message_lists_array, read_message_lists, ArrowRow, RowKey,
};
use crate::model::Message;

/// One preference pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRow {
    /// The problem's id.
    pub id: String,
    /// The prompt set it came from.
    pub source: String,
    /// Which pair of the problem (0, 1, …): with `id`, the row's key.
    pub pair_index: u32,
    /// The turns before the reply (system and user).
    pub prompt: Vec<Message>,
    /// The preferred reply: an accepted trace.
    pub chosen: Vec<Message>,
    /// The dispreferred reply: a rejected trace of the same problem.
    pub rejected: Vec<Message>,
    /// The chosen trace's sample index.
    pub chosen_sample_index: u32,
    /// The rejected trace's sample index.
    pub rejected_sample_index: u32,
    /// Why the filter rejected the rejected trace.
    pub rejected_reasons: Vec<String>,
    /// The chosen trace's completion tokens, when known.
    pub chosen_tokens: Option<u32>,
    /// The rejected trace's completion tokens, when known.
    pub rejected_tokens: Option<u32>,
}

impl ArrowRow for PairRow {
    const KEY_COLUMNS: [&'static str; 2] = ["id", "pair_index"];

    fn schema() -> SchemaRef {
        let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
        let u32_field = |name: &str, nullable| Field::new(name, DataType::UInt32, nullable);
        let messages = |name: &str| Field::new(name, DataType::List(message_item_field()), false);
        let reason = Arc::new(Field::new("item", DataType::Utf8, true));
        Arc::new(Schema::new(vec![
            messages("prompt"),
            messages("chosen"),
            messages("rejected"),
            utf8("id"),
            utf8("source"),
            u32_field("pair_index", false),
            u32_field("chosen_sample_index", false),
            u32_field("rejected_sample_index", false),
            Field::new("rejected_reasons", DataType::List(reason), false),
            u32_field("chosen_tokens", true),
            u32_field("rejected_tokens", true),
        ]))
    }

    fn key(&self) -> RowKey {
        RowKey {
            problem_id: self.id.clone(),
            sample_index: self.pair_index,
        }
    }

    fn to_record_batch(rows: &[Self]) -> std::result::Result<RecordBatch, ArrowError> {
        let lists = |get: fn(&PairRow) -> &[Message]| {
            message_lists_array(&rows.iter().map(get).collect::<Vec<_>>())
        };
        let text = |get: fn(&PairRow) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(get)))
        };
        let count = |get: fn(&PairRow) -> u32| -> ArrayRef {
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(get)))
        };
        let tokens = |get: fn(&PairRow) -> Option<u32>| -> ArrayRef {
            Arc::new(UInt32Array::from_iter(rows.iter().map(get)))
        };
        let reasons = StringArray::from_iter_values(
            rows.iter()
                .flat_map(|r| r.rejected_reasons.iter().map(String::as_str)),
        );
        let offsets = OffsetBuffer::from_lengths(rows.iter().map(|r| r.rejected_reasons.len()));
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        RecordBatch::try_new(
            Self::schema(),
            vec![
                lists(|r| &r.prompt)?,
                lists(|r| &r.chosen)?,
                lists(|r| &r.rejected)?,
                text(|r| &r.id),
                text(|r| &r.source),
                count(|r| r.pair_index),
                count(|r| r.chosen_sample_index),
                count(|r| r.rejected_sample_index),
                Arc::new(ListArray::try_new(item, offsets, Arc::new(reasons), None)?),
                tokens(|r| r.chosen_tokens),
                tokens(|r| r.rejected_tokens),
            ],
        )
    }

    fn from_columns(columns: &BatchColumns<'_>) -> Result<Vec<Self>> {
        let prompts = read_message_lists(columns, "prompt")?;
        let chosen = read_message_lists(columns, "chosen")?;
        let rejected = read_message_lists(columns, "rejected")?;
        let ids = columns.required_strings("id")?;
        let sources = columns.required_strings("source")?;
        let pair_indices = columns.required_u32("pair_index")?;
        let chosen_samples = columns.required_u32("chosen_sample_index")?;
        let rejected_samples = columns.required_u32("rejected_sample_index")?;
        let reasons = columns.required_string_lists("rejected_reasons")?;
        let chosen_tokens = columns.nullable_u32("chosen_tokens")?;
        let rejected_tokens = columns.nullable_u32("rejected_tokens")?;
        let mut rows = Vec::with_capacity(ids.len());
        for (row, ((prompt, chosen), rejected)) in
            prompts.into_iter().zip(chosen).zip(rejected).enumerate()
        {
            rows.push(PairRow {
                id: ids[row].to_string(),
                source: sources[row].to_string(),
                pair_index: pair_indices[row],
                prompt,
                chosen,
                rejected,
                chosen_sample_index: chosen_samples[row],
                rejected_sample_index: rejected_samples[row],
                rejected_reasons: reasons[row].clone(),
                chosen_tokens: chosen_tokens[row],
                rejected_tokens: rejected_tokens[row],
            });
        }
        Ok(rows)
    }
}
