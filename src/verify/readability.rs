//! Per-trace readability checks for rejection sampling, and the format and
//! language-consistency rewards used by GRPO (DeepSeek-R1's "language
//! consistency reward": the share of target-language words in the reasoning).
//!
//! A trace is judged on: format (one `<think>…</think>` with non-empty
//! reasoning and a non-empty answer after it), language mixing (share of the
//! prompt's script among the words of the reasoning), repetition (word
//! n-gram repetition ratio and the longest repeated word span), truncation
//! (`finish_reason == "length"`), token-length bounds, over-long paragraphs
//! and code blocks. All checks are linear in the trace length.

use std::collections::{HashMap, HashSet};

use foldhash::fast::FixedState;

use serde::{Deserialize, Serialize};

/// Thresholds for [`check_readability`]. Every field has a default (see its
/// doc), so a partial TOML/JSON table deserialises.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ReadabilityConfig {
    /// Minimum share of reasoning words in the prompt's script. Default 0.95.
    pub min_script_share: f64,
    /// Reasoning words needed before the language check applies. Default 20.
    pub min_words_for_language: usize,
    /// Word n-gram size for the repetition ratio. Default 4.
    pub ngram_size: usize,
    /// Maximum `1 - distinct/total` over word n-grams. Default 0.5.
    pub max_ngram_repeat_ratio: f64,
    /// n-grams needed before the ratio applies. Default 50.
    pub min_ngrams_for_repetition: usize,
    /// Longest word span allowed to occur twice. Default 120 words.
    pub max_repeated_span_words: usize,
    /// Fewest completion tokens accepted. Default 16.
    pub min_completion_tokens: usize,
    /// Most completion tokens accepted. Default 32768.
    pub max_completion_tokens: usize,
    /// Longest paragraph (chars between blank lines). Default 3000.
    pub max_paragraph_chars: usize,
    /// Reject traces containing a ``` code block (math data). Default true.
    pub reject_code_blocks: bool,
    /// The chat template already opened `<think>` in the prompt, so the
    /// generation holds only `</think>`. Default false.
    pub think_prefilled: bool,
}

impl Default for ReadabilityConfig {
    fn default() -> Self {
        ReadabilityConfig {
            min_script_share: 0.95,
            min_words_for_language: 20,
            ngram_size: 4,
            max_ngram_repeat_ratio: 0.5,
            min_ngrams_for_repetition: 50,
            max_repeated_span_words: 120,
            min_completion_tokens: 16,
            max_completion_tokens: 32_768,
            max_paragraph_chars: 3_000,
            reject_code_blocks: true,
            think_prefilled: false,
        }
    }
}

/// Why a trace is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadabilityIssue {
    /// Not exactly one `<think>…</think>`, or empty reasoning or answer.
    BadFormat,
    /// Too few reasoning words in the prompt's script.
    LanguageMixing,
    /// Repeated n-grams or a long repeated span (a generation loop).
    Repetition,
    /// Generation stopped at the token limit.
    Truncated,
    /// Fewer completion tokens than the minimum.
    TooShort,
    /// More completion tokens than the maximum.
    TooLong,
    /// A paragraph longer than the maximum.
    LongParagraph,
    /// A ``` code block in math reasoning.
    CodeBlock,
}

impl ReadabilityIssue {
    /// Every issue, in the order a trace's issues are listed.
    pub const ALL: [ReadabilityIssue; 8] = [
        ReadabilityIssue::BadFormat,
        ReadabilityIssue::LanguageMixing,
        ReadabilityIssue::Repetition,
        ReadabilityIssue::Truncated,
        ReadabilityIssue::TooShort,
        ReadabilityIssue::TooLong,
        ReadabilityIssue::LongParagraph,
        ReadabilityIssue::CodeBlock,
    ];

