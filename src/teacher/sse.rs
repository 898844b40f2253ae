//! Reading a streamed completion: the server-sent events of `stream: true` with
//! `stream_options: {include_usage: true}`. Each `data:` event holds a chunk whose
//! `choices[].delta` carries pieces of `content` and `reasoning_content` (or `reasoning`), or
//! of `text` for the completions API, and at last a `finish_reason`; a final chunk carries the
//! `usage`; `data: [DONE]` ends the stream. The pieces are assembled into the same
//! [`ParsedResponse`] a whole JSON body gives.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::BufRead;

use serde::Deserialize;
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

/// One streamed chunk: the fields read, borrowed from the event's text where possible (a
/// typed read costs a fraction of building a `serde_json::Value` per token).
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// One choice of a chunk.
#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    /// The completions API's piece.
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

/// A chat choice's piece.
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
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
    let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|e| {
        StreamError::Malformed(format!(
            "event is not a completion chunk ({e}): {}",
            snippet(data)
        ))
    })?;
    if let Some(error) = chunk.error {
        return Err(StreamError::Server(snippet(&error.to_string())));
    }
    if let Some(u) = chunk.usage.filter(|u| !u.is_null()) {
        *usage = Some(u);
    }
    for (position, choice) in chunk.choices.into_iter().enumerate() {
        let partial = choices.entry(choice.index.unwrap_or(position)).or_default();
        let mut pieces = 0;
        let mut add = |target: &mut String, piece: Option<Cow<'_, str>>| {
            if let Some(piece) = piece.filter(|p| !p.is_empty()) {
                target.push_str(&piece);
                pieces += 1;
            }
        };
        match api {
            ApiKind::Completions => add(&mut partial.content, choice.text),
            ApiKind::Chat => {
                if let Some(delta) = choice.delta {
                    add(&mut partial.content, delta.content);
                    add(
                        &mut partial.reasoning,
                        delta.reasoning_content.or(delta.reasoning),
                    );
                }
            }
        }
        for _ in 0..pieces {
            on_piece();
        }
        if let Some(reason) = choice.finish_reason {
            partial.finish_reason = Some(reason.into_owned());
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
