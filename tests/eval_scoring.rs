//! pass@1 and cons@k on hand-made sample sets, against values computed by hand.

use distill::eval::samples::{read_samples, write_samples, SampleRow};
use distill::eval::scoring::{aggregate, majority_vote, score_problem, GradedSample};
use distill::eval::{accuracy_by_source, problem_scores};

fn sample(answer: Option<&str>, correct: bool) -> GradedSample {
    GradedSample {
        answer: answer.map(str::to_string),
        correct,
    }
}

#[test]
fn equivalent_answers_written_differently_vote_together() {
    // gold 1/2: "\frac{1}{2}", "0.5" and "1/2" are one answer (3 votes) against "2" (2 votes).
    let samples = [
        sample(Some("2"), false),
        sample(Some("\\frac{1}{2}"), true),
        sample(Some("2"), false),
        sample(Some("0.5"), true),
        sample(Some("1/2"), true),
    ];
    assert_eq!(majority_vote(&samples), Some(1));
    let score = score_problem(&samples);
    assert!((score.pass_at_1 - 3.0 / 5.0).abs() < 1e-12);
    assert!(score.cons_correct);
}

#[test]
fn ties_go_to_the_answer_seen_first() {
    // 3 and 4 have two votes each; gold is 4.
    let three_first = [
        sample(Some("3"), false),
        sample(Some("4"), true),
        sample(Some("4.0"), true),
        sample(Some("3"), false),
    ];
    assert_eq!(majority_vote(&three_first), Some(0));
    assert!(!score_problem(&three_first).cons_correct);
    let four_first = [
        sample(Some("4"), true),
        sample(Some("3"), false),
        sample(Some("3"), false),
        sample(Some("4.0"), true),
    ];
    assert_eq!(majority_vote(&four_first), Some(0));
    assert!(score_problem(&four_first).cons_correct);
    assert_eq!(score_problem(&four_first).pass_at_1, 0.5);
}

#[test]
fn samples_without_an_answer_do_not_vote() {
    let none = [sample(None, false), sample(None, false)];
    assert_eq!(majority_vote(&none), None);
    let score = score_problem(&none);
    assert_eq!(score.pass_at_1, 0.0);
    assert!(!score.cons_correct);

    // One lone answer beats any number of unanswered samples.
    let one = [
        sample(None, false),
        sample(Some("7"), true),
        sample(None, false),
    ];
    assert_eq!(majority_vote(&one), Some(1));
    let score = score_problem(&one);
    assert!((score.pass_at_1 - 1.0 / 3.0).abs() < 1e-12);
    assert!(score.cons_correct);
}

#[test]
fn a_correct_minority_does_not_win_the_vote() {
    let samples = [
        sample(Some("10"), true),
        sample(Some("12"), false),
        sample(Some("12"), false),
    ];
    let score = score_problem(&samples);
    assert!((score.pass_at_1 - 1.0 / 3.0).abs() < 1e-12);
    assert!(!score.cons_correct);
}

fn row(id: &str, source: &str, index: u32, answer: Option<&str>, correct: bool) -> SampleRow {
    SampleRow {
        id: id.into(),
        source: source.into(),
        sample_index: index,
        completion: format!("answer {answer:?}"),
        answer: answer.map(str::to_string),
        correct,
        tokens: 3 + index,
        finish_reason: if index == 0 { "length" } else { "stop" }.into(),
    }
}

#[test]
fn rows_are_scored_per_problem_and_per_source() {
    // p1 (math): 2/2 correct, vote correct. p2 (math): 1/2, tie 5 vs 6 → first (sample 0 = "6",
    // after sorting by sample_index) wrong. p3 (gsm): 0/2, no answers.
    let rows = vec![
        row("p1", "math", 1, Some("1"), true),
        row("p1", "math", 0, Some("1.0"), true),
        row("p2", "math", 1, Some("5"), true),
        row("p2", "math", 0, Some("6"), false),
        row("p3", "gsm", 0, None, false),
        row("p3", "gsm", 1, None, false),
    ];
    let scores = problem_scores(&rows);
    let ids: Vec<&str> = scores.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, ["p1", "p2", "p3"]);
    let per_problem: Vec<(f64, bool)> = scores
        .iter()
        .map(|(_, _, s)| (s.pass_at_1, s.cons_correct))
        .collect();
    assert_eq!(per_problem, [(1.0, true), (0.5, false), (0.0, false)]);
    let (pass, cons) = aggregate(&scores.iter().map(|(_, _, s)| *s).collect::<Vec<_>>());
    assert!((pass - 0.5).abs() < 1e-12);
    assert!((cons - 1.0 / 3.0).abs() < 1e-12);
    let (overall, per_source) = accuracy_by_source(&scores);
    assert_eq!(overall.problems, 3);
    assert_eq!(per_source["math"].problems, 2);
    assert!((per_source["math"].pass_at_1 - 0.75).abs() < 1e-12);
    assert!((per_source["math"].cons_at_k - 0.5).abs() < 1e-12);
    assert_eq!(per_source["gsm"].pass_at_1, 0.0);
}

#[test]
fn samples_parquet_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.parquet");
    let rows = vec![
        row("a", "s", 0, Some("\\frac{1}{2}"), true),
        row("a", "s", 1, None, false),
    ];
    write_samples(&path, &rows).unwrap();
    assert_eq!(read_samples(&path).unwrap(), rows);
    std::fs::write(&path, b"not parquet").unwrap();
    let error = read_samples(&path).unwrap_err().to_string();
    assert!(error.contains("samples.parquet"), "{error}");
}