    /// Stable snake_case name, for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ReadabilityIssue::BadFormat => "bad_format",
            ReadabilityIssue::LanguageMixing => "language_mixing",
            ReadabilityIssue::Repetition => "repetition",
            ReadabilityIssue::Truncated => "truncated",
            ReadabilityIssue::TooShort => "too_short",
            ReadabilityIssue::TooLong => "too_long",
            ReadabilityIssue::LongParagraph => "long_paragraph",
            ReadabilityIssue::CodeBlock => "code_block",
        }
    }
}

/// One generated trace to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceInput<'a> {
    /// The user prompt (its script is the target language).
    pub prompt: &'a str,
    /// The generated text, with its think tags.
    pub generation: &'a str,
    /// The engine's finish reason (`"stop"`, `"length"`, …).
    pub finish_reason: &'a str,
    /// Tokens in the generation, when known (the length bounds are checked only then).
    pub completion_tokens: Option<usize>,
}

/// Writing systems told apart by the language check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Script {
    /// Latin letters.
    Latin,
    /// Chinese, Japanese and Korean characters.
    Cjk,
    /// Any other alphabet (Cyrillic, Greek, Arabic, …).
    Other,
}

/// Every issue found in `trace` under `config` (empty when it is clean).
pub fn check_readability(
    trace: &TraceInput<'_>,
    config: &ReadabilityConfig,
) -> Vec<ReadabilityIssue> {
    let mut issues = Vec::new();
    let parts = split_think(trace.generation, config.think_prefilled);
    if parts.is_none() {
        issues.push(ReadabilityIssue::BadFormat);
    }
    let reasoning = parts.map_or(trace.generation, |(r, _)| r);
    if trace.finish_reason == "length" {
        issues.push(ReadabilityIssue::Truncated);
    }
    if let Some(tokens) = trace.completion_tokens {
        if tokens < config.min_completion_tokens {
            issues.push(ReadabilityIssue::TooShort);
        }
        if tokens > config.max_completion_tokens {
            issues.push(ReadabilityIssue::TooLong);
        }
    }
    if mixes_language(trace.prompt, reasoning, config) {
        issues.push(ReadabilityIssue::LanguageMixing);
    }
    if is_repetitive(reasoning, config) {
        issues.push(ReadabilityIssue::Repetition);
    }
    if longest_paragraph_chars(reasoning) > config.max_paragraph_chars {
        issues.push(ReadabilityIssue::LongParagraph);
    }
    if config.reject_code_blocks && trace.generation.contains("```") {
        issues.push(ReadabilityIssue::CodeBlock);
    }
    issues
}

/// 1.0 when `generation` has exactly one `<think>…</think>` with non-empty
/// reasoning and a non-empty answer after it, else 0.0 (GRPO format reward).
pub fn format_reward(generation: &str, think_prefilled: bool) -> f64 {
    if split_think(generation, think_prefilled).is_some() {
        1.0
    } else {
        0.0
    }
}

/// Share (0..=1) of the reasoning's words written in the prompt's dominant
/// script; math (`$…$`, LaTeX commands) and one-letter words are ignored.
/// Returns 1.0 when either side has no words (nothing to judge).
pub fn language_consistency_reward(prompt: &str, reasoning: &str) -> f64 {
    let Some(target) = dominant_script(prompt) else {
        return 1.0;
    };
    script_share(reasoning, target).map_or(1.0, |(share, _)| share)
}

/// `(reasoning, answer)` when the format is right, else `None`.
fn split_think(generation: &str, think_prefilled: bool) -> Option<(&str, &str)> {
    let opens = generation.matches("<think>").count();
    let closes = generation.matches("</think>").count();
    let expected_opens = usize::from(!think_prefilled);
    if opens != expected_opens || closes != 1 {
        return None;
    }
    let close = generation.find("</think>")?;
    let start = generation
        .find("<think>")
        .map_or(0, |i| i + "<think>".len());
    if start > close {
        return None;
    }
    let reasoning = &generation[start..close];
    let answer = &generation[close + "</think>".len()..];
    let before = &generation[..generation.find("<think>").unwrap_or(0)];
    let ok = !reasoning.trim().is_empty() && !answer.trim().is_empty() && before.trim().is_empty();
    ok.then_some((reasoning, answer))
}

