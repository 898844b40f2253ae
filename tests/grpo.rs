//! GRPO: with μ = 1 and no KL the update direction is the policy gradient with group-normalised
//! advantages; rewards and advantages behave as documented.

mod common;

use candle_core::{DType, Device, Tensor};
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

/// Held-out greedy accuracy of `model_dir` on `problems`.
fn accuracy(model_dir: &str, problems: &[distill::data::sources::Problem]) -> f64 {
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
        max_new_tokens: 24,
        n: 1,
        eos_token_ids: loaded.eos_token_ids.clone(),
        stop_strings: Vec::new(),
    };
    let out = generate(&loaded.model, &loaded.tokenizer, &requests, &config).unwrap();
    let correct = out
        .iter()
        .filter(|c| {
            distill::verify::grade(
                &problems[c.prompt_index].answer,
                &problems[c.prompt_index].metadata,
                &c.text,
            )
            .unwrap()
            .correct
        })
        .count();
    correct as f64 / problems.len() as f64
}

#[test]
fn a_short_grpo_run_raises_reward_and_held_out_accuracy() {
    use distill::data::corpus::{write_corpus, ReplyStyle};
    use distill::data::synth::{generate_tasks, TaskKind};
    let tmp = tempfile::tempdir().unwrap();
    // A student base that answers two-number countdown puzzles directly (no reasoning): it has learnt
    // the answer format, so some of its guesses are right — a low but non-zero pass rate.
    let student = common::synthetic_student(tmp.path(), 21);
    let corpus = generate_tasks(TaskKind::Countdown, 1, 31, 1500).unwrap();
    write_corpus(
        &tmp.path().join("short"),
        &corpus,
        ReplyStyle::ShortAnswer,
        "base",
    )
    .unwrap();
    let base: distill::train::sft::SftConfig = toml::from_str(&format!(
        "student = {student:?}\ndata = {:?}\nout = {:?}\nlearning_rate = 3e-3\nepochs = 4\nbatch_size = 32\neval_fraction = 0.0\n",
        tmp.path().join("short").display().to_string(),
        tmp.path().join("base").display().to_string()
    ))
    .unwrap();
    let base_dir = distill::train::sft::run_sft(&base, false)
        .unwrap()
        .model_dir;
    let base_dir = base_dir.to_str().unwrap();

    let train: Vec<_> = generate_tasks(TaskKind::Countdown, 1, 41, 256)
        .unwrap()
        .iter()
        .map(|t| t.to_problem())
        .collect();
    let held_out: Vec<_> = generate_tasks(TaskKind::Countdown, 1, 42, 100)
        .unwrap()
        .iter()
        .map(|t| t.to_problem())
        .collect();
    let before = accuracy(base_dir, &held_out);
    let mut cfg = grpo_config("steps = 40\ngroup_size = 8\nprompts_per_step = 8\nlearning_rate = 3e-4\nbeta = 0.02\ntemperature = 1.0");
    cfg.policy = base_dir.to_string();
    cfg.out = tmp.path().join("grpo");
    cfg.max_new_tokens = 24;
    let summary = distill::train::grpo::run_grpo(&cfg, &train, false).unwrap();
    let after = accuracy(summary.model_dir.to_str().unwrap(), &held_out);
    let records =
        distill::train::metrics::MetricsLog::read(&cfg.out.join("metrics.jsonl")).unwrap();
    let window = |r: &[serde_json::Value]| {
        r.iter().map(|v| v["reward"].as_f64().unwrap()).sum::<f64>() / r.len() as f64
    };
    let (early, late) = (
        window(&records[..10]),
        window(&records[records.len() - 10..]),
    );
    println!("GRPO: training reward {early:.3} (first 10 steps) → {late:.3} (last 10); held-out accuracy {before:.2} → {after:.2}");
    assert!(
        before > 0.0,
        "the base must have a non-zero pass rate for RL to have a signal"
    );
    assert!(late > early, "training reward rises");
    assert!(after > before, "held-out accuracy rises");
    assert!(
        records
            .iter()
            .all(|r| r["kl"].as_f64().unwrap().is_finite()),
        "KL stays finite"
    );
}
