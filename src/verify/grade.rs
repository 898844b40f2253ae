//! Grading one completion against its problem: the answer is extracted from the trace and checked
//! against the gold answer — or, for countdown puzzles (metadata `"verifier": "countdown"`), by
//! evaluating the expression with the puzzle's numbers — or, for code problems (metadata
//! `"verifier": "code_tests"`), by running the trace's program against the tests in a sandbox
//! ([`crate::verify::code`]).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::code::{grade_code, CodeGrade, CODE_VERIFIER};
use super::extract::extract_answer;
use super::math::{verify_with, VerifyOptions};
use crate::sandbox::Sandbox;

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
    /// The program in the trace is run against the tests (the gold answer) in this sandbox.
    CodeTests(CodeSandbox),
}

/// The sandbox code problems are graded in (shared by every checker of a run; two are equal
/// when they are the same sandbox).
#[derive(Debug, Clone)]
pub struct CodeSandbox(pub Arc<Sandbox>);

impl PartialEq for CodeSandbox {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Whether `metadata` marks a code problem (one that needs a sandbox to grade).
pub fn is_code_problem(metadata: &Map<String, Value>) -> bool {
    metadata.get("verifier").and_then(Value::as_str) == Some(CODE_VERIFIER)
}

/// The checker of every problem, each gold answer checked, with a sandbox opened (from
/// `sandbox`) only when one of them is a code problem; an error names the problem — `noun`
/// and id — and the field.
pub fn checkers_for(
    problems: &[crate::data::sources::Problem],
    sandbox: &crate::sandbox::SandboxSettings,
    noun: &str,
) -> anyhow::Result<Vec<Checker>> {
    let sandbox = match problems.iter().any(|p| is_code_problem(&p.metadata)) {
        true => Some(sandbox.open()?),
        false => None,
    };
    problems
        .iter()
        .map(|p| {
            let checker = Checker::for_problem(&p.metadata, sandbox.as_ref())
                .map_err(|e| anyhow::anyhow!("{noun} {}: field metadata: {e}", p.id))?;
            checker
                .check_gold(&p.answer)
                .map_err(|e| anyhow::anyhow!("{noun} {}: field answer: {e}", p.id))?;
            Ok(checker)
        })
        .collect()
}

impl Checker {
    /// The checker `metadata` asks for; `Err` says which metadata field is unusable. A code
    /// problem needs [`Checker::for_problem`] with a sandbox.
    pub fn for_metadata(metadata: &Map<String, Value>) -> Result<Checker, String> {
        Checker::for_problem(metadata, None)
    }

    /// The checker `metadata` asks for, grading code problems in `sandbox`; `Err` says which
    /// metadata field is unusable, or that a code problem came without a sandbox.
    pub fn for_problem(
        metadata: &Map<String, Value>,
        sandbox: Option<&Arc<Sandbox>>,
    ) -> Result<Checker, String> {
        match metadata.get("verifier") {
            None => Ok(Checker::Gold),
            Some(Value::String(name)) if name == CODE_VERIFIER => match sandbox {
                Some(sandbox) => Ok(Checker::CodeTests(CodeSandbox(Arc::clone(sandbox)))),
                None => Err(format!(
                    "a `{CODE_VERIFIER}` problem is graded by running code, which needs a sandbox"
                )),
            },
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
                "unknown `verifier` {other} (known: \"countdown\", \"{CODE_VERIFIER}\", or no verifier for gold-answer equivalence)"
            )),
        }
    }

    /// Checks that `gold` is usable by this checker (a code problem's gold is its test suite);
    /// `Err` says what is wrong.
    pub fn check_gold(&self, gold: &str) -> Result<(), String> {
        match self {
            Checker::CodeTests(_) => super::code::TestSuite::parse(gold).map(|_| ()),
            Checker::Gold | Checker::Countdown { .. } => Ok(()),
        }
    }

    /// Whether the extracted answer `predicted` answers the problem whose gold answer is `gold`.
    /// Code is judged by running it, never by its text: [`Checker::CodeTests`] accepts no
    /// answer here (use [`grade_with`]).
    pub fn accepts(&self, gold: &str, predicted: &str, options: &VerifyOptions) -> bool {
        match self {
            Checker::Gold => verify_with(gold, predicted, options),
            Checker::Countdown { numbers, target } => {
                crate::data::synth::verify_countdown(predicted, numbers, *target)
            }
            Checker::CodeTests(_) => false,
        }
    }
}

/// The verdict on one completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grade {
    /// The extracted final answer (for code problems: the program), when the trace has one.
    pub answer: Option<String>,
    /// Whether it is verified correct (for code problems: every test passed).
    pub correct: bool,
    /// For code problems: tests passed, tests run and the verdict.
    pub code: Option<CodeGrade>,
}

/// Grades `trace` (a full `<think>…</think>answer` text, or an answer alone) with `checker`.
/// A code problem whose gold answer is not a usable test suite grades as a sandbox error.
pub fn grade_with(checker: &Checker, gold: &str, trace: &str, options: &VerifyOptions) -> Grade {
    if let Checker::CodeTests(CodeSandbox(sandbox)) = checker {
        let code = grade_code(sandbox, gold, trace);
        return Grade {
            answer: code.code.clone(),
            correct: code.correct(),
            code: Some(code),
        };
    }
    let answer = extract_answer(trace).map(|found| found.answer);
    let correct = answer
        .as_deref()
        .is_some_and(|predicted| checker.accepts(gold, predicted, options));
    Grade {
        answer,
        correct,
        code: None,
    }
}

/// Grades `trace` against `gold` with the checker `metadata` asks for; `Err` when the metadata
/// names an unusable checker.
pub fn grade(gold: &str, metadata: &Map<String, Value>, trace: &str) -> Result<Grade, String> {
    let checker = Checker::for_metadata(metadata)?;
    Ok(grade_with(&checker, gold, trace, &VerifyOptions::default()))
}
