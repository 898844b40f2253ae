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
                eos_token: None,
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
    let batch = RolloutBatch::new(&prompts, &completions, false, &Device::Cpu).unwrap();
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
        .log_probs(&t.model.detached().unwrap(), 1.0)
        .unwrap()
        .logp
        .detach();
    let cfg = grpo_config("beta = 0.0\nmu = 1\nloss = \"grpo\"");
    let (loss, _) = policy_loss(&t.model, &batch, &old, None, &adv_t, &cfg).unwrap();
    let grpo_grads = loss.loss.backward().unwrap();

    // The policy gradient written out: -(1/B) Σ_i A_i · mean_t log π(o_it).
    let logp = batch.log_probs(&t.model, 1.0).unwrap().logp;
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
    // Unbiased (n − 1) std, as TRL: sqrt(4 × 0.25 / 3).
    let expected = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-4);
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
        prefill: "",
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
const CORRECT_SHARE: f64 = 0.4;
/// GRPO's training problems (10 steps of 8 prompts a pass) and steps (4 passes).
const PROMPTS: usize = 80;
const STEPS: usize = 40;

/// Trains the GRPO test's student base in `dir` and returns its model directory: a fresh BPE
/// tokenizer (numbers as whole tokens) and a 2-layer width-128 decoder, fine-tuned for 6 epochs on
/// stepwise replies to ~2,300 generated problems (none in `held_out`), of which a seeded 40% box
/// the result and 60% the first step's value.
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

/// One held-out problem's greedy reply.
struct GreedyReply {
    /// The verifier accepts it.
    correct: bool,
    /// It boxes the value after the first step (the base corpus's systematic error).
    boxes_first_step: bool,
    /// Its last reasoning line ends with the result (`… = X.` before `</think>`).
    reasoning_reaches_result: bool,
}

