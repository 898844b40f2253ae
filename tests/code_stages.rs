//! Code problems through the filter and eval stages, with the real bubblewrap sandbox: traces
//! built as rows from real HumanEval and MBPP problems (the reference solution, a mutant, no
//! code, an endless loop, a crash), the verdicts as reject reasons and report counts, and eval's
//! pass@1 and cons@k by identical test outcomes.

mod common;
mod filter_common;

use std::path::Path;
use std::process::Command;

use distill::data::prompt_source::load_prompts;
use distill::data::schema::{FilteredRow, TraceRow};
use distill::data::shards::read_rows;
use distill::data::sources::Problem;
use distill::eval::samples::{read_samples, samples_path, SampleRow};
use distill::eval::{problem_scores, sample_answer};
use distill::eval::{run_eval, EvalConfig};
use distill::filter::{run_filter, FilterConfig};
use distill::sandbox::SandboxSettings;
use distill::train::rewards::{RewardConfig, Scored};
use distill::verify::grade::{grade_with, Checker};
use distill::verify::VerifyOptions;
use filter_common::{r1, reasoning, row, write_input};

/// The first two problems of HumanEval and of sanitized MBPP.
fn problems() -> Vec<Problem> {
    let mut problems = Vec::new();
    for file in ["humaneval/HumanEval.jsonl.gz", "mbpp/sanitized-mbpp.json"] {
        let path = format!("{}/{file}", filter_common::DATA);
        problems.extend(load_prompts(&path).unwrap().into_iter().take(2));
    }
    problems
}

fn reference(problem: &Problem) -> String {
    problem.metadata["reference"].as_str().unwrap().to_string()
}

/// A completion answering with `code` in a Python block.
fn answer(code: &str) -> String {
    format!(
        "<think>\n{}\n</think>\n\nHere is the solution.\n\n```python\n{code}\n```\n",
        reasoning("the function")
    )
}

/// `code` with every public function's result changed by one: numbers + 1, booleans negated,
/// sequences one element short, strings one character longer.
fn off_by_one(code: &str) -> String {
    format!(
        "{code}\n\nimport types as _t\n\
def _wrong(f):\n    def g(*a, **k):\n        r = f(*a, **k)\n        \
return (not r) if isinstance(r, bool) else r + 1 if isinstance(r, (int, float)) else r + 'x' if isinstance(r, str) else r[:-1] if isinstance(r, (list, tuple)) else None\n    return g\n\
for _n, _f in list(globals().items()):\n    if isinstance(_f, _t.FunctionType) and not _n.startswith('_'):\n        globals()[_n] = _wrong(_f)"
    )
}

/// Every labelled completion of `problem`: `(expected reason, generation)`.
fn completions(problem: &Problem) -> Vec<(&'static str, String)> {
    let code = reference(problem);
    vec![
        ("", answer(&code)),
        ("tests_failed", answer(&off_by_one(&code))),
        (
            "no_code",
            format!(
                "<think>\n{}\n</think>\n\nI could not write it.",
                reasoning("it")
            ),
        ),
        ("timeout", answer(&format!("{code}\nwhile True:\n    pass"))),
        (
            "runtime_error",
            answer(&format!("{code}\nraise RuntimeError('boom')")),
        ),
    ]
}

fn settings() -> SandboxSettings {
    let mut settings = SandboxSettings::default();
    settings.limits.wall_seconds = 3.0;
    settings.limits.cpu_seconds = 2;
    settings
}

/// The trace rows of `problems` (all labelled completions) plus one math row.
fn trace_rows(problems: &[Problem]) -> Vec<(String, TraceRow)> {
    let mut rows = Vec::new();
    for problem in problems {
        for (index, (label, generation)) in completions(problem).into_iter().enumerate() {
            let mut trace = row(
                &problem.id,
                &problem.problem,
                &problem.answer,
                index as u32,
                &generation,
            );
            trace.source = problem.source.clone();
            trace.metadata = problem.metadata.clone();
            rows.push((label.to_string(), trace));
        }
    }
    let math = row(
        "sum/1",
        "What is 2 + 3?",
        "5",
        0,
        &r1(&reasoning("two plus three"), "6"),
    );
    rows.push(("wrong_answer".into(), math));
    rows
}

