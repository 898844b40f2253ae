//! Judging one trace on its own: is its final answer verified correct (text equivalence with
//! the gold answer, or the countdown checker for problems whose metadata says
//! `"verifier": "countdown"`, or — `"verifier": "code_tests"` — its program passing every test
//! in the sandbox), and is it readable?

use crate::data::schema::TraceRow;
use crate::verify::code::CodeGrade;
pub use crate::verify::grade::Checker;
use crate::verify::grade::{grade_with, Grade};
use crate::verify::{
    check_readability, ReadabilityConfig, ReadabilityIssue, TraceInput, VerifyOptions,
};

use super::reasons::{NO_ANSWER, WRONG_ANSWER};

/// The verdict on one trace, before the cross-trace rules (dedup, contamination, policy).
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Whether the extracted answer is correct.
    pub verified: bool,
    /// The extracted final answer (for code problems: the program), if any.
    pub extracted_answer: Option<String>,
    /// For code problems: tests passed, tests run and the verdict.
    pub code: Option<CodeGrade>,
    /// `wrong_answer` / `no_answer` (for code problems: the code verdict, e.g. `tests_failed`),
    /// then every readability issue (code blocks are expected in code answers, not an issue).
    pub reasons: Vec<String>,
}

/// Judges `row`: extracts its final answer, checks it with `checker`, and lists the
/// readability issues under `readability` (the problem text is the language reference).
pub fn judge(
    row: &TraceRow,
    checker: &Checker,
    readability: &ReadabilityConfig,
    options: &VerifyOptions,
) -> Judgement {
    let Grade {
        answer: extracted,
        correct: verified,
        code,
    } = grade_with(checker, &row.answer, &row.generation, options);
    let mut reasons = Vec::new();
    match (&code, &extracted, verified) {
        (_, _, true) => {}
        (Some(code), _, false) => reasons.push(code.verdict.name().to_string()),
        (None, None, false) => reasons.push(NO_ANSWER.to_string()),
        (None, Some(_), false) => reasons.push(WRONG_ANSWER.to_string()),
    }
    let input = TraceInput {
        prompt: &row.problem,
        generation: &row.generation,
        finish_reason: row.finish_reason.as_str(),
        completion_tokens: row.completion_tokens.map(|t| t as usize),
    };
    reasons.extend(
        check_readability(&input, readability)
            .into_iter()
            .filter(|issue| code.is_none() || *issue != ReadabilityIssue::CodeBlock)
            .map(|issue| issue.name().to_string()),
    );
    Judgement {
        verified,
        extracted_answer: extracted,
        code,
        reasons,
    }
}
