//! [`TestSuite`]: the gold "answer" of a code problem — its tests — stored as JSON text in the
//! row's `answer` (the row's metadata says `"verifier": "code_tests"`).
//!
//! ```json
//! {"language": "python", "setup": "import math", "tests": ["assert f(1) == 2", "..."]}
//! {"language": "python", "tests": [{"input": "1 2\n", "output": "3\n"}]}
//! ```
//! `tests` is either a list of Python snippets (each an assertion or a whole test program, run
//! in the solution's namespace after `setup`) or a list of stdin/stdout cases (the program runs
//! once per case as `__main__`; outputs compare line by line, trailing whitespace ignored).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The metadata value of `verifier` for code problems.
pub const CODE_VERIFIER: &str = "code_tests";

/// The only language the sandbox runs.
pub const PYTHON: &str = "python";

/// One stdin/stdout case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoCase {
    /// Fed to the program's stdin.
    pub input: String,
    /// Expected stdout.
    pub output: String,
}

/// The tests of a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tests {
    /// Python snippets run after the solution in its namespace; a snippet passes when it
    /// raises nothing.
    Snippets(Vec<String>),
    /// Programs run as `__main__` with this stdin; a case passes when stdout matches.
    Io(Vec<IoCase>),
}

impl Tests {
    /// Number of tests.
    pub fn len(&self) -> usize {
        match self {
            Tests::Snippets(tests) => tests.len(),
            Tests::Io(cases) => cases.len(),
        }
    }

    /// Whether there are no tests.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A code problem's tests (see the module docs for the JSON form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSuite {
    /// The language solutions must be written in (`python`).
    pub language: String,
    /// Code run before the solution (imports the tests need).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setup: String,
    /// The tests.
    pub tests: Tests,
}

impl TestSuite {
    /// A Python suite of snippets.
    pub fn snippets(setup: &str, tests: Vec<String>) -> Self {
        TestSuite {
            language: PYTHON.into(),
            setup: setup.to_string(),
            tests: Tests::Snippets(tests),
        }
    }

    /// Parses the JSON gold answer; `Err` says what is wrong.
    pub fn parse(gold: &str) -> Result<Self, String> {
        let suite: TestSuite = serde_json::from_str(gold).map_err(|e| {
            format!("a code problem's answer must be a JSON test suite ({{\"language\", \"setup\", \"tests\"}}): {e}")
        })?;
        if suite.language != PYTHON {
            return Err(format!(
                "test suite language `{}` is not supported (only `python`)",
                suite.language
            ));
        }
        if suite.tests.is_empty() {
            return Err("the test suite has no tests".into());
        }
        Ok(suite)
    }

    /// The suite as the JSON text stored in `answer`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a test suite serialises")
    }
}

/// The metadata marking a problem as graded by its tests.
pub fn code_metadata() -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert("verifier".into(), Value::String(CODE_VERIFIER.into()));
    metadata
}
