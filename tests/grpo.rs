//! GRPO: with μ = 1 and no KL the update direction is the policy gradient with group-normalised
//! advantages; rewards and advantages behave as documented; and a short run on a synthetic task
//! raises the training reward and the held-out greedy accuracy (issue 7).

#[path = "support/arithmetic_student.rs"]
mod arithmetic_student;
mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use distill::data::sources::Problem;
use distill::model::{Architecture, Completion, FinishReason};
use distill::train::grpo::{policy_loss, GrpoConfig, RolloutBatch};
use distill::train::rewards::{advantages, AdvantageScaling, RewardConfig, Scored};

use arithmetic_student::{
    arithmetic, base_with_a_systematic_error, greedy_replies, held_out_tasks, paired_gain,
    GreedyReply,
};

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

/// GRPO's training problems (10 steps of 8 prompts a pass) and steps (4 passes).
const PROMPTS: usize = 80;
const STEPS: usize = 40;

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
    let (held_out_tasks, held_out_texts) = held_out_tasks();
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
    let (gain, gain_se) = paired_gain(&before, &after);

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
