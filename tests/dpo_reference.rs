//! distill's preference losses against TRL, on fixtures made by
//! tests/fixtures/training/make_dpo_reference.py (torch, transformers and TRL versions in each
//! JSON's `versions`): the loss, its gradient with respect to each pair's policy log-probs and the
//! logged rewards on a fixed batch, for DPO (sigmoid), conservative DPO, robust DPO, IPO, SimPO
//! and DPO with the chosen NLL (RPO); and one real pair through a real model — TRL's tokenisation, the policy's and the
//! reference's summed reply log-probs, and `DPOTrainer`'s loss and rewards.

use std::path::Path;

use candle_core::{DType, Device};
use distill::model::Message;
use distill::train::dpo::PreferenceMetrics;
use distill::train::dpo_data::sequence_log_probs;
use distill::train::preference_loss::{
    chosen_nll, PairLogProbs, PreferenceLoss, PreferenceLossConfig,
};
use distill::train::sft_data::{tokenize_conversation, Batch, SftExample};
use serde_json::Value;

const FIXTURES: &str = "tests/fixtures/training";

fn fixture(name: &str) -> Value {
    let path = Path::new(FIXTURES).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn close(ours: f64, theirs: f64, tolerance: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= tolerance * theirs.abs().max(1.0),
        "{what}: distill {ours} vs TRL {theirs}"
    );
}

#[test]
fn losses_gradients_and_rewards_match_trl_on_a_fixed_batch() {
    let reference = fixture("dpo_loss.json");
    let inputs = &reference["inputs"];
    let column = |name: &str| floats(&inputs[name]);
    let (pc, pr, rc, rr) = (
        column("policy_chosen"),
        column("policy_rejected"),
        column("reference_chosen"),
        column("reference_rejected"),
    );
    let (lc, lr) = (column("chosen_tokens"), column("rejected_tokens"));
    let pairs: Vec<PairLogProbs> = (0..pc.len())
        .map(|i| PairLogProbs {
            policy_chosen: pc[i],
            policy_rejected: pr[i],
            reference_chosen: rc[i],
            reference_rejected: rr[i],
            chosen_tokens: lc[i] as usize,
            rejected_tokens: lr[i] as usize,
        })
        .collect();
    let cases = [
        ("sigmoid", PreferenceLoss::Sigmoid),
        ("cdpo", PreferenceLoss::Sigmoid),
        ("robust", PreferenceLoss::Robust),
        ("ipo", PreferenceLoss::Ipo),
        ("simpo", PreferenceLoss::Simpo),
        ("sigmoid_sft", PreferenceLoss::Sigmoid),
    ];
    for (name, kind) in cases {
        let case = &reference["losses"][name];
        let config = PreferenceLossConfig {
            kind,
            beta: inputs["beta"].as_f64().unwrap(),
            label_smoothing: case["label_smoothing"].as_f64().unwrap(),
            simpo_gamma: case["simpo_gamma"].as_f64().unwrap_or(0.0),
        };
        let sft_weight = case["sft_weight"].as_f64().unwrap_or(0.0);
        let scored: Vec<_> = pairs.iter().map(|p| (*p, config.pair_loss(p))).collect();
        let metrics = PreferenceMetrics::of(&scored, sft_weight);
        close(metrics.loss, case["loss"].as_f64().unwrap(), 1e-12, name);
        // TRL's gradient is of the batch mean.
        let n = pairs.len() as f64;
        let (_, nll_grad) = chosen_nll(&pairs);
        for (i, (_, loss)) in scored.iter().enumerate() {
            let chosen = loss.grad_chosen / n + sft_weight * nll_grad;
            close(chosen, floats(&case["grad_chosen"])[i], 1e-12, name);
            close(
                loss.grad_rejected / n,
                floats(&case["grad_rejected"])[i],
                1e-12,
                name,
            );
        }
        let theirs = &case["metrics"];
        for (key, ours) in [
            ("rewards/chosen", metrics.chosen_reward),
            ("rewards/rejected", metrics.rejected_reward),
            ("rewards/accuracies", metrics.accuracy),
            ("rewards/margins", metrics.margin),
        ] {
            close(
                ours,
                theirs[key].as_f64().unwrap(),
                1e-12,
                &format!("{name} {key}"),
            );
        }
    }
}

