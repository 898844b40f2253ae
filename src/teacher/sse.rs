//! Reading a streamed completion: the server-sent events of `stream: true` with
//! `stream_options: {include_usage: true}`. Each `data:` event holds a chunk whose
//! `choices[].delta` carries pieces of `content` and `reasoning_content` (or `reasoning`), or
//! of `text` for the completions API, and at last a `finish_reason`; a final chunk carries the
//! `usage`; `data: [DONE]` ends the stream. The pieces are assembled into the same
//! [`ParsedResponse`] a whole JSON body gives.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde_json::Value;

use super::openai::ApiKind;
use super::response::{
    checked_response, finish_reason, join_reasoning, snippet, usage_counts, Choice, ParsedResponse,
};

/// Why a stream could not be read.
#[derive(Debug)]
pub(super) enum StreamError {
    /// Reading failed (the idle timeout included) or the stream ended early.
    Io(String),
    /// The server reported an error inside the stream.
    Server(String),
    /// An event is not a valid chunk.
    Malformed(String),
}

/// One choice being assembled.
#[derive(Debug, Default)]
struct Partial {
    content: String,
    reasoning: String,
    finish_reason: Option<String>,
}

/// Reads an event stream answering a request for `n` choices; `on_piece` is called once per
/// piece of generated text received (about one token each), so progress can be shown.
pub(super) fn read_stream(
    reader: impl BufRead,
    api: ApiKind,
    n: usize,
    mut on_piece: impl FnMut(),
) -> Result<ParsedResponse, StreamError> {
    let mut choices: BTreeMap<usize, Partial> = BTreeMap::new();
    let mut usage = None;
    let mut data = String::new();
    let mut done = false;
    for line in reader.lines() {
        let line = line.map_err(|e| StreamError::Io(describe_io(&e)))?;
        if line.is_empty() {
            // A blank line ends an event.
            if !data.is_empty() {
                done = take_event(&data, api, &mut choices, &mut usage, &mut on_piece)?;
                data.clear();
            }
            if done {
                break;
            }
            continue;
        }
        if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
        // Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we need.
    }
    if !done && !data.is_empty() {
        take_event(&data, api, &mut choices, &mut usage, &mut on_piece)?;
    }
    let (prompt_tokens, completion_tokens) =
        usage_counts(usage.as_ref()).map_err(StreamError::Malformed)?;
    let mut assembled = Vec::with_capacity(choices.len());
    for (index, partial) in choices {
        let Some(reason) = partial.finish_reason else {
            return Err(StreamError::Io(format!(
                "the stream ended before choice {index} finished"
            )));
        };
        let finish_reason =
            finish_reason(Some(&reason), &format!("choices[{index}].finish_reason"))
                .map_err(StreamError::Malformed)?;
        let reasoning = (!partial.reasoning.is_empty()).then_some(partial.reasoning.as_str());
        assembled.push(Choice {
            index,
            text: join_reasoning(&partial.content, reasoning),
            finish_reason,
        });
    }
    checked_response(assembled, n, prompt_tokens, completion_tokens).map_err(StreamError::Malformed)
}

/// Adds one event's chunk to the choices; `true` at `[DONE]`.
fn take_event(
    data: &str,
    api: ApiKind,
    choices: &mut BTreeMap<usize, Partial>,
    usage: &mut Option<Value>,
    on_piece: &mut impl FnMut(),
) -> Result<bool, StreamError> {
    if data.trim() == "[DONE]" {
        return Ok(true);
    }
    let chunk: Value = serde_json::from_str(data).map_err(|e| {
        StreamError::Malformed(format!("event is not JSON ({e}): {}", snippet(data)))
    })?;
    if let Some(error) = chunk.get("error") {
        return Err(StreamError::Server(snippet(&error.to_string())));
    }
    if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
        *usage = Some(u.clone());
    }
    let Some(list) = chunk.get("choices").and_then(Value::as_array) else {
        return Ok(false);
    };
    for (position, choice) in list.iter().enumerate() {
        let index = match choice.get("index") {
            None => position,
            Some(v) => v.as_u64().map(|i| i as usize).ok_or_else(|| {
                StreamError::Malformed(format!("`choices[{position}].index` is not an integer"))
            })?,
        };
        let partial = choices.entry(index).or_default();
        let piece = |value: Option<&Value>, name: &str| match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(StreamError::Malformed(format!(
                "`choices[{position}].{name}` is not a string"
            ))),
        };
        let mut pieces = 0;
        match api {
            ApiKind::Completions => {
                if let Some(text) = piece(choice.get("text"), "text")? {
                    partial.content.push_str(&text);
                    pieces += usize::from(!text.is_empty());
                }
            }
            ApiKind::Chat => {
                let delta = choice.get("delta");
                let field = |name: &str| delta.and_then(|d| d.get(name));
                if let Some(text) = piece(field("content"), "delta.content")? {
                    partial.content.push_str(&text);
                    pieces += usize::from(!text.is_empty());
                }
                let reasoning = match piece(field("reasoning_content"), "delta.reasoning_content")?
                {
                    Some(r) => Some(r),
                    None => piece(field("reasoning"), "delta.reasoning")?,
                };
                if let Some(text) = reasoning {
                    partial.reasoning.push_str(&text);
                    pieces += usize::from(!text.is_empty());
                }
            }
        }
        for _ in 0..pieces {
            on_piece();
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            partial.finish_reason = Some(reason.to_string());
        }
    }
    Ok(false)
}

/// An I/O error as shown: a read that timed out is the idle timeout.
fn describe_io(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            "the stream was idle past the idle timeout".to_string()
        }
        _ => format!("reading the stream failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_deltas_are_assembled_with_reasoning_and_usage() {
        let events = concat!(
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"Two \"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"plus two\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\\boxed{4}\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut pieces = 0;
        let parsed = read_stream(events.as_bytes(), ApiKind::Chat, 1, || pieces += 1).unwrap();
        assert_eq!(pieces, 3);
        assert_eq!(
            (parsed.prompt_tokens, parsed.completion_tokens),
            (Some(9), Some(3))
        );
        let samples = parsed.into_samples(0, 1, 0);
        assert_eq!(
            samples[0].text,
            "<think>\nTwo plus two\n</think>\n\n\\boxed{4}"
        );
    }

    #[test]
    fn an_unfinished_stream_and_an_error_event_are_reported() {
        let cut = "data: {\"choices\":[{\"index\":0,\"text\":\"abc\"}]}\n\n";
        let error = read_stream(cut.as_bytes(), ApiKind::Completions, 1, || {}).unwrap_err();
        assert!(
            matches!(&error, StreamError::Io(m) if m.contains("before choice 0")),
            "{error:?}"
        );
        let failed = "data: {\"error\":{\"message\":\"out of memory\"}}\n\n";
        let error = read_stream(failed.as_bytes(), ApiKind::Chat, 1, || {}).unwrap_err();
        assert!(
            matches!(&error, StreamError::Server(m) if m.contains("out of memory")),
            "{error:?}"
        );
    }
}
