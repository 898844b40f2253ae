//! GRPO: with μ = 1 and no KL the update direction is the policy gradient with group-normalised
//! advantages; rewards and advantages behave as documented; and a short run on a synthetic task
//! raises the training reward and the held-out greedy accuracy (issue 7).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use distill::data::schema::Message;
use distill::data::sources::Problem;
use distill::data::synth::{generate_tasks, run_steps, SynthTask, TaskKind, TaskSpec};
use distill::model::{Architecture, Completion, FinishReason};
use distill::train::grpo::{policy_loss, GrpoConfig, RolloutBatch};
use distill::train::rewards::{advantages, AdvantageScaling, RewardConfig, Scored};

fn grpo_config(extra: &str) -> GrpoConfig {
    toml::from_str(&format!(
        "policy = \"unused\"\nout = \"unused\"\nmax_new_tokens = 9\n{extra}"
    ))
    .unwrap()
}

/// Two prompts of different lengths, four sampled completions each (of different lengths).
fn rollouts(vocab: u32) -> (Vec<Vec<u32>>, Vec<Completion>) {
    let prompts = vec![vec![1, 5, 9, 3], vec![2, 7]];
    let mut completions = Vec::new();
    for (p, prompt) in prompts.iter().enumerate() {
        for s in 0..4 {
            let len = 3 + (p + 2 * s) % 5;
            let tokens: Vec<u32> = (0..len)
                .map(|t| ((p * 31 + s * 17 + t * 7 + 3) as u32) % vocab)
                .collect();
            completions.push(Completion {
                prompt_index: p,
                sample_index: s,
                completion_tokens: tokens.len(),
                tokens,
                text: String::new(),
                finish_reason: FinishReason::Length,
                prompt_tokens: prompt.len(),
            });
        }
    }
    (prompts, completions)
}

#[test]
fn with_mu_1_and_no_kl_the_update_is_the_group_normalised_policy_gradient() {
    let config = common::tiny(Architecture::Qwen2, 61);
    let t = common::trainable(&config, 13, DType::F32);
    let (prompts, completions) = rollouts(61);
    let batch = RolloutBatch::new(&prompts, &completions, None, false, &Device::Cpu).unwrap();
    let rewards = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
    let (adv, flat) = advantages(&rewards, 4, AdvantageScaling::Group);
    assert_eq!(flat, 0);
    let adv_t = Tensor::from_vec(
        adv.iter().map(|&a| a as f32).collect::<Vec<_>>(),
        8,
        &Device::Cpu,
    )
    .unwrap();
    let old = batch
        .log_probs(&t.model.detached().unwrap())
        .unwrap()
        .logp
        .detach();
    let cfg = grpo_config("beta = 0.0\nmu = 1\nloss = \"grpo\"");
    let (loss, _) = policy_loss(&t.model, &batch, &old, None, &adv_t, &cfg).unwrap();
    let grpo_grads = loss.loss.backward().unwrap();

    // The policy gradient written out: -(1/B) Σ_i A_i · mean_t log π(o_it).
    let logp = batch.log_probs(&t.model).unwrap().logp;
    let mask = batch.target_mask().unwrap();
    let per_sequence = ((logp * &mask).unwrap().sum(1).unwrap() / mask.sum(1).unwrap()).unwrap();
    let pg = (per_sequence * &adv_t)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap();
    let pg_grads = pg.backward().unwrap();

    for (name, var) in &t.params {
        let a = grpo_grads.get(var).unwrap();
        let b = pg_grads.get(var).unwrap();
        let scale = common::max_abs_diff(b, &b.zeros_like().unwrap()).max(1e-12);
        let rel = common::max_abs_diff(a, b) / scale;
        assert!(rel < 1e-5, "{name}: relative difference {rel}");
    }
    assert!(
        f64::from(loss.clip_fraction.to_scalar::<f32>().unwrap()) == 0.0,
        "ratio is 1: nothing clipped"
    );
}

#[test]
fn advantages_are_group_relative_and_flat_groups_are_counted() {
    let (adv, flat) = advantages(
        &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        4,
        AdvantageScaling::Group,
    );
    assert_eq!(flat, 1, "the second group has no reward spread");
    assert!(adv[4..].iter().all(|&a| a == 0.0));
    let expected = 0.5 / (0.5 + 1e-4);
    assert!(
        (adv[0] - expected).abs() < 1e-12 && (adv[1] + expected).abs() < 1e-12,
        "{adv:?}"
    );
    let (plain, _) = advantages(&[3.0, 1.0], 2, AdvantageScaling::None);
    assert_eq!(plain, vec![1.0, -1.0]);
}

