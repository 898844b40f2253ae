//! Grading one completion against its problem: the answer is extracted from the trace and checked
//! against the gold answer — or, for countdown puzzles (metadata `verifier = "countdown"`), by
//! evaluating the expression with the puzzle's numbers.

use serde_json::{Map, Value};

use super::extract::extract_answer;
use super::math::verify;

/// The verdict on one completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grade {
    /// The extracted final answer, when the trace has one.
    pub answer: Option<String>,
    /// Whether it is verified correct.
    pub correct: bool,
}

/// Grades `trace` (a full `<think>…</think>answer` text, or an answer alone) against `gold`, using
/// the problem's `metadata` to pick the checker.
pub fn grade(gold: &str, metadata: &Map<String, Value>, trace: &str) -> Grade {
    let Some(extracted) = extract_answer(trace) else {
        return Grade {
            answer: None,
            correct: false,
        };
    };
    let correct = match countdown_puzzle(metadata) {
        Some((numbers, target)) => {
            crate::data::synth::verify_countdown(&extracted.answer, &numbers, target)
        }
        None => verify(gold, &extracted.answer),
    };
    Grade {
        answer: Some(extracted.answer),
        correct,
    }
}

/// The numbers and target of a countdown puzzle, when the metadata describes one.
fn countdown_puzzle(metadata: &Map<String, Value>) -> Option<(Vec<i64>, i64)> {
    if metadata.get("verifier").and_then(Value::as_str) != Some("countdown") {
        return None;
    }
    let numbers = metadata
        .get("numbers")?
        .as_array()?
        .iter()
        .map(Value::as_i64)
        .collect::<Option<Vec<_>>>()?;
    Some((numbers, metadata.get("target")?.as_i64()?))
}
