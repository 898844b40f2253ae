//! `distill eval` end to end on the real pretrained stories260K model (it scores ~0 on maths, so
//! this checks structure, counts and determinism), on MATH-500 and on a synthetic spec, and the
//! errors for bad prompt files and specs.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use distill::data::prompt_source::load_prompts;
use distill::eval::samples::{read_samples, samples_path};
use distill::eval::{run_eval, EvalConfig, EvalSummary};
use distill::verify::grade;

const MATH500: &str = "../shared/data/math500/test.jsonl";

fn eval(out: &Path, prompts: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distill"))
        .args([
            "eval",
            "--model",
            &common::stories260k(),
            "--prompts",
            prompts,
        ])
        .args([
            "--out",
            &out.display().to_string(),
            "--max-new-tokens",
            "12",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn summary(out: &Path) -> EvalSummary {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn math500_problems_give_k_graded_samples_each_and_repeat_for_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let flags = ["--limit", "3", "--k", "2", "--seed", "5"];
    let run = eval(&a, MATH500, &flags);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("3 problems × 2 samples"));

    let s = summary(&a);
    assert_eq!((s.problems, s.k), (3, 2));
    assert_eq!(s.settings.temperature, 0.6);
    assert_eq!(s.settings.top_p, 0.95);
    assert_eq!(s.per_source.len(), 1);
    assert_eq!(s.per_source["math500-test"].problems, 3);
    assert!((0.0..=1.0).contains(&s.pass_at_1) && (0.0..=1.0).contains(&s.cons_at_k));

    let rows = read_samples(&samples_path(&a)).unwrap();
    assert_eq!(rows.len(), 6);
    let problems = load_prompts(MATH500).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let problem = &problems[i / 2];
        assert_eq!(row.id, problem.id);
        let verdict = grade(&problem.answer, &problem.metadata, &row.completion).unwrap();
        assert_eq!(
            (&row.answer, row.correct),
            (&verdict.answer, verdict.correct)
        );
        assert_eq!(row.sample_index as usize, i % 2);
        assert_eq!(row.source, "math500-test");
        assert!(row.tokens >= 1 && row.tokens <= 12);
        assert!(row.finish_reason == "stop" || row.finish_reason == "length");
    }
    assert_eq!(
        s.generated_tokens,
        rows.iter().map(|r| u64::from(r.tokens)).sum::<u64>()
    );

    assert!(eval(&b, MATH500, &flags).status.success());
    assert_eq!(read_samples(&samples_path(&b)).unwrap(), rows);
    let reseeded = ["--limit", "3", "--k", "2", "--seed", "6"];
    assert!(eval(&c, MATH500, &reseeded).status.success());
    let other = read_samples(&samples_path(&c)).unwrap();
    assert_ne!(
        other.iter().map(|r| &r.completion).collect::<Vec<_>>(),
        rows.iter().map(|r| &r.completion).collect::<Vec<_>>()
    );
}

#[test]
fn a_synthetic_spec_is_evaluated_and_batching_does_not_change_the_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = "synth:arith:difficulty=1:count=3:seed=1";
    let problems = load_prompts(spec).unwrap();
    assert_eq!(problems.len(), 3);
    let mut config = EvalConfig::new(&common::stories260k(), tmp.path().join("one"));
    config.k = 3;
    config.max_new_tokens = 10;
    config.batch_size = 1;
    let one = run_eval(&config, &problems).unwrap();
    assert_eq!((one.problems, one.k), (3, 3));
    assert!(one.per_source.contains_key("synth-arith"));
    config.batch_size = 3;
    config.out = tmp.path().join("three");
    run_eval(&config, &problems).unwrap();
    let rows = read_samples(&samples_path(&tmp.path().join("one"))).unwrap();
    assert_eq!(rows.len(), 9);
    assert_eq!(
        read_samples(&samples_path(&tmp.path().join("three"))).unwrap(),
        rows
    );
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids[0], "synth-arith-d1-1-0");
    assert_eq!(ids[8], "synth-arith-d1-1-2");
}

#[test]
fn a_malformed_prompts_file_is_refused_with_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = std::fs::read_to_string(MATH500)
        .unwrap()
        .lines()
        .take(3)
        .map(str::to_string)
        .collect();
    let mut third: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&lines[2]).unwrap();
    third.remove("answer");
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{}\n{}\n",
            lines[0],
            lines[1],
            serde_json::Value::Object(third)
        ),
    )
    .unwrap();
    let out = eval(&tmp.path().join("out"), &bad.display().to_string(), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.jsonl") && stderr.contains("line 3") && stderr.contains("`answer`"),
        "{stderr}"
    );
    assert!(!tmp.path().join("out/summary.json").exists());

    for (spec, needle) in [
        (
            "synth:arith:count=x",
            "count `x` is not a non-negative integer",
        ),
        ("synth:difficulty=2", "unknown task kind `difficulty=2`"),
        ("synth:poetry", "poetry"),
        ("synth:arith:colour=red", "unknown key `colour`"),
    ] {
        let error = format!("{:#}", load_prompts(spec).unwrap_err());
        assert!(error.contains(needle), "{spec}: {error}");
    }
}

#[test]
fn the_real_prompt_sets_are_accepted_as_they_are() {
    for (path, count, source) in [
        (MATH500, 500, "math500-test"),
        ("../shared/data/gsm8k/test.jsonl", 1319, "gsm8k-test"),
        (
            "../shared/data/qwen25_math_eval/aime24/test.jsonl",
            30,
            "aime24-test",
        ),
        (
            "../shared/data/qwen25_math_eval/amc23/test.jsonl",
            40,
            "amc23-test",
        ),
    ] {
        let problems = load_prompts(path).unwrap();
        assert_eq!(problems.len(), count, "{path}");
        assert!(problems.iter().all(|p| p.source == source), "{path}");
        assert!(problems.iter().all(|p| !p.answer.is_empty()), "{path}");
    }
    // A file in none of the built-in layouts is read by its `problem` and `answer` columns.
    let tmp = tempfile::tempdir().unwrap();
    let own = tmp.path().join("mine.jsonl");
    std::fs::write(&own, "{\"problem\": \"1+1?\", \"answer\": \"2\"}\n").unwrap();
    let problems = load_prompts(&own.display().to_string()).unwrap();
    assert_eq!(
        (problems[0].source.as_str(), problems[0].answer.as_str()),
        ("mine", "2")
    );
}