#[test]
fn the_filter_grades_code_in_the_sandbox_and_reports_each_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let problems = problems();
    let labelled = trace_rows(&problems);
    let rows: Vec<TraceRow> = labelled.iter().map(|(_, r)| r.clone()).collect();
    write_input(&dir.path().join("traces"), &rows, 7);
    let mut config = FilterConfig::new(dir.path().join("traces"), dir.path().join("out"));
    config.sandbox = settings();
    let summary = run_filter(&config).unwrap();

    let accepted = read_rows::<FilteredRow>(&dir.path().join("out/accepted")).unwrap();
    let rejected = read_rows::<FilteredRow>(&dir.path().join("out/rejected")).unwrap();
    assert_eq!(accepted.len(), problems.len());
    for filtered in accepted.iter().chain(&rejected) {
        let trace = &filtered.trace;
        let (label, _) = labelled
            .iter()
            .find(|(_, r)| r.id == trace.id && r.sample_index == trace.sample_index)
            .unwrap();
        let expected: Vec<String> = if label.is_empty() {
            vec![]
        } else {
            vec![label.clone()]
        };
        assert_eq!(
            filtered.reject_reasons, expected,
            "{} #{}",
            trace.id, trace.sample_index
        );
        if trace.id == "sum/1" {
            assert!(!trace.metadata.contains_key("code_result"));
            continue;
        }
        let result = &trace.metadata["code_result"];
        let total = result["total"].as_u64().unwrap();
        let passed = result["passed"].as_u64().unwrap();
        assert_eq!(
            result["verdict"],
            if label.is_empty() {
                "passed"
            } else {
                label.as_str()
            }
        );
        assert_eq!(passed == total, label.is_empty(), "{result}");
        assert_eq!(filtered.verified, label.is_empty());
        assert_eq!(filtered.extracted_answer.is_some(), label != "no_code");
    }
    let code = summary.code.expect("a code section in the report");
    assert_eq!(code.traces, problems.len() * 5);
    for verdict in [
        "passed",
        "tests_failed",
        "no_code",
        "timeout",
        "runtime_error",
    ] {
        assert_eq!(code.verdicts[verdict], problems.len(), "{verdict}");
        if verdict != "passed" {
            assert_eq!(summary.reasons[verdict], problems.len(), "{verdict}");
        }
    }
    assert_eq!(
        code.verdicts["memory_limit"] + code.verdicts["sandbox_error"],
        0
    );
    assert_eq!(summary.reasons["wrong_answer"], 1);
    let report = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(
        report.contains("## Code problems") && report.contains("| timeout | 4 |"),
        "{report}"
    );
}

fn filter_cli(dir: &Path, extra: &[&str], path_env: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distill"));
    command
        .args(["filter", "--input"])
        .arg(dir.join("traces"))
        .arg("--out")
        .arg(dir.join("out"))
        .args(extra);
    if let Some(path) = path_env {
        command.env("PATH", path);
    }
    command.output().unwrap()
}

#[test]
fn without_bubblewrap_the_run_stops_and_none_must_be_asked_for_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let problem = &problems()[0];
    let mut trace = row(
        &problem.id,
        &problem.problem,
        &problem.answer,
        0,
        &answer(&reference(problem)),
    );
    trace.metadata = problem.metadata.clone();
    write_input(&dir.path().join("traces"), &[trace], 10);

    // A PATH with python3 but no bwrap.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let python = distill::sandbox::Python::find().unwrap().executable;
    std::os::unix::fs::symlink(python, bin.join("python3")).unwrap();
    let run = filter_cli(dir.path(), &[], Some(bin.to_str().unwrap()));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("apt-get install -y bubblewrap") && stderr.contains("--sandbox none"),
        "{stderr}"
    );
    assert!(!dir.path().join("out/accepted").exists());

    let run = filter_cli(
        dir.path(),
        &["--sandbox", "none"],
        Some(bin.to_str().unwrap()),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("WITHOUT isolation"), "{stderr}");
    assert_eq!(
        read_rows::<FilteredRow>(&dir.path().join("out/accepted"))
            .unwrap()
            .len(),
        1
    );
}

/// A sample row graded like eval grades it.
fn sample(problem: &Problem, checker: &Checker, index: u32, generation: &str) -> SampleRow {
    let grade = grade_with(
        checker,
        &problem.answer,
        generation,
        &VerifyOptions::default(),
    );
    SampleRow {
        id: problem.id.clone(),
        source: problem.source.clone(),
        sample_index: index,
        completion: generation.to_string(),
        answer: sample_answer(&grade),
        correct: grade.correct,
        tokens: 10,
        finish_reason: "stop".into(),
    }
}

