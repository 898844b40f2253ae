//! Real-ish traces from MATH-500 (shared by the filter tests and the throughput bench): each
//! reference solution wrapped as an R1 trace, `<think>\n{solution}\n</think>\n\nThe answer is
//! \boxed{answer}.`, plus a corrupted copy with a wrong answer for every fifth problem.

use distill::data::schema::{split_generation, user_turn, FinishReason, Message, TraceRow};
use distill::data::sources::load_builtin;

/// The MATH-500 test file, relative to the project root.
pub const MATH500_PATH: &str = "../shared/data/math500/test.jsonl";

/// A wrong answer for `gold`: the next integer, or a text answer.
pub fn wrong_answer(gold: &str) -> String {
    match gold.trim().parse::<i64>() {
        Ok(n) => (n + 1).to_string(),
        Err(_) => "\\text{none of these}".to_string(),
    }
}

/// The traces: sample 0 of every problem is its reference solution with the gold answer;
/// sample 1 of every fifth problem has a wrong answer. Returns (rows, corrupted count).
pub fn math500_traces() -> (Vec<TraceRow>, usize) {
    let path = std::path::Path::new(MATH500_PATH);
    let problems = load_builtin(path, None).expect("MATH-500 at ../shared/data");
    let text = std::fs::read_to_string(path).expect("MATH-500 at ../shared/data");
    let solutions: Vec<String> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("JSONL");
            record["solution"].as_str().expect("solution").to_string()
        })
        .collect();
    assert_eq!(problems.len(), solutions.len());
    let mut rows = Vec::new();
    let mut corrupted = 0;
    for (index, (problem, solution)) in problems.iter().zip(&solutions).enumerate() {
        let mut answers = vec![problem.answer.clone()];
        if index % 5 == 0 {
            answers.push(wrong_answer(&problem.answer));
            corrupted += 1;
        }
        for (sample, answer) in answers.iter().enumerate() {
            let generation =
                format!("<think>\n{solution}\n</think>\n\nThe answer is \\boxed{{{answer}}}.");
            let (reasoning, final_text) = split_generation(&generation);
            let user = user_turn(&problem.problem);
            rows.push(TraceRow {
                id: problem.id.clone(),
                source: problem.source.clone(),
                problem: problem.problem.clone(),
                answer: problem.answer.clone(),
                prompt: format!("<｜User｜>{user}<｜Assistant｜>"),
                messages: vec![Message::user(user), Message::assistant(generation.clone())],
                completion_tokens: Some(generation.len().div_ceil(4) as u32),
                generation,
                reasoning,
                final_text,
                teacher: "math500-reference".into(),
                temperature: 0.6,
                top_p: 0.95,
                seed: index as u64,
                sample_index: sample as u32,
                finish_reason: FinishReason::Stop,
                prompt_tokens: Some(100),
                created_at: "2026-11-21T10:50:55Z".into(),
                metadata: problem.metadata.clone(),
                teacher_endpoint: None,
                cost: None,
                round: None,
            });
        }
    }
    (rows, corrupted)
}
