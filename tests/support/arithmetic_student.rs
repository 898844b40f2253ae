//! The student base of the short RL and preference runs (tests/grpo.rs, tests/dpo.rs): two-step
//! arithmetic, a base fine-tuned on stepwise replies of which 60% box the first step's value (a
//! systematic error), and its greedy replies to held-out problems, graded.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::{DType, Device};
use distill::data::schema::Message;
use distill::data::sources::Problem;
use distill::data::synth::{generate_tasks, run_steps, SynthTask, TaskKind, TaskSpec};
use distill::model::Architecture;

use super::common;

/// The task of the short runs: two-step arithmetic ("Start with 8. Subtract 1. Multiply by 3.
/// What is the result?"), difficulty 1.
pub fn arithmetic(seed: u64, count: u64) -> Vec<SynthTask> {
    generate_tasks(TaskKind::Arithmetic, 1, seed, count).unwrap()
}

/// The value after each step of an arithmetic task, starting value first.
pub fn step_values(task: &SynthTask) -> Vec<i64> {
    match &task.spec {
        TaskSpec::Arithmetic { start, steps } => run_steps(*start, steps),
        other => panic!("not an arithmetic task: {other:?}"),
    }
}

/// A short worked reply, one `a op b = c.` line per step, then `The answer is \boxed{X}.` with X
/// the result when `correct`, else the value after the first step (stopping one step early: the
/// systematic error of the base's corpus).
pub fn stepwise_reply(task: &SynthTask, correct: bool) -> String {
    let TaskSpec::Arithmetic { start, steps } = &task.spec else {
        panic!("not an arithmetic task")
    };
    let values = step_values(task);
    let lines = distill::data::cot::step_lines(*start, steps);
    let boxed = if correct {
        values[values.len() - 1]
    } else {
        values[1]
    };
    format!(
        "<think>\n{}\n</think>\n\n{}",
        lines.join("\n"),
        distill::data::cot::boxed_sentence(&boxed.to_string())
    )
}

/// Share of the base's corpus whose reply boxes the result; the rest box the first step's value.
pub const CORRECT_SHARE: f64 = 0.4;

/// Trains the student base of the short runs in `dir` and returns its model directory: a fresh BPE
/// tokenizer (numbers as whole tokens) and a 2-layer width-128 decoder, fine-tuned for 6 epochs on
/// stepwise replies to ~2,300 generated problems (none in `held_out`), of which a seeded 40% box
/// the result and 60% the first step's value.
pub fn base_with_a_systematic_error(dir: &Path, held_out: &BTreeSet<String>) -> String {
    use distill::data::corpus::{programmatic_row, ReplyStyle};
    use distill::data::shards::{ShardOptions, ShardWriter};
    let corpus = dir.join("corpus");
    let mut writer = ShardWriter::open(&corpus, ShardOptions::new("grpo-test")).unwrap();
    let mut texts = Vec::new();
    for task in arithmetic(1, 3000)
        .iter()
        .filter(|t| !held_out.contains(&t.problem))
    {
        let draw = (distill::data::hashing::sha256_u64(task.id.as_bytes()) % 10_000) as f64;
        let reply = stepwise_reply(task, draw / 10_000.0 < CORRECT_SHARE);
        let mut row = programmatic_row(task, ReplyStyle::ShortAnswer);
        row.messages[1] = Message::assistant(reply.clone());
        row.generation = reply;
        texts.extend(row.messages.iter().map(|m| m.content.clone()));
        writer.write(row).unwrap();
    }
    writer.finish().unwrap();

    let tokenizer =
        distill::model::bpe::train_bpe(&texts, 512, false, &dir.join("tokenizer")).unwrap();
    let mut config = common::tiny(Architecture::Qwen2, tokenizer.vocab_size());
    config.hidden_size = 128;
    config.intermediate_size = 352;
    config.head_dim = 128 / config.num_attention_heads;
    config.eos_token_ids = tokenizer.eos_token_id().into_iter().collect();
    let weights = distill::model::init::random_weights(&config, 21, &Device::Cpu).unwrap();
    let model =
        distill::model::Decoder::from_weights(&config, &weights, DType::F32, &Device::Cpu).unwrap();
    let student = dir.join("student");
    distill::model::save::save_hf_dir(&model, &tokenizer, &config.eos_token_ids, &student).unwrap();

    let sft: distill::train::sft::SftConfig = toml::from_str(&format!(
        "student = {:?}\ndata = {:?}\nout = {:?}\nlearning_rate = 2e-3\nwarmup_steps = 20\n\
         min_lr_ratio = 0.1\nepochs = 6\nbatch_size = 16\nmax_length = 128\neval_fraction = 0.0\n",
        student.display().to_string(),
        corpus.display().to_string(),
        dir.join("base").display().to_string(),
    ))
    .unwrap();
    let summary = distill::train::sft::run_sft(&sft, false).unwrap();
    summary.model_dir.to_str().unwrap().to_string()
}

