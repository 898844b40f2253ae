//! Programmatic training corpora for synthetic tasks: each task written as a conversation whose
//! assistant turn is either a long chain of thought with self-checks (what the stand-in teacher is
//! trained on) or a short answer without reasoning (what the student base is trained on).

use std::path::Path;

use super::cot::{long_cot, short_answer};
use super::errors::Result;
use super::schema::{rfc3339_utc, split_generation, user_turn, FinishReason, Message, TraceRow};
use super::shards::{ShardOptions, ShardWriter};
use super::synth::SynthTask;

/// Which reply the corpus pairs with each problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStyle {
    /// `<think>…steps…Let me verify…</think>` then the boxed answer.
    LongCot,
    /// The boxed answer alone.
    ShortAnswer,
}

impl ReplyStyle {
    fn teacher_name(self) -> &'static str {
        match self {
            ReplyStyle::LongCot => "programmatic-long-cot",
            ReplyStyle::ShortAnswer => "programmatic-short-answer",
        }
    }
}

/// The trace row of `task` written in `style`.
pub fn programmatic_row(task: &SynthTask, style: ReplyStyle) -> TraceRow {
    let problem = task.to_problem();
    let generation = match style {
        ReplyStyle::LongCot => long_cot(task),
        ReplyStyle::ShortAnswer => short_answer(task),
    };
    let (reasoning, final_text) = split_generation(&generation);
    let user = user_turn(&problem.problem);
    TraceRow {
        id: problem.id,
        source: problem.source,
        problem: problem.problem,
        answer: problem.answer,
        prompt: user.clone(),
        messages: vec![Message::user(user), Message::assistant(generation.clone())],
        completion_tokens: None,
        generation,
        reasoning,
        final_text,
        teacher: style.teacher_name().to_string(),
        temperature: 0.0,
        top_p: 1.0,
        seed: task.seed,
        sample_index: 0,
        finish_reason: FinishReason::Stop,
        prompt_tokens: None,
        created_at: rfc3339_utc(std::time::UNIX_EPOCH),
        metadata: problem.metadata,
        teacher_endpoint: None,
        cost: None,
        round: None,
    }
}

/// Writes the corpus of `tasks` in `style` as trace shards into `dir` (resumable like any shard set).
pub fn write_corpus(
    dir: &Path,
    tasks: &[SynthTask],
    style: ReplyStyle,
    recipe_hash: &str,
) -> Result<usize> {
    let mut writer = ShardWriter::<TraceRow>::open(dir, ShardOptions::new(recipe_hash))?;
    for task in tasks {
        writer.write(programmatic_row(task, style))?;
    }
    Ok(writer.finish()?.total_rows)
}
