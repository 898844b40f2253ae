//! The reference solutions of HumanEval (all 164) and sanitized MBPP (427) pass their tests in
//! the real sandbox, and mutated solutions (a wrong return value, an off-by-one) fail.
//! Reads `../shared/data`; prints how long the runs took.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use distill::data::prompt_source::load_prompts;
use distill::data::sources::Problem;
use distill::sandbox::{Limits, Sandbox, SandboxKind};
use distill::verify::code::{run_tests, CodeVerdict, TestSuite};
use rayon::prelude::*;

fn data(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(relative);
    path.to_string_lossy().into_owned()
}

/// One sandbox for every test of this file, so its concurrency limit (the number of cores)
/// holds across the tests running in parallel.
fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        Sandbox::new(SandboxKind::Bwrap, Limits::default(), None).expect("bubblewrap works here")
    })
}

fn reference(problem: &Problem) -> String {
    problem.metadata["reference"]
        .as_str()
        .expect("a reference solution")
        .to_string()
}

/// The function the tests call: HumanEval's `check(NAME)`, MBPP's first `assert NAME(`.
fn entry_point(suite: &TestSuite) -> String {
    let distill::verify::code::Tests::Snippets(tests) = &suite.tests else {
        panic!("snippet tests")
    };
    let test = &tests[0];
    let after = match test.rfind("check(") {
        Some(at) if test.trim_end().ends_with(')') && test[at..].lines().count() == 1 => {
            &test[at + 6..]
        }
        _ => {
            let at = test.find("assert").expect("an assert") + 6;
            let rest = test[at..].trim_start();
            let rest = rest.strip_prefix("not ").unwrap_or(rest);
            rest.find(|c: char| c.is_alphabetic() || c == '_')
                .map_or(rest, |i| &rest[i..])
        }
    };
    after
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// `code` with `name` wrapped so that its result is changed by `change` (a Python expression of
/// `r`).
fn mutate(code: &str, name: &str, change: &str) -> String {
    format!(
        "{code}\n\n_distill_original = {name}\ndef {name}(*args, **kwargs):\n    r = _distill_original(*args, **kwargs)\n    return {change}\n"
    )
}

/// A different value of another kind.
const WRONG_VALUE: &str = "None if r is not None else 0";
/// Numbers +1, booleans flipped, sequences one element short, strings one character longer.
const OFF_BY_ONE: &str = "(not r) if isinstance(r, bool) else r + 1 if isinstance(r, (int, float)) else r + 'x' if isinstance(r, str) else r[:-1] if isinstance(r, (list, tuple)) and r else [0] if isinstance(r, (list, tuple)) else None";

/// Runs every problem's reference (and, for every `mutant_stride`-th problem, its two
/// mutants); returns the failures of references and the mutants that passed.
fn check_set(problems: &[Problem], mutant_stride: usize) -> (Vec<String>, Vec<String>, usize) {
    let sandbox = sandbox();
    let results: Vec<(Option<String>, Vec<String>, usize)> = problems
        .par_iter()
        .enumerate()
        .map(|(index, problem)| {
            let suite = TestSuite::parse(&problem.answer).unwrap();
            let code = reference(problem);
            let grade = run_tests(sandbox, &suite, &code);
            let failed = (grade.verdict != CodeVerdict::Passed).then(|| {
                format!(
                    "{}: {} ({}/{})",
                    problem.id,
                    grade.verdict.name(),
                    grade.passed(),
                    grade.total()
                )
            });
            let mut survived = Vec::new();
            let mut mutants = 0;
            if index % mutant_stride == 0 && failed.is_none() {
                let name = entry_point(&suite);
                for (kind, change) in [("wrong value", WRONG_VALUE), ("off-by-one", OFF_BY_ONE)] {
                    mutants += 1;
                    let grade = run_tests(sandbox, &suite, &mutate(&code, &name, change));
                    if grade.verdict == CodeVerdict::Passed {
                        survived.push(format!("{} {name} {kind}", problem.id));
                    }
                }
            }
            (failed, survived, mutants)
        })
        .collect();
    let failed = results.iter().filter_map(|r| r.0.clone()).collect();
    let survived = results.iter().flat_map(|r| r.1.clone()).collect();
    (failed, survived, results.iter().map(|r| r.2).sum())
}

#[test]
fn humaneval_references_pass_and_mutants_fail() {
    let started = Instant::now();
    let problems = load_prompts(&data("humaneval/HumanEval.jsonl.gz")).unwrap();
    assert_eq!(problems.len(), 164);
    let (failed, survived, mutants) = check_set(&problems, 4);
    eprintln!(
        "HumanEval: {} of 164 references pass, {} of {mutants} mutants survive, {:.1} s",
        164 - failed.len(),
        survived.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "references failing: {failed:#?}");
    assert!(
        survived.len() * 20 <= mutants,
        "mutants passing: {survived:#?}"
    );
}

#[test]
fn sanitized_mbpp_references_pass_and_mutants_fail() {
    let started = Instant::now();
    let problems = load_prompts(&data("mbpp/sanitized-mbpp.json")).unwrap();
    assert_eq!(problems.len(), 427);
    let (failed, survived, mutants) = check_set(&problems, 8);
    eprintln!(
        "MBPP sanitized: {} of 427 references pass, {} of {mutants} mutants survive, {:.1} s: {failed:?} {survived:?}",
        427 - failed.len(),
        survived.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failed.len() * 100 <= 427, "references failing: {failed:#?}");
    assert!(
        survived.len() * 20 <= mutants,
        "mutants passing: {survived:#?}"
    );
}

#[test]
fn full_mbpp_loads_with_setup_code_and_bad_records_are_located() {
    let problems = load_prompts(&data("mbpp/mbpp.jsonl")).unwrap();
    assert_eq!(problems.len(), 974);
    let with_setup = problems
        .iter()
        .filter(|p| !TestSuite::parse(&p.answer).unwrap().setup.is_empty())
        .count();
    assert!(with_setup > 0);
    assert!(problems
        .iter()
        .all(|p| p.metadata["verifier"] == "code_tests"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("code.jsonl");
    std::fs::write(
        &bad,
        "{\"problem\": \"Add.\", \"tests\": [\"assert add(1, 2) == 3\"]}\n{\"problem\": \"Sub.\", \"tests\": [\"assert sub(2, 1) == 1\", 7]}\n",
    )
    .unwrap();
    let error = load_prompts(&bad.to_string_lossy())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("code.jsonl") && error.contains("line 2") && error.contains("`tests`"),
        "{error}"
    );
}

#[test]
fn generic_layouts_stdin_cases_snippets_and_test_programs_grade_in_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("code.jsonl");
    let info = serde_json::json!({
        "language": "python",
        "test_cases": [
            {"input": "1 2\n", "output": "3\n", "type": "stdin_stdout"},
            {"input": "5 7\n", "output": "12", "type": "stdin_stdout"}
        ]
    });
    let records = [
        serde_json::json!({"problem": "Read two integers and print their sum.", "verification_info": info.to_string()}),
        serde_json::json!({"problem": "Write add(a, b).", "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}),
        serde_json::json!({"problem": "Write add(a, b).", "id": "program", "test": "def check(f):\n    assert f(2, 2) == 4\ncheck(add)\n"}),
    ];
    let text: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let problems = load_prompts(&file.to_string_lossy()).unwrap();
    assert_eq!(problems.len(), 3);
    assert_eq!(problems[2].id, "program");
    let sandbox = sandbox();
    let stdin_right = "a, b = map(int, input().split())\nprint(a + b)";
    let stdin_wrong = "a, b = map(int, input().split())\nprint(a * b)";
    let add_right = "def add(a, b):\n    return a + b";
    let add_wrong = "def add(a, b):\n    return a - b";
    for (problem, right, wrong) in [
        (&problems[0], stdin_right, stdin_wrong),
        (&problems[1], add_right, add_wrong),
        (&problems[2], add_right, add_wrong),
    ] {
        let suite = TestSuite::parse(&problem.answer).unwrap();
        let good = run_tests(sandbox, &suite, right);
        assert_eq!(good.verdict, CodeVerdict::Passed, "{}", problem.problem);
        let bad = run_tests(sandbox, &suite, wrong);
        assert_eq!(bad.verdict, CodeVerdict::TestsFailed, "{}", problem.problem);
    }
    // 1 * 2 and 5 * 7 are not the sums: both cases fail; a crash is a runtime error.
    let suite = TestSuite::parse(&problems[0].answer).unwrap();
    assert_eq!(run_tests(sandbox, &suite, stdin_wrong).passed(), 0);
    assert_eq!(
        run_tests(sandbox, &suite, "int(input()) / 0").verdict,
        CodeVerdict::RuntimeError
    );
}
