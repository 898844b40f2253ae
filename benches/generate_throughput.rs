//! Generated tokens per second of the local teacher (stories260K, CPU, f32) at batch 1, 8 and
//! 32 prompts per generation call, on rendered synthetic-arithmetic prompts (ChatML).
//!
//! `cargo bench --bench generate_throughput` (optional args: max new tokens, default 64;
//! prompts per measurement, default 32).

use std::time::Instant;

use candle_core::{DType, Device};
use distill::data::synth::{generate_tasks, TaskKind};
use distill::generate::prompts::{problem_seed, Renderer};
use distill::teacher::local::LocalTeacher;
use distill::teacher::{PromptJob, SamplingParams, Teacher};

const MODEL: &str = "../shared/data/llama2c_stories260K/stories260K.bin";

fn main() -> anyhow::Result<()> {
    distill::runtime::init();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let max_new_tokens: usize = args.first().map_or(Ok(64), |a| a.parse())?;
    let prompts: usize = args.get(1).map_or(Ok(32), |a| a.parse())?;

    let problems: Vec<_> = generate_tasks(TaskKind::Arithmetic, 2, 7, prompts as u64)?
        .iter()
        .map(|t| t.to_problem())
        .collect();
    let mut teacher = LocalTeacher::load(MODEL, &Device::Cpu, DType::F32, 1)?;
    let renderer = Renderer {
        tokenizer: Some(teacher.tokenizer()),
        system_prompt: None,
        instruction: distill::data::schema::DEFAULT_INSTRUCTION,
    };
    let jobs: Vec<PromptJob> = problems
        .iter()
        .map(|p| {
            let rendered = renderer.render(p)?;
            Ok(PromptJob {
                messages: rendered.messages,
                prompt: rendered.prompt,
                seed: problem_seed(0, &p.id),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let params = SamplingParams {
        temperature: 0.8,
        top_p: 0.95,
        top_k: 0,
        n: 1,
        max_new_tokens,
    };
    // Warm up (allocator, rayon pool).
    teacher.sample(&jobs[..1], &params)?;

    println!("local teacher, stories260K, cpu f32, {prompts} prompts, max_new_tokens {max_new_tokens}, n 1");
    println!("batch  tokens  seconds  tokens/s  ratio_vs_batch1");
    let mut baseline = None;
    for batch in [1usize, 8, 32] {
        let started = Instant::now();
        let mut tokens = 0u64;
        for chunk in jobs.chunks(batch) {
            for sample in teacher.sample(chunk, &params)? {
                tokens += u64::from(sample.completion_tokens.unwrap_or(0));
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let rate = tokens as f64 / seconds;
        let base = *baseline.get_or_insert(rate);
        println!(
            "{batch:>5}  {tokens:>6}  {seconds:>7.2}  {rate:>8.0}  {:>6.2}x",
            rate / base
        );
    }
    Ok(())
}
