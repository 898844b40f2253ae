//! Answer verification and readability checks for rejection sampling
//! (`distill filter`) and GRPO rewards.
//!
//! This module owns three concerns:
//! * [`extract`]: pulling the final answer out of a generated trace
//!   (`\boxed{}`, `#### x`, `<answer>` tags, "the answer is x"), only from
//!   the text after `</think>`;
//! * [`math`]: deciding whether a predicted answer is mathematically
//!   equivalent to the gold answer (numbers, fractions, sets, tuples,
//!   intervals, matrices, symbolic expressions, text answers);
//! * [`readability`]: per-trace quality checks (format, language mixing,
//!   repetition, truncation, length bounds, paragraphs, code blocks) and the
//!   format / language-consistency rewards used by GRPO.
//!
//! Every function here is total: it never panics on arbitrary input and runs
//! in bounded time (inputs are capped, recursion depth is limited and
//! arithmetic is checked or done in floating point).

pub mod code;
pub mod extract;
pub mod grade;
pub mod math;
pub mod readability;

mod answer;
mod expr;
mod normalize;

pub use extract::{extract_answer, AnswerMarker, Extracted};
pub use grade::{grade, grade_with, Checker, Grade};
pub use math::{check, verify, verify_with, Match, Verdict, VerifyOptions};
pub use readability::{
    check_readability, format_reward, language_consistency_reward, ReadabilityConfig,
    ReadabilityIssue, TraceInput,
};
