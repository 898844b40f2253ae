//! Code prompt sources: HumanEval, MBPP (full and sanitized) and a generic layout, read into
//! [`Problem`]s whose gold answer is a [`TestSuite`] (JSON) and whose metadata says
//! `"verifier": "code_tests"` (see [`crate::verify::code`]).
//!
//! * HumanEval (`task_id`, `prompt`, `entry_point`, `canonical_solution`, `test`; `.jsonl` or
//!   `.jsonl.gz`): one test, the `test` program followed by `check(<entry_point>)`; the problem
//!   shows the signature and docstring and asks for the whole function.
//! * MBPP (`text`, `code`, `test_list`, `test_setup_code`): the three asserts, setup code first;
//!   the problem states the task and shows the asserts (as the MBPP paper's prompt does).
//! * MBPP sanitized (`prompt`, `code`, `test_list`, `test_imports`; a JSON array): likewise,
//!   the imports as setup.
//! * Generic: `problem` plus either `verification_info` (an object or JSON text, as in
//!   open-r1's code sets: `{"language": "python", "test_cases": [{"input", "output"}…]}`), or
//!   `tests` (a list of assert snippets, optional `setup`), or `test` (one test program).
//!
//! Reference solutions are kept in metadata (`reference`) where the set has them. Every error
//! names the file, the record and the field.

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use super::errors::{DataError, Location, Result};
use super::sources::{content_hash_id, file_extension, read_records, Problem, RecordFields};
use crate::verify::code::{code_metadata, IoCase, TestSuite, Tests};

/// The instruction closing every code problem's text.
pub const CODE_INSTRUCTION: &str =
    "Write your final solution in Python 3 in a single ```python code block.";

/// A code prompt set with a known layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeAdapter {
    /// OpenAI HumanEval.
    HumanEval,
    /// MBPP, full (`mbpp.jsonl`).
    Mbpp,
    /// MBPP, sanitized (`sanitized-mbpp.json`).
    MbppSanitized,
    /// `problem` with `verification_info`, `tests` or `test`.
    Generic,
}

impl CodeAdapter {
    /// The adapter's name, the prefix of its ids and sources.
    pub fn name(self) -> &'static str {
        match self {
            CodeAdapter::HumanEval => "humaneval",
            CodeAdapter::Mbpp => "mbpp",
            CodeAdapter::MbppSanitized => "mbpp_sanitized",
            CodeAdapter::Generic => "code",
        }
    }

    /// The adapter whose layout `record` has, if any.
    fn detect(record: &Map<String, Value>) -> Option<Self> {
        let has = |field: &str| record.contains_key(field);
        if has("task_id") && has("prompt") && has("entry_point") && has("test") {
            Some(CodeAdapter::HumanEval)
        } else if has("text") && has("test_list") && has("test_setup_code") {
            Some(CodeAdapter::Mbpp)
        } else if has("prompt") && has("test_list") && has("test_imports") {
            Some(CodeAdapter::MbppSanitized)
        } else if has("problem")
            && (has("verification_info")
                || record.get("tests").is_some_and(Value::is_array)
                || record.get("test").is_some_and(Value::is_string))
        {
            Some(CodeAdapter::Generic)
        } else {
            None
        }
    }
}

/// The problems of a code prompt file, or `None` when the file is not a code set (then it is
/// left to the math adapters). `stem` names the set (`<adapter>-<stem>`).
pub fn load_code_problems(path: &Path, stem: &str) -> Result<Option<Vec<Problem>>> {
    let records = read_code_records(path)?;
    let Some(adapter) = records.first().and_then(|(_, r)| CodeAdapter::detect(r)) else {
        return Ok(None);
    };
    let stem = stem.strip_suffix(".jsonl").unwrap_or(stem);
    let source = format!("{}-{stem}", adapter.name());
    let mut seen = std::collections::HashSet::new();
    let mut problems = Vec::with_capacity(records.len());
    for (location, record) in &records {
        let fields = RecordFields {
            path,
            location: *location,
            record,
        };
        let problem = fields.code_problem(adapter, &source)?;
        if !seen.insert(problem.id.clone()) {
            return Err(DataError::DuplicateId {
                path: path.to_path_buf(),
                location: *location,
                field: "task_id".into(),
                id: problem.id,
            });
        }
        problems.push(problem);
    }
    Ok(Some(problems))
}

/// Records of `.jsonl.gz`, a `.json` array, or whatever [`read_records`] reads.
fn read_code_records(path: &Path) -> Result<Vec<(Location, Map<String, Value>)>> {
    let name = path.to_string_lossy().to_lowercase();
    if name.ends_with(".jsonl.gz") {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(|e| DataError::io(path, e))?;
        return parse_lines(path, &text);
    }
    if file_extension(path) == "json" {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        if text.trim_start().starts_with('[') {
            let malformed = |location, message: String| DataError::MalformedJson {
                path: path.to_path_buf(),
                location,
                message,
            };
            let values: Vec<Value> = serde_json::from_str(&text)
                .map_err(|e| malformed(Location::Line(e.line()), e.to_string()))?;
            return values
                .into_iter()
                .enumerate()
                .map(|(index, value)| match value {
                    Value::Object(record) => Ok((Location::Row(index), record)),
                    _ => Err(malformed(
                        Location::Row(index),
                        "expected a JSON object".into(),
                    )),
                })
                .collect();
        }
    }
    read_records(path, None)
}