#[test]
fn cons_at_k_votes_by_identical_test_outcomes() {
    let sandbox = settings().open().unwrap();
    let problem = problems()
        .into_iter()
        .find(|p| p.id.starts_with("mbpp"))
        .unwrap();
    let checker = Checker::for_problem(&problem.metadata, Some(&sandbox)).unwrap();
    let code = reference(&problem);
    let right = answer(&code);
    // Two different wrong programs with the same test outcomes (every test fails)…
    let wrong_a = answer(&format!("{code}\nraise SystemExit(3)"));
    let wrong_b = answer(&format!("{code}\nassert False"));
    let mutant = answer(&off_by_one(&code));
    let rows = vec![
        sample(&problem, &checker, 0, &right),
        sample(&problem, &checker, 1, &wrong_a),
        sample(&problem, &checker, 2, &wrong_b),
    ];
    assert_eq!(rows[1].answer, rows[2].answer);
    assert_ne!(rows[0].answer, rows[1].answer);
    let scores = problem_scores(&rows);
    assert!((scores[0].2.pass_at_1 - 1.0 / 3.0).abs() < 1e-9);
    assert!(
        !scores[0].2.cons_correct,
        "two identical wrong outcomes outvote one pass"
    );

    let rows = vec![
        sample(&problem, &checker, 0, &wrong_a),
        sample(&problem, &checker, 1, &right),
        sample(&problem, &checker, 2, &right),
        sample(&problem, &checker, 3, &mutant),
    ];
    assert_ne!(
        rows[0].answer, rows[3].answer,
        "another failure, another outcome"
    );
    let scores = problem_scores(&rows);
    assert_eq!(scores[0].2.pass_at_1, 0.5);
    assert!(scores[0].2.cons_correct);
}

#[test]
fn eval_runs_code_problems_through_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    // MBPP's prompts fit the stories model's 512-token context.
    let problems: Vec<Problem> = problems()
        .into_iter()
        .filter(|p| p.id.starts_with("mbpp"))
        .collect();
    let mut config = EvalConfig::new(&common::stories260k(), dir.path().join("eval"));
    config.k = 2;
    config.max_new_tokens = 8;
    config.sandbox = settings();
    let summary = run_eval(&config, &problems).unwrap();
    assert_eq!((summary.problems, summary.k), (2, 2));
    // The stories model writes no code: every sample is graded `no_code`.
    assert_eq!((summary.pass_at_1, summary.cons_at_k), (0.0, 0.0));
    let samples = read_samples(&samples_path(&dir.path().join("eval"))).unwrap();
    assert_eq!(samples.len(), 4);
    assert!(samples.iter().all(|s| s.answer.is_none() && !s.correct));

    // A code problem whose tests are not a usable suite is refused up front, naming it.
    let mut broken = problems[0].clone();
    broken.answer = "assert f(1) == 2".into();
    let config = EvalConfig::new(&common::stories260k(), dir.path().join("broken"));
    let error = run_eval(&config, &[broken]).unwrap_err().to_string();
    assert!(
        error.contains(&problems[0].id) && error.contains("answer"),
        "{error}"
    );
}

#[test]
fn the_code_tests_reward_is_the_share_passed_or_all_or_nothing() {
    let sandbox = settings().open().unwrap();
    let suite = distill::verify::code::TestSuite::snippets(
        "",
        (1..=3)
            .map(|x| format!("assert square({x}) == {}", x * x))
            .collect(),
    );
    let gold = suite.to_json();
    let checker =
        Checker::for_problem(&distill::verify::code::code_metadata(), Some(&sandbox)).unwrap();
    let score = |config: &RewardConfig, body: &str| {
        config.score(&Scored {
            prompt: "Write square(x).",
            prefill: "",
            completion: &answer(&format!("def square(x):\n    {body}")),
            gold: &gold,
            checker: &checker,
            completion_tokens: 20,
            max_new_tokens: 100,
        })
    };
    let fraction = RewardConfig {
        accuracy: 0.0,
        code_tests: 1.0,
        ..RewardConfig::default()
    };
    let all_or_nothing = RewardConfig {
        code_tests_all_or_nothing: true,
        ..fraction.clone()
    };
    let partial = score(&fraction, "return x * x if x < 3 else 0");
    assert!((partial.code_tests - 2.0 / 3.0).abs() < 1e-9, "{partial:?}");
    assert_eq!((partial.accuracy, partial.total), (0.0, partial.code_tests));
    assert_eq!(
        score(&all_or_nothing, "return x * x if x < 3 else 0").code_tests,
        0.0
    );
    let right = score(&all_or_nothing, "return x * x");
    assert_eq!(
        (right.code_tests, right.accuracy, right.total),
        (1.0, 1.0, 1.0)
    );
}
