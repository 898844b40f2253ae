//! Reading an OpenAI-compatible completion response: `choices` (chat `message.content` with
//! `reasoning_content`/`reasoning` joined back as `<think>…</think>`, or completions `text`),
//! `finish_reason` and `usage`, with an error that says what is wrong with a bad body.

use serde_json::Value;

use super::openai::ApiKind;
use super::TeacherSample;
use crate::model::FinishReason;

/// The first 300 characters of a body, on one line, for error messages.
pub(super) fn snippet(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(empty body)".to_string();
    }
    match one_line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// One choice of a response, with the reasoning joined in.
#[derive(Debug)]
pub(super) struct Choice {
    /// Its index among the request's `n`.
    pub(super) index: usize,
    /// The text, reasoning joined in (see [`join_reasoning`]).
    pub(super) text: String,
    /// Why it ended.
    pub(super) finish_reason: FinishReason,
}

/// A parsed response: its choices in index order and its usage.
#[derive(Debug)]
pub(super) struct ParsedResponse {
    choices: Vec<Choice>,
    /// `None` when the response has no usage.
    pub(super) prompt_tokens: Option<u32>,
    /// `None` when the response has no usage.
    pub(super) completion_tokens: Option<u32>,
}

impl ParsedResponse {
    /// The choice indices the response holds, in order.
    pub(super) fn indices(&self) -> Vec<usize> {
        self.choices.iter().map(|c| c.index).collect()
    }

    /// The samples of job `job_index` drawn with `seed`, choice `i` becoming sample
    /// `first_sample + i`; completion tokens apportioned by text length.
    pub(super) fn into_samples(
        self,
        job_index: usize,
        seed: u64,
        first_sample: u32,
    ) -> Vec<TeacherSample> {
        let lengths: Vec<u64> = self
            .choices
            .iter()
            .map(|c| c.text.chars().count() as u64)
            .collect();
        let shares: Vec<Option<u32>> = match self.completion_tokens {
            Some(total) => apportion(u64::from(total), &lengths)
                .into_iter()
                .map(|tokens| Some(u32::try_from(tokens).unwrap_or(u32::MAX)))
                .collect(),
            None => vec![None; lengths.len()],
        };
        self.choices
            .into_iter()
            .zip(shares)
            .map(|(choice, completion_tokens)| TeacherSample {
                job_index,
                sample_index: first_sample + choice.index as u32,
                text: choice.text,
                seed,
                finish_reason: choice.finish_reason,
                prompt_tokens: self.prompt_tokens,
                completion_tokens,
                endpoint: None,
                cost: None,
            })
            .collect()
    }
}

/// Splits `total` into parts proportional to `weights` (equal parts when all are 0), by the
/// largest-remainder method, so the parts sum to `total` exactly.
fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let sum: u64 = weights.iter().sum();
    let weights: Vec<u64> = if sum == 0 {
        vec![1; weights.len()]
    } else {
        weights.to_vec()
    };
    let sum = u128::from(weights.iter().sum::<u64>());
    let exact: Vec<(u64, u128)> = weights
        .iter()
        .map(|&w| {
            let scaled = u128::from(total) * u128::from(w);
            ((scaled / sum) as u64, scaled % sum)
        })
        .collect();
    let mut parts: Vec<u64> = exact.iter().map(|(part, _)| *part).collect();
    let mut left = total - parts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for index in order {
        if left == 0 {
            break;
        }
        parts[index] += 1;
        left -= 1;
    }
    parts
}

/// Reads a completion response body to a request for `n` choices; the error says what is
/// wrong with it. Fewer than `n` choices are accepted (many servers ignore `n` and answer one):
/// the caller asks again for the missing ones. Duplicate or out-of-range indices are errors.
pub(super) fn parse_response(text: &str, api: ApiKind, n: usize) -> Result<ParsedResponse, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {}", snippet(text)))?;
    let choices = value
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no `choices` array: {}", snippet(text)))?;
    let mut parsed = Vec::with_capacity(choices.len());
    for (position, choice) in choices.iter().enumerate() {
        parsed.push(parse_choice(choice, position, api)?);
    }
    // Some servers send no usage (or null): the counts are then unknown, not an error.
    let (prompt_tokens, completion_tokens) = usage_counts(value.get("usage"))?;
    checked_response(parsed, n, prompt_tokens, completion_tokens)
}

/// A response of `choices` to a request for `n`: sorted by index, which must be distinct and
/// below `n` (fewer than `n` is fine: many servers ignore `n`), and at least one.
pub(super) fn checked_response(
    mut choices: Vec<Choice>,
    n: usize,
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
) -> Result<ParsedResponse, String> {
    choices.sort_by_key(|c| c.index);
    let indices: Vec<usize> = choices.iter().map(|c| c.index).collect();
    let distinct_and_in_range =
        indices.windows(2).all(|w| w[0] < w[1]) && indices.last().is_some_and(|&last| last < n);
    if !distinct_and_in_range {
        return Err(format!(
            "expected up to {n} choices with distinct indices in 0..{n}, got indices {indices:?}"
        ));
    }
    Ok(ParsedResponse {
        choices,
        prompt_tokens,
        completion_tokens,
    })
}

