//! Code problems: graded by running the completion's program against the problem's tests in
//! the [sandbox](crate::sandbox).
//!
//! * [`suite`]: the tests, stored as the problem's gold answer (JSON), and the metadata marking
//!   a code problem (`"verifier": "code_tests"`);
//! * [`extract`]: the program in a completion (last Python code block after `</think>`);
//! * [`verdict`]: the [`CodeVerdict`] of one run;
//! * [`grade_code`]: extraction, one sandboxed run of the harness (`harness.py`, which runs the
//!   solution then each test and reports every result on file descriptor 3) and the verdict.
//!
//! The harness runs in the same process as the untrusted program, so a program written to
//! defeat it (patching the harness, writing fake events to fd 3) can forge its results; the
//! sandbox contains what such a program can do to the machine, not what it claims.

pub mod extract;
pub mod suite;
pub mod verdict;

use serde_json::json;

use crate::sandbox::Sandbox;
pub use extract::extract_code;
pub use suite::{code_metadata, IoCase, TestSuite, Tests, CODE_VERIFIER};
pub use verdict::CodeVerdict;

/// The start of a [`CodeGrade::outcome_key`].
pub const OUTCOME_KEY_PREFIX: &str = "tests:";

/// The metadata key under which stages record a graded code row's [`code_result`].
pub const CODE_RESULT: &str = "code_result";

/// `{"verdict": NAME, "passed": N, "total": M}` of `grade`, as recorded in row metadata.
pub fn code_result(grade: &CodeGrade) -> serde_json::Value {
    json!({"verdict": grade.verdict.name(), "passed": grade.passed(), "total": grade.total()})
}

/// The harness program (see the module docs).
const HARNESS: &str = include_str!("harness.py");

/// The grade of one completion of a code problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeGrade {
    /// The extracted program, when there is one.
    pub code: Option<String>,
    /// Whether each test passed, in the suite's order (a test that never ran failed).
    pub outcomes: Vec<bool>,
    /// The verdict.
    pub verdict: CodeVerdict,
}

impl CodeGrade {
    /// Tests passed.
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|ok| **ok).count()
    }

    /// Tests in the suite.
    pub fn total(&self) -> usize {
        self.outcomes.len()
    }

    /// The test outcomes as a vote key: `tests:` then `P`/`F` per test and the verdict, e.g.
    /// `tests:PPF tests_failed`; `None` without a program. Samples vote together (cons@k) when
    /// their keys are identical.
    pub fn outcome_key(&self) -> Option<String> {
        self.code.as_ref()?;
        let marks: String = self
            .outcomes
            .iter()
            .map(|ok| if *ok { 'P' } else { 'F' })
            .collect();
        Some(format!(
            "{OUTCOME_KEY_PREFIX}{marks} {}",
            self.verdict.name()
        ))
    }

    /// Whether every test passed.
    pub fn correct(&self) -> bool {
        self.verdict == CodeVerdict::Passed
    }

    /// The share of tests passed (0 without tests).
    pub fn fraction(&self) -> f64 {
        if self.outcomes.is_empty() {
            0.0
        } else {
            self.passed() as f64 / self.total() as f64
        }
    }
}

/// Runs `code` against `suite` in `sandbox`.
pub fn run_tests(sandbox: &Sandbox, suite: &TestSuite, code: &str) -> CodeGrade {
    let total = suite.tests.len();
    let job = json!({"code": code, "setup": suite.setup, "tests": suite.tests});
    let (outcomes, verdict) =
        match sandbox.run(&["-c".into(), HARNESS.into()], job.to_string().as_bytes()) {
            Ok(outcome) => verdict::decide(&outcome, total),
            Err(_) => (vec![false; total], CodeVerdict::SandboxError),
        };
    CodeGrade {
        code: Some(code.to_string()),
        outcomes,
        verdict,
    }
}

/// Grades the completion `trace` of a problem whose gold answer is the test suite `gold` (a
/// gold answer that is no usable suite grades as [`CodeVerdict::SandboxError`]; stages check
/// it up front with [`TestSuite::parse`] to report it with its file and row).
pub fn grade_code(sandbox: &Sandbox, gold: &str, trace: &str) -> CodeGrade {
    let Ok(suite) = TestSuite::parse(gold) else {
        return CodeGrade {
            code: None,
            outcomes: Vec::new(),
            verdict: CodeVerdict::SandboxError,
        };
    };
    match extract_code(trace) {
        Some(code) => run_tests(sandbox, &suite, &code),
        None => CodeGrade {
            code: None,
            outcomes: vec![false; suite.tests.len()],
            verdict: CodeVerdict::NoCode,
        },
    }
}