#[test]
fn rewards_score_accuracy_format_and_overlong_separately() {
    let config = RewardConfig {
        format: 0.5,
        overlong_buffer: 4,
        ..Default::default()
    };
    let gold_checker = distill::verify::Checker::Gold;
    let item = |completion: &'static str, tokens: usize| Scored {
        prompt: "What is 2+2?",
        completion,
        gold: "4",
        checker: &gold_checker,
        completion_tokens: tokens,
        max_new_tokens: 10,
    };
    let good = config.score(&item(
        "<think>\n2+2=4\n</think>\n\nThe answer is \\boxed{4}.",
        5,
    ));
    assert_eq!((good.accuracy, good.format, good.overlong), (1.0, 1.0, 0.0));
    assert!((good.total - 1.5).abs() < 1e-12);
    let wrong = config.score(&item("The answer is \\boxed{5}.", 8));
    assert_eq!((wrong.accuracy, wrong.format), (0.0, 0.0));
    assert!(
        (wrong.overlong + 0.5).abs() < 1e-12,
        "2 tokens into a 4-token buffer: -0.5"
    );
    let countdown: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"verifier": "countdown", "numbers": [4, 8], "target": 2}"#)
            .unwrap();
    let countdown = distill::verify::Checker::for_metadata(&countdown).unwrap();
    let c = RewardConfig::default().score(&Scored {
        checker: &countdown,
        gold: "8 / 4",
        ..item("\\boxed{8/4}", 3)
    });
    assert_eq!(c.accuracy, 1.0);
}

/// The task of the short GRPO run: two-step arithmetic ("Start with 8. Subtract 1. Multiply by 3.
/// What is the result?"), difficulty 1.
fn arithmetic(seed: u64, count: u64) -> Vec<SynthTask> {
    generate_tasks(TaskKind::Arithmetic, 1, seed, count).unwrap()
}

/// The value after each step of an arithmetic task, starting value first.
fn step_values(task: &SynthTask) -> Vec<i64> {
    match &task.spec {
        TaskSpec::Arithmetic { start, steps } => run_steps(*start, steps),
        other => panic!("not an arithmetic task: {other:?}"),
    }
}

/// A short worked reply, one `a op b = c.` line per step, then `The answer is \boxed{X}.` with X
/// the result when `correct`, else the value after the first step (stopping one step early: the
/// systematic error of the base's corpus).
fn stepwise_reply(task: &SynthTask, correct: bool) -> String {
    let TaskSpec::Arithmetic { steps, .. } = &task.spec else {
        panic!("not an arithmetic task")
    };
    let values = step_values(task);
    let lines: Vec<String> = steps
        .iter()
        .zip(values.windows(2))
        .map(|(step, pair)| {
            format!(
                "{} {} {} = {}.",
                pair[0],
                step.op.symbol(),
                step.operand,
                pair[1]
            )
        })
        .collect();
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
const CORRECT_SHARE: f64 = 0.4;

/// Trains the GRPO test's student base in `dir` and returns its model directory: a fresh BPE
/// tokenizer (numbers as whole tokens) and a 2-layer width-128 decoder, fine-tuned for 6 epochs on
/// the stepwise replies of ~2,300 problems (none in `held_out`), of which a seeded 40% box the
/// result and 60% the first step's value.
fn base_with_a_systematic_error(dir: &Path, held_out: &BTreeSet<String>) -> String {
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

/// Each problem's greedy answer under `model_dir`: whether it is correct, and the extracted answer.
fn greedy_answers(model_dir: &str, problems: &[Problem]) -> Vec<(bool, Option<String>)> {
    use distill::model::generate::{generate, GenerationConfig, GenerationRequest};
    let loaded = distill::model::load(model_dir, &Device::Cpu, DType::F32).unwrap();
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
            let grade = distill::verify::grade(&p.answer, &p.metadata, &c.text).unwrap();
            (grade.correct, grade.answer)
        })
        .collect()
}

/// Mean and standard error of the mean.
fn mean_and_se(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (variance / n).sqrt())
}

