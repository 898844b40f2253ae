//! MATH-500 (real data): every gold answer must verify against itself and
//! against the last `\boxed{}` of its own reference solution, and distinct
//! answers must not verify against each other.

use std::time::Instant;

use distill::verify::{extract_answer, verify, AnswerMarker};

const DATA: &str = "../shared/data/math500/test.jsonl";

/// Known misses (unique_id, reason). Keep short and honest.
const KNOWN_LIMITATIONS: &[(&str, &str)] = &[];

struct Problem {
    unique_id: String,
    answer: String,
    solution: String,
}

fn load() -> Vec<Problem> {
    let text = std::fs::read_to_string(DATA).expect("MATH-500 data at ../shared/data");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("valid JSONL");
            let field = |k: &str| v[k].as_str().expect("string field").to_string();
            Problem {
                unique_id: field("unique_id"),
                answer: field("answer"),
                solution: field("solution"),
            }
        })
        .collect()
}

#[test]
fn gold_answers_verify_against_themselves_and_their_solutions() {
    let problems = load();
    assert_eq!(problems.len(), 500);
    let start = Instant::now();
    let mut misses = Vec::new();
    for p in &problems {
        let boxed = extract_answer(&p.solution);
        let boxed_ok = boxed
            .as_ref()
            .is_some_and(|e| e.marker == AnswerMarker::Boxed);
        let boxed_answer = boxed.map(|e| e.answer).unwrap_or_default();
        let self_ok = verify(&p.answer, &p.answer);
        let solution_ok = boxed_ok && verify(&p.answer, &boxed_answer);
        let trace = format!(
            "<think>{}</think>\nSo the answer is $\\boxed{{{}}}$.",
            p.solution, p.answer
        );
        let trace_ok = extract_answer(&trace).is_some_and(|e| verify(&p.answer, &e.answer));
        if !(self_ok && solution_ok && trace_ok) {
            misses.push(p.unique_id.clone());
        }
    }
    let elapsed = start.elapsed();
    let ok = problems.len() - misses.len();
    let rate = ok as f64 / problems.len() as f64;
    println!(
        "MATH-500 self/solution verification: {ok}/{} = {:.1}% in {elapsed:.2?}",
        problems.len(),
        100.0 * rate
    );
    let unexplained: Vec<&String> = misses
        .iter()
        .filter(|id| !KNOWN_LIMITATIONS.iter().any(|(known, _)| known == id))
        .collect();
    assert!(
        unexplained.is_empty(),
        "unexplained misses: {unexplained:?}"
    );
    assert!(rate >= 0.99, "rate {rate}");
}

#[test]
fn distinct_gold_answers_do_not_match_each_other() {
    let problems = load();
    let mut accepted = Vec::new();
    for pair in problems.windows(2) {
        let (a, b) = (&pair[0].answer, &pair[1].answer);
        if verify(a, b) {
            accepted.push(format!("{a:?} ~ {b:?}"));
        }
    }
    println!("neighbouring gold answers accepted as equivalent: {accepted:?}");
    // Every accepted pair must be genuinely equal, which shows as symmetry.
    for pair in problems.windows(2) {
        let (a, b) = (&pair[0].answer, &pair[1].answer);
        assert_eq!(
            verify(a, b),
            verify(b, a),
            "asymmetric verdict for {a:?} / {b:?}"
        );
    }
    assert!(accepted.len() <= 5, "too many cross matches: {accepted:?}");
}

/// AIME 2024 (`answer` holds the number) and AMC 2023 (the number is a
/// float under `answer`): the integer answer, as a model would box it,
/// must verify; the answer plus one must not.
#[test]
fn aime24_and_amc23_answers() {
    for (path, key) in [
        (
            "../shared/data/qwen25_math_eval/aime24/test.jsonl",
            "answer",
        ),
        ("../shared/data/qwen25_math_eval/amc23/test.jsonl", "answer"),
    ] {
        let text = std::fs::read_to_string(path).expect("eval data at ../shared/data");
        let mut checked = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let row: serde_json::Value = serde_json::from_str(line).expect("valid JSONL");
            let gold = match &row[key] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let value: f64 = gold.parse().expect("numeric answer");
            let boxed = format!("<think>work</think> so $\\boxed{{{}}}$", value.round());
            let pred = extract_answer(&boxed).map(|e| e.answer).unwrap_or_default();
            assert!(verify(&gold, &pred), "{path}: {gold} vs {pred}");
            assert!(
                !verify(&gold, &format!("{}", value.round() + 1.0)),
                "{path}: {gold}"
            );
            checked += 1;
        }
        assert!(checked >= 30, "{path}: {checked}");
    }
}
