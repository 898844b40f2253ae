//! Final-answer extraction from a generated trace.
//!
//! The answer is only looked for in the *answer region*: the text after the
//! last `</think>` when there is one, the whole text when the trace has no
//! think tags at all, and nothing when `<think>` was opened but never closed
//! (the model ran out of budget while reasoning).
//!
//! Markers, in order of preference (the first kind present wins, and within
//! a kind the last occurrence wins):
//! 1. `\boxed{…}` / `\fbox{…}` (nested braces, escaped `\{ \}`; also
//!    `\boxed 5` without braces);
//! 2. `<answer>…</answer>`;
//! 3. GSM8K `#### x`;
//! 4. "final answer: x" / "final answer is x";
//! 5. "the answer is x".

/// Longest boxed content (in bytes) that is scanned for its closing brace.
const MAX_BOXED_SCAN: usize = 8_000;
/// How many `\boxed` occurrences (from the last) are tried before giving up.
const MAX_BOXED_TRIES: usize = 16;

/// Which kind of marker the answer was found behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerMarker {
    /// `\boxed{…}` or `\boxed x`.
    Boxed,
    /// `\fbox{…}`.
    Fbox,
    /// `<answer>…</answer>` tags.
    AnswerTag,
    /// GSM8K style `#### x`.
    Hashes,
    /// "final answer: x" or "final answer is x".
    FinalAnswerPhrase,
    /// "the answer is x".
    AnswerIsPhrase,
}

impl AnswerMarker {
    /// Stable snake_case name, for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            AnswerMarker::Boxed => "boxed",
            AnswerMarker::Fbox => "fbox",
            AnswerMarker::AnswerTag => "answer_tag",
            AnswerMarker::Hashes => "hashes",
            AnswerMarker::FinalAnswerPhrase => "final_answer_phrase",
            AnswerMarker::AnswerIsPhrase => "answer_is_phrase",
        }
    }
}

/// An answer found in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The answer text, trimmed, without the marker.
    pub answer: String,
    /// The marker it was found behind.
    pub marker: AnswerMarker,
}

/// The part of `trace` an answer may come from: after the last `</think>`,
/// the whole trace when it has no think tags, `None` when `<think>` is open.
pub fn answer_region(trace: &str) -> Option<&str> {
    if let Some(end) = trace.rfind("</think>") {
        return Some(&trace[end + "</think>".len()..]);
    }
    if trace.contains("<think>") {
        return None;
    }
    Some(trace)
}

/// Extracts the final answer of `trace` (see the module doc for the rules).
pub fn extract_answer(trace: &str) -> Option<Extracted> {
    let region = answer_region(trace)?;
    last_boxed(region)
        .or_else(|| last_answer_tag(region))
        .or_else(|| last_hashes(region))
        .or_else(|| after_phrase(region, "final answer", AnswerMarker::FinalAnswerPhrase))
        .or_else(|| after_phrase(region, "answer is", AnswerMarker::AnswerIsPhrase))
        .filter(|e| !e.answer.is_empty())
}

/// The content of the last well-formed `\boxed` / `\fbox` in `text`.
pub fn last_boxed(text: &str) -> Option<Extracted> {
    let mut starts: Vec<(usize, &str, AnswerMarker)> = Vec::new();
    for (cmd, marker) in [
        ("\\boxed", AnswerMarker::Boxed),
        ("\\fbox", AnswerMarker::Fbox),
    ] {
        starts.extend(text.match_indices(cmd).map(|(i, c)| (i, c, marker)));
    }
    starts.sort_by_key(|s| std::cmp::Reverse(s.0));
    starts
        .into_iter()
        .take(MAX_BOXED_TRIES)
        .find_map(|(i, cmd, marker)| {
            boxed_argument(&text[i + cmd.len()..]).map(|answer| Extracted {
                answer: answer.trim().to_string(),
                marker,
            })
        })
}

/// The argument following a `\boxed` command: a balanced `{…}` group, or a
/// bare token after whitespace (`\boxed 5`).
fn boxed_argument(rest: &str) -> Option<&str> {
    if let Some(group) = rest.strip_prefix('{') {
        let end = matching_brace(group)?;
        return Some(&group[..end]);
    }
    let trimmed = rest.trim_start();
    if trimmed.len() == rest.len() {
        return None; // `\boxedfoo` is another command
    }
    let end = trimmed
        .find(|c: char| c.is_whitespace() || c == '$')
        .unwrap_or(trimmed.len());
    let token = trimmed[..end].trim_end_matches(['.', ',']);
    (!token.is_empty()).then_some(token)
}

/// Byte offset of the `}` closing a group whose `{` was just consumed.
/// A backslash escapes the next character, so `\{`, `\}` and `\\` are inert.
pub(crate) fn matching_brace(group: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut chars = group.char_indices();
    while let Some((i, c)) = chars.next() {
        if i > MAX_BOXED_SCAN {
            return None;
        }
        match c {
            '\\' => {
                chars.next();
            }
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Content of the last closed `<answer>…</answer>` pair.
fn last_answer_tag(text: &str) -> Option<Extracted> {
    let open = text.rfind("<answer>")?;
    let body = &text[open + "<answer>".len()..];
    let close = body.find("</answer>")?;
    Some(Extracted {
        answer: body[..close].trim().to_string(),
        marker: AnswerMarker::AnswerTag,
    })
}

/// The rest of the line after the last `####`.
fn last_hashes(text: &str) -> Option<Extracted> {
    let at = text.rfind("####")?;
    let line = text[at + 4..].lines().next().unwrap_or("");
    Some(Extracted {
        answer: clean_phrase_answer(line),
        marker: AnswerMarker::Hashes,
    })
}

/// The sentence after the last case-insensitive occurrence of `phrase`
/// (an optional `:` or `is` after it is skipped).
fn after_phrase(text: &str, phrase: &str, marker: AnswerMarker) -> Option<Extracted> {
    // ASCII lowercasing keeps byte offsets, so indices map back to `text`.
    let lower = text.to_ascii_lowercase();
    let at = lower.rfind(phrase)? + phrase.len();
    let rest = text[at..].trim_start();
    let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
    let rest = rest.strip_prefix("is ").unwrap_or(rest);
    Some(Extracted {
        answer: clean_phrase_answer(first_sentence(rest)),
        marker,
    })
}

/// Text up to the first newline or sentence-ending period (a `.` followed
/// by whitespace or the end, so `3.5` is kept whole).
fn first_sentence(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("");
    let bytes = line.as_bytes();
    let mut in_math = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'$' {
            in_math = !in_math;
        }
        let next_is_space = bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace());
        if b == b'.' && next_is_space && !in_math && i > 0 {
            return &line[..i];
        }
    }
    line
}

/// Trims whitespace, trailing punctuation and `$`/`**` wrappers.
fn clean_phrase_answer(text: &str) -> String {
    let mut s = text.trim();
    loop {
        let before = s.len();
        s = s.trim_end_matches(['.', ',', ';', '!']).trim();
        s = s.trim_matches('*').trim();
        if s.len() >= 2 && s.starts_with('$') && s.ends_with('$') {
            s = s[1..s.len() - 1].trim();
        }
        if s.len() == before {
            break;
        }
    }
    if let Some(inner) = last_boxed(s) {
        return inner.answer;
    }
    s.to_string()
}