fn parse_lines(path: &Path, text: &str) -> Result<Vec<(Location, Map<String, Value>)>> {
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = Location::Line(index + 1);
        match serde_json::from_str(line) {
            Ok(Value::Object(record)) => records.push((location, record)),
            Ok(_) => {
                return Err(DataError::MalformedJson {
                    path: path.to_path_buf(),
                    location,
                    message: "expected a JSON object".into(),
                })
            }
            Err(e) => {
                return Err(DataError::MalformedJson {
                    path: path.to_path_buf(),
                    location,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(records)
}

/// Reading code problems from a record (the accessors are [`RecordFields`]'s).
impl RecordFields<'_> {
    fn code_problem(&self, adapter: CodeAdapter, source: &str) -> Result<Problem> {
        let (id, text, suite, reference) = match adapter {
            CodeAdapter::HumanEval => {
                let prompt = self.text("prompt")?;
                let entry_point = self.text("entry_point")?;
                let test = self.text("test")?;
                let number = self.text("task_id")?;
                let number = number.rsplit('/').next().unwrap_or(&number).to_string();
                let text = format!(
                    "Complete the following Python function. Give the whole function, signature included.\n\n```python\n{}\n```\n\n{CODE_INSTRUCTION}",
                    prompt.trim_end()
                );
                let suite =
                    TestSuite::snippets("", vec![format!("{test}\n\ncheck({entry_point})\n")]);
                let reference = format!("{prompt}{}", self.text("canonical_solution")?);
                (format!("humaneval-{number}"), text, suite, Some(reference))
            }
            CodeAdapter::Mbpp | CodeAdapter::MbppSanitized => {
                let (task, setup) = if adapter == CodeAdapter::Mbpp {
                    (self.text("text")?, self.text("test_setup_code")?)
                } else {
                    (
                        self.text("prompt")?,
                        self.strings("test_imports")?.join("\n"),
                    )
                };
                let tests = self.strings("test_list")?;
                if tests.is_empty() {
                    return Err(self.invalid("test_list", "no tests"));
                }
                let text = format!(
                    "{}\nYour code should pass these tests:\n\n{}\n\n{CODE_INSTRUCTION}",
                    task.trim(),
                    tests.join("\n")
                );
                let id = format!("{}-{}", adapter.name(), self.integer("task_id")?);
                let reference = self.text("code")?.replace("\r\n", "\n");
                (
                    id,
                    text,
                    TestSuite::snippets(&setup, tests),
                    Some(reference),
                )
            }
            CodeAdapter::Generic => {
                let problem = self.text("problem")?;
                let suite = self.generic_suite()?;
                let id = match self.record.get("id") {
                    Some(Value::String(id)) if !id.trim().is_empty() => id.trim().to_string(),
                    Some(Value::Number(n)) => format!("{source}-{n}"),
                    _ => content_hash_id(source, &problem),
                };
                let text = format!("{}\n\n{CODE_INSTRUCTION}", problem.trim());
                (id, text, suite, None)
            }
        };
        let mut metadata = code_metadata();
        if let Some(reference) = reference {
            metadata.insert("reference".into(), Value::String(reference));
        }
        Ok(Problem {
            id,
            source: source.to_string(),
            problem: text,
            answer: suite.to_json(),
            metadata,
        })
    }

    fn generic_suite(&self) -> Result<TestSuite> {
        let setup = match self.record.get("setup") {
            None | Some(Value::Null) => String::new(),
            Some(_) => self.text("setup")?,
        };
        if let Some(info) = self.record.get("verification_info") {
            let info = match info {
                Value::String(text) => serde_json::from_str(text)
                    .map_err(|e| self.invalid("verification_info", &format!("not JSON: {e}")))?,
                other => other.clone(),
            };
            return self.verification_info(&info, &setup);
        }
        if self.record.get("tests").is_some_and(Value::is_array) {
            let tests = self.strings("tests")?;
            if tests.is_empty() {
                return Err(self.invalid("tests", "no tests"));
            }
            return Ok(TestSuite::snippets(&setup, tests));
        }
        Ok(TestSuite::snippets(&setup, vec![self.text("test")?]))
    }

    fn verification_info(&self, info: &Value, setup: &str) -> Result<TestSuite> {
        let field = "verification_info";
        let language = info["language"].as_str().unwrap_or("python");
        if !matches!(language, "python" | "python3" | "py") {
            return Err(self.invalid(
                field,
                &format!("language `{language}` is not supported (only python)"),
            ));
        }
        let cases = info["test_cases"]
            .as_array()
            .filter(|cases| !cases.is_empty())
            .ok_or_else(|| self.invalid(field, "`test_cases` must be a non-empty array"))?;
        let mut io = Vec::with_capacity(cases.len());
        for (index, case) in cases.iter().enumerate() {
            let kind = case["type"].as_str().unwrap_or("stdin_stdout");
            let (Some(input), Some(output)) = (case["input"].as_str(), case["output"].as_str())
            else {
                return Err(self.invalid(
                    field,
                    &format!("test_cases[{index}] needs string `input` and `output`"),
                ));
            };
            if kind != "stdin_stdout" {
                return Err(self.invalid(
                    field,
                    &format!(
                        "test_cases[{index}] has type `{kind}` (only stdin_stdout is supported)"
                    ),
                ));
            }
            io.push(IoCase {
                input: input.to_string(),
                output: output.to_string(),
            });
        }
        Ok(TestSuite {
            language: "python".into(),
            setup: setup.to_string(),
            tests: Tests::Io(io),
        })
    }
}