/// The greedy replies of `model_dir` to arithmetic `tasks`.
fn greedy_replies(model_dir: &str, tasks: &[SynthTask]) -> Vec<GreedyReply> {
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
/// stops one step early). It learns the steps (its greedy reasoning reaches the result on about
/// two thirds of the held-out problems) and the 40/60 mixture, so greedy decoding mostly follows
/// the majority error, while sampling at temperature 1 boxes a verified result often enough that
/// most groups have reward spread. GRPO (40 steps of 8 prompts × 8 samples, accuracy reward from
/// the real verifier, KL coefficient 0.04 to the base, learning rate 1e-4) has to shift the policy
/// toward boxing the result. Nothing tells it which answer is right but the verifier.
///
/// Measured: the training reward per pass (GRPO's 80 prompts are covered once every 10 steps, so
/// the first and the last pass draw the same prompts) with a binomial standard error; held-out
/// greedy accuracy of base and GRPO policy on 250 distinct problems that are in neither the base's
/// corpus nor GRPO's prompts, and the mean of the paired per-problem differences with its standard
/// error. Everything is seeded, so the numbers are reproducible.
///
/// Asserted: the base's sampled pass rate (the first step's reward, and the first pass's) is
/// non-zero; the last pass's reward exceeds the first's by at least 0.05 and 3 standard errors;
/// the held-out gain is at least 0.1 and 3 standard errors; the KL is finite at every step. With
/// learning rate 0 the test fails (no gain, no rise).
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
    assert_eq!((held_out_tasks.len(), held_out_texts.len()), (250, 250));
    // GRPO's prompts: 80 distinct problems, so that each 10-step pass (8 prompts a step) covers
    // every one of them exactly once and passes can be compared on the same prompts.
    let mut train_texts = BTreeSet::new();
    let train: Vec<Problem> = arithmetic(11, 400)
        .iter()
        .filter(|t| !held_out_texts.contains(&t.problem) && train_texts.insert(t.problem.clone()))
        .take(PROMPTS)
        .map(|t| t.to_problem())
        .collect();
    assert_eq!(train.len(), PROMPTS);

    let base_dir = base_with_a_systematic_error(tmp.path(), &held_out_texts);
    let before = greedy_replies(&base_dir, &held_out_tasks);
    let mut cfg = grpo_config(&format!(
        "steps = {STEPS}\ngroup_size = 8\nprompts_per_step = 8\nlearning_rate = 1e-4\nbeta = 0.04\n\
         temperature = 1.0\nseed = 0"
    ));
    cfg.policy = base_dir.clone();
    cfg.out = tmp.path().join("grpo");
    cfg.max_new_tokens = 40;
    let summary = distill::train::grpo::run_grpo(&cfg, &train, false).unwrap();
    let after = greedy_replies(summary.model_dir.to_str().unwrap(), &held_out_tasks);

    let n = held_out_tasks.len() as f64;
    let share = |replies: &[GreedyReply], property: fn(&GreedyReply) -> bool| {
        replies.iter().filter(|r| property(r)).count() as f64 / n
    };
    let differences: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| f64::from(u8::from(a.correct)) - f64::from(u8::from(b.correct)))
        .collect();
    let (gain, gain_se) = mean_and_se(&differences);

    let records =
        distill::train::metrics::MetricsLog::read(&cfg.out.join("metrics.jsonl")).unwrap();
    assert_eq!(records.len(), STEPS);
    let series =
        |key: &str| -> Vec<f64> { records.iter().map(|r| r[key].as_f64().unwrap()).collect() };
    // The reward is 0 or 1 per completion, so a pass's reward is the sampled pass rate of its 640
    // completions. Every pass draws the same 80 prompts, so the difference between two passes is
    // what the policy learnt plus sampling noise, whose standard error for a pass is at most the
    // binomial one, sqrt(r (1 − r) / 640) (with fixed prompts the per-prompt pass rates only
    // lower it).
    let rewards = series("reward");
    let per_pass = PROMPTS / 8;
    let passes: Vec<f64> = rewards
        .chunks(per_pass)
        .map(|pass| pass.iter().sum::<f64>() / pass.len() as f64)
        .collect();
    let (early, late) = (passes[0], passes[passes.len() - 1]);
    let samples = (per_pass * 8 * 8) as f64;
    let rise_se = (early * (1.0 - early) / samples + late * (1.0 - late) / samples).sqrt();
    let flat = series("zero_std_group_fraction");
    let window_mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let kl = series("kl");
    let max_kl = kl.iter().copied().fold(0.0, f64::max);
    println!(
        "GRPO, {STEPS} steps × 8 prompts × 8 samples over {PROMPTS} problems: training reward \
         (sampled pass rate at T = 1) by pass {} (step 1, the base: {:.3}); \
         last pass − first {:.3} ± {rise_se:.3} SE; zero-std groups {:.2} → {:.2}; max KL {max_kl:.4}",
        passes
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" → "),
        rewards[0],
        late - early,
        window_mean(&flat[..per_pass]),
        window_mean(&flat[flat.len() - per_pass..]),
    );
    println!(
        "held-out greedy accuracy on {n} problems: base {:.3} → GRPO {:.3} (paired gain {gain:.3} ± \
         {gain_se:.3} SE); greedy replies boxing the first step's value {:.3} → {:.3}; greedy \
         reasoning reaching the result {:.3} → {:.3}; test {:.0} s",
        share(&before, |r| r.correct),
        share(&after, |r| r.correct),
        share(&before, |r| r.boxes_first_step),
        share(&after, |r| r.boxes_first_step),
        share(&before, |r| r.reasoning_reaches_result),
        share(&after, |r| r.reasoning_reaches_result),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        early > 0.0 && rewards[0] > 0.0,
        "the base must have a non-zero sampled pass rate for RL to have a signal"
    );
    assert!(
        late - early >= 0.05 && late - early > 3.0 * rise_se,
        "the training reward must rise from the first pass to the last by at least 0.05 and 3 \
         standard errors: {early:.3} → {late:.3} (SE {rise_se:.3})"
    );
    assert!(
        gain >= 0.1 && gain > 3.0 * gain_se,
        "GRPO must beat the base by at least 0.1 and 3 standard errors: gain {gain:.3}, SE {gain_se:.3}"
    );
    assert!(kl.iter().all(|k| k.is_finite()), "KL stays finite: {kl:?}");
}
