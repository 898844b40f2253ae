//! Shared fixtures of the filter tests: hand-made trace rows, labelled by what is wrong with
//! them, written as generate-stage shards.
#![allow(dead_code)]

use std::path::Path;

use distill::data::schema::{split_generation, user_turn, FinishReason, Message, TraceRow};
use distill::data::shards::{ShardOptions, ShardWriter};
use serde_json::{Map, Value};

/// The shared real data, relative to the project root.
pub const DATA: &str = "../shared/data";

/// The MATH-500 test file.
pub fn math500() -> String {
    format!("{DATA}/math500/test.jsonl")
}

/// The first problem of MATH-500, copied verbatim (a contaminated training problem).
pub const MATH500_FIRST: &str = "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your answer in the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$";

/// A readable reasoning of about 40 words about `topic`.
pub fn reasoning(topic: &str) -> String {
    format!(
        "We need to work out {topic}. First I restate the question in my own words, then I \
         compute the value step by step and check the arithmetic twice. Each step follows \
         from the previous one, so the result is consistent."
    )
}

/// An R1-style generation: reasoning in think tags, then a boxed answer.
pub fn r1(reasoning: &str, boxed: &str) -> String {
    format!("<think>\n{reasoning}\n</think>\n\nThe answer is $\\boxed{{{boxed}}}$.")
}

/// A trace row for `problem` with gold `answer`; stop finish, 80 completion tokens.
pub fn row(id: &str, problem: &str, answer: &str, sample_index: u32, generation: &str) -> TraceRow {
    let (reasoning, final_text) = split_generation(generation);
    let user = user_turn(problem);
    TraceRow {
        id: id.to_string(),
        source: id.split('/').next().unwrap_or(id).to_string(),
        problem: problem.to_string(),
        answer: answer.to_string(),
        prompt: format!("<｜User｜>{user}<｜Assistant｜>"),
        messages: vec![Message::user(user), Message::assistant(generation)],
        generation: generation.to_string(),
        reasoning,
        final_text,
        teacher: "hand-made".into(),
        temperature: 0.6,
        top_p: 0.95,
        seed: u64::from(sample_index),
        sample_index,
        finish_reason: FinishReason::Stop,
        prompt_tokens: Some(30),
        completion_tokens: Some(80),
        created_at: "2026-11-21T10:50:55Z".into(),
        metadata: Map::new(),
        teacher_endpoint: None,
        cost: None,
        round: None,
    }
}

/// The same row with other completion tokens.
pub fn with_tokens(mut row: TraceRow, tokens: u32) -> TraceRow {
    row.completion_tokens = Some(tokens);
    row
}

/// The same row with metadata.
pub fn with_metadata(mut row: TraceRow, metadata: Value) -> TraceRow {
    if let Value::Object(map) = metadata {
        row.metadata = map;
    }
    row
}

/// Writes `rows` as a generate-stage shard directory.
pub fn write_input(dir: &Path, rows: &[TraceRow], rows_per_shard: usize) {
    let options = ShardOptions {
        rows_per_shard,
        recipe_hash: "generate-test".into(),
        force: false,
    };
    let mut writer = ShardWriter::<TraceRow>::open(dir, options).unwrap();
    for row in rows {
        assert!(writer.write(row.clone()).unwrap());
    }
    writer.finish().unwrap();
}

/// One trace per label (`(label, row)`); the problem `sum/1` has a clean correct sample 0,
/// `sum/2` a clean correct sample 0 too (from another source).
pub fn labelled() -> Vec<(&'static str, TraceRow)> {
    let p1 = "What is the sum of two and three?";
    let clean = r1(&reasoning("two plus three"), "5");
    let mixed = r1(
        "We need two plus three. 我们 先 把 两 个 数 相 加 然 后 检 查 结 果 是 否 正 确 因 为 这 样 可 以 避 免 错 误 所 以 答 案 是 五 The sum is five.",
        "5",
    );
    let looping = r1(&"Let me check the sum again. ".repeat(80), "5");
    let mut truncated = row(
        "sum/1",
        p1,
        "5",
        4,
        &format!("<think>\n{}", reasoning("two plus three")),
    );
    truncated.finish_reason = FinishReason::Length;
    let contaminated = r1(
        &reasoning("the polar coordinates"),
        "\\left( 3, \\frac{\\pi}{2} \\right)",
    );
    vec![
        ("clean", row("sum/1", p1, "5", 0, &clean)),
        ("duplicate", row("sum/1", p1, "5", 1, &clean)),
        (
            "wrong_answer",
            row("sum/1", p1, "5", 2, &r1(&reasoning("two plus three"), "6")),
        ),
        (
            "no_answer",
            row(
                "sum/1",
                p1,
                "5",
                3,
                &format!(
                    "<think>\n{}\n</think>\n\nI could not decide.",
                    reasoning("two plus three")
                ),
            ),
        ),
        ("truncated", truncated),
        ("language_mixing", row("sum/1", p1, "5", 5, &mixed)),
        ("repetition", row("sum/1", p1, "5", 6, &looping)),
        (
            "bad_format",
            row(
                "sum/1",
                p1,
                "5",
                7,
                &format!(
                    "<think>\n{}\n<think>\n</think>\n\nSo $\\boxed{{5}}$.",
                    reasoning("two plus three")
                ),
            ),
        ),
        (
            "clean",
            row(
                "product/2",
                "What is six times seven?",
                "42",
                0,
                &r1(&reasoning("six times seven"), "42"),
            ),
        ),
        (
            "contaminated",
            row(
                "polar/3",
                MATH500_FIRST,
                "\\left( 3, \\frac{\\pi}{2} \\right)",
                0,
                &contaminated,
            ),
        ),
    ]
}
pub mod math500;
