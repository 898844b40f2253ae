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
    for p in 0..2 {
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
                prompt_tokens: prompts[p].len(),
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
