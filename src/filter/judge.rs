//! Judging one trace on its own: is its final answer verified correct (text equivalence with
//! the gold answer, or the countdown checker for problems whose metadata says
//! `"verifier": "countdown"`), and is it readable?

use serde_json::Value;

use crate::data::schema::TraceRow;
use crate::data::synth::verify_countdown;
use crate::verify::{
    check_readability, extract_answer, verify_with, ReadabilityConfig, TraceInput, VerifyOptions,
};

use super::reasons::{NO_ANSWER, WRONG_ANSWER};

/// The verdict on one trace, before the cross-trace rules (dedup, contamination, policy).
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Whether the extracted answer is correct.
    pub verified: bool,
    /// The extracted final answer, if any.
    pub extracted_answer: Option<String>,
    /// `wrong_answer` / `no_answer`, then every readability issue.
    pub reasons: Vec<String>,
}

/// How a problem's answers are checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Checker {
    /// Mathematical equivalence with the gold answer ([`verify_with`]).
    Gold,
    /// [`verify_countdown`] with the problem's numbers and target.
    Countdown {
        /// The numbers to use, each exactly once.
        numbers: Vec<i64>,
        /// The value to reach.
        target: i64,
    },
}

impl Checker {
    /// The checker a row's metadata asks for; `Err` says which metadata field is unusable.
    pub fn for_row(row: &TraceRow) -> Result<Checker, String> {
        match row.metadata.get("verifier") {
            None => Ok(Checker::Gold),
            Some(Value::String(name)) if name == "countdown" => {
                let numbers = row
                    .metadata
                    .get("numbers")
                    .and_then(Value::as_array)
                    .and_then(|numbers| numbers.iter().map(Value::as_i64).collect())
                    .ok_or("countdown metadata needs `numbers`, an array of integers")?;
                let target = row
                    .metadata
                    .get("target")
                    .and_then(Value::as_i64)
                    .ok_or("countdown metadata needs `target`, an integer")?;
                Ok(Checker::Countdown { numbers, target })
            }
            Some(other) => Err(format!(
                "unknown `verifier` {other} (known: \"countdown\", or no verifier for gold-answer equivalence)"
            )),
        }
    }

    /// Whether `predicted` is a correct answer to `row`.
    fn accepts(&self, row: &TraceRow, predicted: &str, options: &VerifyOptions) -> bool {
        match self {
            Checker::Gold => verify_with(&row.answer, predicted, options),
            Checker::Countdown { numbers, target } => verify_countdown(predicted, numbers, *target),
        }
    }
}

/// Judges `row`: extracts its final answer, checks it with `checker`, and lists the
/// readability issues under `readability` (the problem text is the language reference).
pub fn judge(
    row: &TraceRow,
    checker: &Checker,
    readability: &ReadabilityConfig,
    options: &VerifyOptions,
) -> Judgement {
    let extracted = extract_answer(&row.generation).map(|found| found.answer);
    let verified = extracted
        .as_deref()
        .is_some_and(|answer| checker.accepts(row, answer, options));
    let mut reasons = Vec::new();
    match (&extracted, verified) {
        (None, _) => reasons.push(NO_ANSWER.to_string()),
        (Some(_), false) => reasons.push(WRONG_ANSWER.to_string()),
        (Some(_), true) => {}
    }
    let input = TraceInput {
        prompt: &row.problem,
        generation: &row.generation,
        finish_reason: row.finish_reason.as_str(),
        completion_tokens: row.completion_tokens as usize,
    };
    reasons.extend(
        check_readability(&input, readability)
            .into_iter()
            .map(|issue| issue.name().to_string()),
    );
    Judgement {
        verified,
        extracted_answer: extracted,
        reasons,
    }
}