fn mixes_language(prompt: &str, reasoning: &str, config: &ReadabilityConfig) -> bool {
    let Some(target) = dominant_script(prompt) else {
        return false;
    };
    match script_share(reasoning, target) {
        Some((share, words)) => {
            words >= config.min_words_for_language && share < config.min_script_share
        }
        None => false,
    }
}

/// The script of most words of `text`, if it has words.
fn dominant_script(text: &str) -> Option<Script> {
    let mut counts = [0usize; 3];
    for_each_word(text, |s| counts[script_index(s)] += 1);
    let (best, &n) = counts.iter().enumerate().max_by_key(|&(_, n)| *n)?;
    (n > 0).then_some([Script::Latin, Script::Cjk, Script::Other][best])
}

/// (share of words in `target`, number of words), `None` without words.
fn script_share(text: &str, target: Script) -> Option<(f64, usize)> {
    let (mut hits, mut total) = (0usize, 0usize);
    for_each_word(text, |s| {
        total += 1;
        hits += usize::from(s == target);
    });
    (total > 0).then(|| (hits as f64 / total as f64, total))
}

fn script_index(s: Script) -> usize {
    match s {
        Script::Latin => 0,
        Script::Cjk => 1,
        Script::Other => 2,
    }
}

/// The script of a letter, `None` for non-letters.
pub fn script_of(c: char) -> Option<Script> {
    let cp = u32::from(c);
    let is_cjk = matches!(cp,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF | 0x20000..=0x2FA1F);
    if is_cjk {
        Some(Script::Cjk)
    } else if c.is_ascii_alphabetic() || (c.is_alphabetic() && (0xC0..=0x24F).contains(&cp)) {
        Some(Script::Latin)
    } else if c.is_alphabetic() {
        Some(Script::Other)
    } else {
        None
    }
}

/// Calls `f` with the script of each word: a CJK character is a word, a run
/// of letters of another script is a word (one-letter Latin runs, LaTeX
/// commands and `$…$` math are skipped).
fn for_each_word(text: &str, mut f: impl FnMut(Script)) {
    let mut in_math = false;
    let mut in_command = false;
    let mut run: Option<(Script, usize)> = None;
    for c in text.chars() {
        if in_command && c.is_ascii_alphabetic() {
            continue;
        }
        in_command = false;
        if c == '$' {
            in_math = !in_math;
        }
        if in_math || c == '$' || c == '\\' {
            flush_word(&mut run, &mut f);
            in_command = c == '\\';
            continue;
        }
        match script_of(c) {
            Some(Script::Cjk) => {
                flush_word(&mut run, &mut f);
                f(Script::Cjk);
            }
            Some(s) => match &mut run {
                Some((rs, len)) if *rs == s => *len += 1,
                _ => {
                    flush_word(&mut run, &mut f);
                    run = Some((s, 1));
                }
            },
            None => flush_word(&mut run, &mut f),
        }
    }
    flush_word(&mut run, &mut f);
}

/// Reports a finished run of letters (one-letter Latin runs are variables).
fn flush_word(run: &mut Option<(Script, usize)>, f: &mut impl FnMut(Script)) {
    if let Some((s, len)) = run.take() {
        if s != Script::Latin || len > 1 {
            f(s);
        }
    }
}

fn is_repetitive(text: &str, config: &ReadabilityConfig) -> bool {
    let ids = word_ids(text);
    let ratio_bad = ngram_repeat_ratio(&ids, config.ngram_size).is_some_and(|(ratio, total)| {
        total >= config.min_ngrams_for_repetition && ratio > config.max_ngram_repeat_ratio
    });
    // The longest repeated span is longer than the limit exactly when a span one word longer
    // than the limit repeats.
    ratio_bad || has_repeat_of_length(&ids, config.max_repeated_span_words.saturating_add(1))
}