fn messages(value: &Value) -> Vec<Message> {
    serde_json::from_value(value.clone()).unwrap()
}

/// One pair through the fixture's reference (`sft_model/`) and policy (`dpo_policy/`): the token
/// ids TRL's DPOTrainer made, each side's summed reply log-prob under both models, and TRL's loss
/// and rewards, all in float32 as TRL computed them.
#[test]
fn a_real_pair_through_real_models_matches_trl_dpo_trainer() {
    let reference_json = fixture("dpo_model.json");
    let pair = &reference_json["pair"];
    let load = |name: &str| {
        distill::model::load(
            Path::new(FIXTURES).join(name).to_str().unwrap(),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap()
    };
    let (policy, reference) = (load("dpo_policy"), load("sft_model"));
    let prompt = messages(&pair["prompt"]);
    let ids = |key: &str| -> Vec<u32> {
        reference_json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    let trl_prompt = ids("prompt_ids");
    let mut examples = Vec::new();
    for side in ["chosen", "rejected"] {
        let conversation: Vec<Message> = prompt
            .iter()
            .cloned()
            .chain(messages(&pair[side]))
            .collect();
        let (tokens, loss_mask) = tokenize_conversation(&policy.tokenizer, &conversation).unwrap();
        let mut trl_tokens = trl_prompt.clone();
        trl_tokens.extend(ids(&format!("{side}_ids")));
        assert_eq!(tokens, trl_tokens, "{side}: distill's tokens vs TRL's");
        let reply_start = loss_mask.iter().position(|&m| m == 1).unwrap();
        assert_eq!(
            reply_start,
            trl_prompt.len(),
            "{side}: the loss starts at the reply"
        );
        examples.push(SftExample {
            id: side.into(),
            tokens,
            loss_mask,
        });
    }
    let batch = Batch::new(&examples, &vec![vec![0], vec![1]], &Device::Cpu).unwrap();
    let score = |model: &distill::model::Decoder| -> Vec<f64> {
        sequence_log_probs(model, &batch)
            .unwrap()
            .logps
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (p, r) = (score(&policy.model), score(&reference.model));
    let metrics = &reference_json["metrics"];
    let number = |v: &Value| v.as_f64().unwrap();
    close(
        p[0],
        number(&metrics["logps/chosen"]),
        1e-5,
        "policy chosen log-prob",
    );
    close(
        p[1],
        number(&metrics["logps/rejected"]),
        1e-5,
        "policy rejected log-prob",
    );
    close(
        r[0],
        number(&reference_json["reference_chosen"]),
        1e-5,
        "reference chosen log-prob",
    );
    close(
        r[1],
        number(&reference_json["reference_rejected"]),
        1e-5,
        "reference rejected log-prob",
    );
    let config = PreferenceLossConfig {
        kind: PreferenceLoss::Sigmoid,
        beta: number(&reference_json["beta"]),
        label_smoothing: 0.0,
        simpo_gamma: 0.0,
    };
    let logps = PairLogProbs {
        policy_chosen: p[0],
        policy_rejected: p[1],
        reference_chosen: r[0],
        reference_rejected: r[1],
        chosen_tokens: ids("chosen_ids").len(),
        rejected_tokens: ids("rejected_ids").len(),
    };
    let loss = config.pair_loss(&logps);
    close(loss.loss, number(&reference_json["loss"]), 1e-4, "loss");
    close(
        loss.chosen_reward,
        number(&metrics["rewards/chosen"]),
        1e-4,
        "chosen reward",
    );
    close(
        loss.rejected_reward,
        number(&metrics["rewards/rejected"]),
        1e-4,
        "rejected reward",
    );
}
