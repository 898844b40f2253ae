//! Grading one completion against its problem: the answer is extracted from the trace and checked
//! against the gold answer — or, for countdown puzzles (metadata `"verifier": "countdown"`), by
//! evaluating the expression with the puzzle's numbers.

use serde_json::{Map, Value};

use super::extract::extract_answer;
use super::math::{verify_with, VerifyOptions};

/// How a problem's answers are checked, chosen by its metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum Checker {
    /// Mathematical equivalence with the gold answer.
    Gold,
    /// The countdown checker with the problem's numbers and target.
    Countdown {
        /// The numbers to use, each exactly once.
        numbers: Vec<i64>,
        /// The value to reach.
        target: i64,
    },
}

impl Checker {
    /// The checker `metadata` asks for; `Err` says which metadata field is unusable.
    pub fn for_metadata(metadata: &Map<String, Value>) -> Result<Checker, String> {
        match metadata.get("verifier") {
            None => Ok(Checker::Gold),
            Some(Value::String(name)) if name == "countdown" => {
                let numbers = metadata
                    .get("numbers")
                    .and_then(Value::as_array)
                    .and_then(|numbers| numbers.iter().map(Value::as_i64).collect())
                    .ok_or("countdown metadata needs `numbers`, an array of integers")?;
                let target = metadata
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

    /// Whether `predicted` answers the problem whose gold answer is `gold`.
    pub fn accepts(&self, gold: &str, predicted: &str, options: &VerifyOptions) -> bool {
        match self {
            Checker::Gold => verify_with(gold, predicted, options),
            Checker::Countdown { numbers, target } => {
                crate::data::synth::verify_countdown(predicted, numbers, *target)
            }
        }
    }
}

/// The verdict on one completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grade {
    /// The extracted final answer, when the trace has one.
    pub answer: Option<String>,
    /// Whether it is verified correct.
    pub correct: bool,
}

/// Grades `trace` (a full `<think>…</think>answer` text, or an answer alone) with `checker`.
pub fn grade_with(checker: &Checker, gold: &str, trace: &str, options: &VerifyOptions) -> Grade {
    let answer = extract_answer(trace).map(|found| found.answer);
    let correct = answer
        .as_deref()
        .is_some_and(|predicted| checker.accepts(gold, predicted, options));
    Grade { answer, correct }
}

/// Grades `trace` against `gold` with the checker `metadata` asks for; `Err` when the metadata
/// names an unusable checker.
pub fn grade(gold: &str, metadata: &Map<String, Value>, trace: &str) -> Result<Grade, String> {
    let checker = Checker::for_metadata(metadata)?;
    Ok(grade_with(&checker, gold, trace, &VerifyOptions::default()))
}