/// Issue 7's "must show": on a synthetic task where the base student's samples are sometimes right,
/// a short GRPO run, rewarded only by the verifier, raises the training reward and the held-out
/// greedy accuracy, and the KL to the base stays finite.
///
/// Design (R1-Zero's premise: RL amplifies behaviour already present in the base's samples). The
/// base is a 2-layer width-128 decoder fine-tuned on worked two-step arithmetic
/// (`<think>\n8 - 1 = 7.\n7 * 3 = 21.\n</think>\n\nThe answer is \boxed{21}.`) where a seeded 40%
/// of the replies box the result and 60% box the value after the first step (`\boxed{7}`: it
/// stops one step early). It learns the steps (its greedy reasoning reaches the result on ~2/3 of
/// held-out problems) and the 40/60 mixture, so greedy decoding mostly follows the majority error
/// while sampling at temperature 1 boxes the result often enough that most groups have reward
/// spread. GRPO (40 steps of 8 prompts × 8 samples, accuracy reward from the real verifier, KL
/// coefficient 0.04 to the base) must shift the policy toward boxing the result. The problems of
/// the held-out set (250 distinct texts) are in neither the base's corpus nor GRPO's prompts; base
/// and GRPO policy answer them greedily, and the gain is the mean of the paired per-problem
/// differences, with its standard error. Everything is seeded, so the numbers are reproducible.
///
/// Asserted: the base's training reward (its sampled pass rate) is non-zero; the mean reward of
/// the last 10 steps exceeds that of the first 10 by at least 0.05 and 3 standard errors (of the
/// per-step means); the held-out gain is at least 0.1 and 3 standard errors; the KL is finite at
/// every step. With learning rate 0 it fails (gain 0, no reward trend).
#[test]
fn a_short_grpo_run_raises_reward_and_held_out_accuracy() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut held_out_texts = BTreeSet::new();
    let held_out_tasks: Vec<SynthTask> = arithmetic(12, 400)
        .into_iter()
        .filter(|t| held_out_texts.insert(t.problem.clone()))
        .take(250)
        .collect();
    assert_eq!(held_out_tasks.len(), 250);
    held_out_texts = held_out_tasks.iter().map(|t| t.problem.clone()).collect();
    let held_out: Vec<Problem> = held_out_tasks.iter().map(|t| t.to_problem()).collect();
    let train: Vec<Problem> = arithmetic(11, 1024)
        .iter()
        .filter(|t| !held_out_texts.contains(&t.problem))
        .map(|t| t.to_problem())
        .collect();

    let base_dir = base_with_a_systematic_error(tmp.path(), &held_out_texts);
    let before = greedy_answers(&base_dir, &held_out);
    let mut cfg = grpo_config(
        "steps = 40\ngroup_size = 8\nprompts_per_step = 8\nlearning_rate = 1e-4\nbeta = 0.04\n\
         temperature = 1.0\nseed = 0",
    );
    cfg.policy = base_dir.clone();
    cfg.out = tmp.path().join("grpo");
    cfg.max_new_tokens = 40;
    let summary = distill::train::grpo::run_grpo(&cfg, &train, false).unwrap();
    let after = greedy_answers(summary.model_dir.to_str().unwrap(), &held_out);

    let n = held_out.len() as f64;
    let share =
        |answers: &[(bool, Option<String>)]| answers.iter().filter(|a| a.0).count() as f64 / n;
    // How often the greedy answer is the first step's value: the base's systematic error.
    let stops_early = |answers: &[(bool, Option<String>)]| {
        answers
            .iter()
            .zip(&held_out_tasks)
            .filter(|(a, t)| a.1.as_deref() == Some(step_values(t)[1].to_string().as_str()))
            .count() as f64
            / n
    };
    let differences: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| f64::from(u8::from(a.0)) - f64::from(u8::from(b.0)))
        .collect();
    let (gain, gain_se) = mean_and_se(&differences);

    let records =
        distill::train::metrics::MetricsLog::read(&cfg.out.join("metrics.jsonl")).unwrap();
    assert_eq!(records.len(), 40);
    let series =
        |key: &str| -> Vec<f64> { records.iter().map(|r| r[key].as_f64().unwrap()).collect() };
    let rewards = series("reward");
    let (early, early_se) = mean_and_se(&rewards[..10]);
    let (late, late_se) = mean_and_se(&rewards[rewards.len() - 10..]);
    let rise_se = early_se.hypot(late_se);
    let flat = series("zero_std_group_fraction");
    let kl = series("kl");
    let max_kl = kl.iter().copied().fold(0.0, f64::max);
    println!(
        "GRPO, 40 steps × 8 prompts × 8 samples: training reward (sampled pass rate, T = 1) {early:.3} ± {early_se:.3} \
         (steps 1–10; step 1: {:.3}) → {late:.3} ± {late_se:.3} (steps 31–40), rise {:.3} ± {rise_se:.3} SE; \
         zero-std groups {:.2} → {:.2}; max KL {max_kl:.4}",
        rewards[0],
        late - early,
        flat[..10].iter().sum::<f64>() / 10.0,
        flat[flat.len() - 10..].iter().sum::<f64>() / 10.0,
    );
    println!(
        "held-out greedy accuracy on {n} problems: base {:.3} → GRPO {:.3} (paired gain {gain:.3} ± {gain_se:.3} SE); \
         greedy answers boxing the first step's value {:.3} → {:.3}; test {:.0} s",
        share(&before),
        share(&after),
        stops_early(&before),
        stops_early(&after),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        early > 0.0 && rewards[0] > 0.0,
        "the base must have a non-zero sampled pass rate for RL to have a signal"
    );
    assert!(
        late - early >= 0.05 && late - early > 3.0 * rise_se,
        "the training reward must rise by at least 0.05 and 3 standard errors: {early:.3} → {late:.3} (SE {rise_se:.3})"
    );
    assert!(
        gain >= 0.1 && gain > 3.0 * gain_se,
        "GRPO must beat the base by at least 0.1 and 3 standard errors: gain {gain:.3}, SE {gain_se:.3}"
    );
    assert!(kl.iter().all(|k| k.is_finite()), "KL stays finite: {kl:?}");
}
