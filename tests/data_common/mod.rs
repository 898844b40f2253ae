//! Shared fixtures of the data tests: deterministic trace rows built from synthetic tasks.

use std::time::{Duration, UNIX_EPOCH};

use distill::data::cot::long_cot;
use distill::data::schema::{
    rfc3339_utc, split_generation, user_turn, FinishReason, Message, TraceRow,
};
use distill::data::sources::Problem;
use distill::data::synth::{generate_tasks, TaskKind};
use serde_json::json;

/// Synthetic problems used as a prompt set.
pub fn problems(count: u64) -> Vec<Problem> {
    generate_tasks(TaskKind::Arithmetic, 2, 2026, count)
        .unwrap()
        .iter()
        .map(|task| task.to_problem())
        .collect()
}

/// The trace a fake teacher produces for sample `sample_index` of `problem`; a pure function
/// of its inputs, like a seeded generation.
pub fn trace_row(problem: &Problem, sample_index: u32) -> TraceRow {
    let index: u64 = problem.metadata["index"].as_u64().unwrap();
    let task = distill::data::synth::generate_task(TaskKind::Arithmetic, 2, 2026, index).unwrap();
    let generation = long_cot(&task);
    let (reasoning, final_text) = split_generation(&generation);
    let user = user_turn(&problem.problem);
    TraceRow {
        id: problem.id.clone(),
        source: problem.source.clone(),
        problem: problem.problem.clone(),
        answer: problem.answer.clone(),
        prompt: format!("<｜User｜>{user}<｜Assistant｜><think>\n"),
        messages: vec![Message::user(user), Message::assistant(generation.clone())],
        completion_tokens: Some(generation.len() as u32 / 3),
        generation,
        reasoning,
        final_text,
        teacher: "synthetic-cot".into(),
        temperature: 0.6,
        top_p: 0.95,
        seed: 1000 * index + u64::from(sample_index),
        sample_index,
        finish_reason: if sample_index == 1 {
            FinishReason::Length
        } else {
            FinishReason::Stop
        },
        prompt_tokens: Some(40),
        created_at: rfc3339_utc(UNIX_EPOCH + Duration::from_secs(1_700_000_000 + index)),
        metadata: serde_json::Map::from_iter([("difficulty".to_string(), json!(2))]),
        teacher_endpoint: None,
        cost: None,
        round: None,
    }
}

/// Every (problem, sample) row of a run, in generation order.
pub fn all_rows(problems: &[Problem], samples: u32) -> Vec<TraceRow> {
    problems
        .iter()
        .flat_map(|problem| (0..samples).map(move |sample| trace_row(problem, sample)))
        .collect()
}

/// The same rows sorted as `read_trace_rows` returns them.
pub fn sorted(mut rows: Vec<TraceRow>) -> Vec<TraceRow> {
    rows.sort_by(|a, b| (&a.id, a.sample_index).cmp(&(&b.id, b.sample_index)));
    rows
}