/// The `prompt_tokens` and `completion_tokens` of a `usage` object (`None` when absent or null).
pub(super) fn usage_counts(usage: Option<&Value>) -> Result<(Option<u32>, Option<u32>), String> {
    let usage = usage.filter(|u| !u.is_null());
    let count = |field: &str| -> Result<Option<u32>, String> {
        match usage.and_then(|u| u.get(field)).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| format!("`usage.{field}` is not a count: {v}")),
        }
    };
    Ok((count("prompt_tokens")?, count("completion_tokens")?))
}

/// The generated text of a chat choice: `content`, after the reasoning as
/// `<think>\n{reasoning}\n</think>\n\n` when there is any.
pub(super) fn join_reasoning(content: &str, reasoning: Option<&str>) -> String {
    match reasoning {
        Some(r) if !r.is_empty() => format!("<think>\n{}\n</think>\n\n{content}", r.trim()),
        _ => content.to_string(),
    }
}

/// A `finish_reason` value; `field` names it in the error.
pub(super) fn finish_reason(value: Option<&str>, field: &str) -> Result<FinishReason, String> {
    match value {
        Some("stop") | Some("eos") => Ok(FinishReason::Stop),
        Some("length") => Ok(FinishReason::Length),
        other => Err(format!(
            "`{field}` is {} (expected \"stop\" or \"length\")",
            other.map_or("missing".to_string(), |o| format!("{o:?}"))
        )),
    }
}

/// Reads `choices[position]`.
fn parse_choice(choice: &Value, position: usize, api: ApiKind) -> Result<Choice, String> {
    let field = |name: &str| format!("choices[{position}].{name}");
    let index = match choice.get("index") {
        None => position,
        Some(v) => v
            .as_u64()
            .map(|i| i as usize)
            .ok_or_else(|| format!("`{}` is not an integer", field("index")))?,
    };
    let optional_text = |value: Option<&Value>, name: &str| match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{}` is not a string", field(name))),
    };
    let text = match api {
        ApiKind::Completions => optional_text(choice.get("text"), "text")?
            .ok_or_else(|| format!("`{}` is missing", field("text")))?,
        ApiKind::Chat => {
            let message = choice
                .get("message")
                .filter(|m| m.is_object())
                .ok_or_else(|| format!("`{}` is missing", field("message")))?;
            let content =
                optional_text(message.get("content"), "message.content")?.unwrap_or_default();
            let reasoning = match optional_text(
                message.get("reasoning_content"),
                "message.reasoning_content",
            )? {
                Some(r) => Some(r),
                None => optional_text(message.get("reasoning"), "message.reasoning")?,
            };
            join_reasoning(&content, reasoning.as_deref())
        }
    };
    let finish_reason = finish_reason(
        choice.get("finish_reason").and_then(Value::as_str),
        &field("finish_reason"),
    )?;
    Ok(Choice {
        index,
        text,
        finish_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_sums_exactly() {
        assert_eq!(apportion(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(apportion(7, &[0, 0]), vec![4, 3]);
        assert_eq!(apportion(100, &[30, 10]), vec![75, 25]);
        assert_eq!(apportion(5, &[5]), vec![5]);
    }

    #[test]
    fn reasoning_content_is_joined_and_bad_bodies_are_explained() {
        let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"42","reasoning_content":"think hard"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":9}}"#;
        let parsed = parse_response(body, ApiKind::Chat, 1).unwrap();
        assert_eq!(
            parsed.choices[0].text,
            "<think>\nthink hard\n</think>\n\n42"
        );
        let error = parse_response(r#"{"choices":[]}"#, ApiKind::Chat, 1).unwrap_err();
        assert!(error.contains("expected up to 1 choices"), "{error}");
        let two = r#"{"choices":[{"index":1,"text":"a","finish_reason":"stop"},{"index":1,"text":"b","finish_reason":"stop"}]}"#;
        let error = parse_response(two, ApiKind::Completions, 2).unwrap_err();
        assert!(error.contains("got indices [1, 1]"), "{error}");
        let one = r#"{"choices":[{"index":0,"text":"a","finish_reason":"stop"}]}"#;
        assert_eq!(
            parse_response(one, ApiKind::Completions, 4)
                .unwrap()
                .indices(),
            [0]
        );
        let error = parse_response("<html>", ApiKind::Chat, 1).unwrap_err();
        assert!(error.contains("not JSON"), "{error}");
    }
}