/// Share of repeated word n-grams in `text`, `1 − distinct/total` in [0, 1) (0 when it has fewer than
/// `n` words): the measure behind open-r1's repetition penalty.
pub fn ngram_repetition(text: &str, n: usize) -> f64 {
    ngram_repeat_ratio(&word_ids(text), n).map_or(0.0, |(ratio, _)| ratio)
}

/// Words of `text` mapped to small integer ids; each CJK character is a
/// word of its own (those scripts do not separate words by spaces).
fn word_ids(text: &str) -> Vec<u32> {
    let mut vocab: HashMap<&str, u32, FixedState> = HashMap::default();
    let mut ids = Vec::new();
    let mut push = |word| {
        let next = u32::try_from(vocab.len()).unwrap_or(u32::MAX);
        ids.push(*vocab.entry(word).or_insert(next));
    };
    for chunk in text.split_whitespace() {
        let mut start = 0;
        for (i, c) in chunk.char_indices() {
            if script_of(c) == Some(Script::Cjk) {
                if start < i {
                    push(&chunk[start..i]);
                }
                push(&chunk[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        if start < chunk.len() {
            push(&chunk[start..]);
        }
    }
    ids
}

/// `(1 - distinct/total, total)` over word n-grams; `None` when `n == 0`
/// or the text is shorter than `n` words.
fn ngram_repeat_ratio(ids: &[u32], n: usize) -> Option<(f64, usize)> {
    if n == 0 || ids.len() < n {
        return None;
    }
    let total = ids.len() - n + 1;
    let mut distinct: HashSet<&[u32], FixedState> =
        HashSet::with_capacity_and_hasher(total, FixedState::default());
    distinct.extend(ids.windows(n));
    Some((1.0 - distinct.len() as f64 / total as f64, total))
}

/// Whether some span of `len` words occurs at least twice (rolling hashes, one linear pass).
fn has_repeat_of_length(ids: &[u32], len: usize) -> bool {
    const BASE: u64 = 1_000_003;
    if len == 0 || len > ids.len() {
        return len == 0;
    }
    let top = (1..len).fold(1u64, |acc, _| acc.wrapping_mul(BASE));
    let mut hash = ids[..len].iter().fold(0u64, |h, &w| {
        h.wrapping_mul(BASE).wrapping_add(u64::from(w) + 1)
    });
    let mut seen: HashSet<u64, FixedState> =
        HashSet::with_capacity_and_hasher(ids.len(), FixedState::default());
    seen.insert(hash);
    for i in len..ids.len() {
        let outgoing = (u64::from(ids[i - len]) + 1).wrapping_mul(top);
        hash = hash
            .wrapping_sub(outgoing)
            .wrapping_mul(BASE)
            .wrapping_add(u64::from(ids[i]) + 1);
        if !seen.insert(hash) {
            return true;
        }
    }
    false
}

/// Characters in the longest blank-line-separated paragraph.
fn longest_paragraph_chars(text: &str) -> usize {
    let mut longest = 0;
    let mut current = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            current = 0;
        } else {
            current += line.chars().count() + 1;
            longest = longest.max(current);
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_span_is_found() {
        let ids = word_ids("a b c d a b c d x");
        assert!(has_repeat_of_length(&ids, 4));
        assert!(!has_repeat_of_length(&ids, 5));
        assert!(!has_repeat_of_length(&word_ids("a b c"), 1));
    }

    #[test]
    fn scripts() {
        assert_eq!(script_of('中'), Some(Script::Cjk));
        assert_eq!(script_of('é'), Some(Script::Latin));
        assert_eq!(script_of('ж'), Some(Script::Other));
        assert_eq!(script_of('1'), None);
    }
}