/// One held-out problem's greedy reply.
pub struct GreedyReply {
    /// The verifier accepts it.
    pub correct: bool,
    /// It boxes the value after the first step (the base corpus's systematic error).
    pub boxes_first_step: bool,
    /// Its last reasoning line ends with the result (`… = X.` before `</think>`).
    pub reasoning_reaches_result: bool,
}

/// The greedy replies of `model_dir` to arithmetic `tasks`.
pub fn greedy_replies(model_dir: &str, tasks: &[SynthTask]) -> Vec<GreedyReply> {
    use distill::model::generate::{generate, GenerationConfig, GenerationRequest};
    let loaded = distill::model::load(model_dir, &Device::Cpu, DType::F32).unwrap();
    let problems: Vec<Problem> = tasks.iter().map(|t| t.to_problem()).collect();
    let requests: Vec<GenerationRequest> = problems
        .iter()
        .map(|p| GenerationRequest {
            prompt: distill::train::grpo::render_prompt(
                &loaded.tokenizer,
                p,
                None,
                distill::data::schema::DEFAULT_INSTRUCTION,
            )
            .unwrap(),
            seed: 0,
        })
        .collect();
    let config = GenerationConfig {
        sampler: distill::model::SamplerConfig::greedy(),
        max_new_tokens: 40,
        n: 1,
        eos_token_ids: loaded.eos_token_ids.clone(),
        stop_strings: Vec::new(),
    };
    let out = generate(&loaded.model, &loaded.tokenizer, &requests, &config).unwrap();
    assert_eq!(out.len(), problems.len());
    out.iter()
        .map(|c| {
            let p = &problems[c.prompt_index];
            let values = step_values(&tasks[c.prompt_index]);
            let grade = distill::verify::grade(&p.answer, &p.metadata, &c.text).unwrap();
            GreedyReply {
                correct: grade.correct,
                boxes_first_step: grade.answer == Some(values[1].to_string()),
                reasoning_reaches_result: c
                    .text
                    .contains(&format!("= {}.\n</think>", values[values.len() - 1])),
            }
        })
        .collect()
}

/// Mean and standard error of the mean.
pub fn mean_and_se(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (variance / n).sqrt())
}

/// The 250 distinct held-out problems of the short runs (seed 12), and their texts, which every
/// training input leaves out.
pub fn held_out_tasks() -> (Vec<SynthTask>, BTreeSet<String>) {
    let mut texts = BTreeSet::new();
    let tasks: Vec<SynthTask> = arithmetic(12, 400)
        .into_iter()
        .filter(|t| texts.insert(t.problem.clone()))
        .take(250)
        .collect();
    assert_eq!((tasks.len(), texts.len()), (250, 250));
    (tasks, texts)
}

/// The mean and standard error of the per-problem change in greedy correctness, `after` − `before`.
pub fn paired_gain(before: &[GreedyReply], after: &[GreedyReply]) -> (f64, f64) {
    let differences: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| f64::from(u8::from(a.correct)) - f64::from(u8::from(b.correct)))
        .collect();
    mean_and_se(&differences)
}
