//! distill's training math against the reference stack users compare it with, on fixtures made by
//! tests/fixtures/training/make_training_reference.py (torch, transformers and TRL versions in
//! each JSON's `versions`): TRL's GRPO loss, gradient, KL and clip fraction for every aggregation
//! distill implements, TRL's advantages, and transformers' per-token log-probs and SFT loss on a
//! chat rendered with the template and tokenised by TRL's SFTTrainer with an assistant-only mask.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use distill::model::Message;
use distill::ops::{grpo_loss, GrpoAggregation, GrpoConfig, GrpoInputs};
use distill::train::loss::{next_token_log_probs, next_token_loss};
use distill::train::rewards::{advantages, AdvantageScaling};
use distill::train::sft_data::{tokenize_conversation, Batch, SftExample};
use serde_json::Value;

const FIXTURES: &str = "tests/fixtures/training";

fn fixture(name: &str) -> Value {
    let path = Path::new(FIXTURES).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn vector(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn matrix(value: &Value) -> Tensor {
    let rows: Vec<Vec<f64>> = value.as_array().unwrap().iter().map(vector).collect();
    Tensor::new(rows, &Device::Cpu).unwrap()
}

fn relative(ours: f64, theirs: f64) -> f64 {
    (ours - theirs).abs() / theirs.abs().max(1e-12)
}

#[test]
fn grpo_loss_gradient_and_metrics_match_trl_for_every_aggregation() {
    let reference = fixture("grpo_loss.json");
    println!("reference: {}", reference["versions"]);
    let inputs = &reference["inputs"];
    let logp = matrix(&inputs["logp"]);
    let old_logp = matrix(&inputs["old_logp"]);
    let ref_logp = matrix(&inputs["ref_logp"]);
    let mask = matrix(&inputs["completion_mask"]);
    let adv = Tensor::new(vector(&inputs["advantages"]), &Device::Cpu).unwrap();
    let max_len = inputs["max_completion_length"].as_u64().unwrap() as usize;
    // TRL's bnpo (token mean over the batch) is DAPO's token mean when the whole generation batch is
    // one micro-batch: distill's `dapo` covers both.
    let cases = [
        ("grpo", GrpoAggregation::Grpo),
        (
            "dr_grpo",
            GrpoAggregation::DrGrpo {
                max_completion_len: max_len,
            },
        ),
        ("dapo", GrpoAggregation::Dapo),
        ("bnpo", GrpoAggregation::Dapo),
    ];
    for (name, aggregation) in cases {
        let trl = &reference["losses"][name];
        let var = candle_core::Var::from_tensor(&logp).unwrap();
        let loss = grpo_loss(
            &GrpoInputs {
                logp: var.as_tensor(),
                old_logp: &old_logp,
                ref_logp: Some(&ref_logp),
                advantages: &adv,
                completion_mask: &mask,
            },
            &GrpoConfig {
                eps_low: inputs["epsilon_low"].as_f64().unwrap(),
                eps_high: inputs["epsilon_high"].as_f64().unwrap(),
                beta: inputs["beta"].as_f64().unwrap(),
                aggregation,
            },
        )
        .unwrap();
        let grads = loss.loss.backward().unwrap();
        let grad = grads.get(var.as_tensor()).unwrap();
        let theirs = matrix(&trl["grad_logp"]);
        let scale = theirs
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let grad_error = (grad - &theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            / scale;
        let scalar = |t: &Tensor| t.to_scalar::<f64>().unwrap();
        let errors = [
            relative(scalar(&loss.loss), trl["loss"].as_f64().unwrap()),
            grad_error,
            relative(scalar(&loss.mean_kl), trl["mean_kl"].as_f64().unwrap()),
            relative(
                scalar(&loss.clip_fraction),
                trl["clip_fraction"].as_f64().unwrap(),
            ),
        ];
        println!(
            "{name}: loss {:.10} (TRL {:.10}); relative errors: loss {:.1e}, gradient {:.1e}, KL \
             {:.1e}, clip fraction {:.1e}",
            scalar(&loss.loss),
            trl["loss"].as_f64().unwrap(),
            errors[0],
            errors[1],
            errors[2],
            errors[3],
        );
        for (what, error) in ["loss", "gradient", "KL", "clip fraction"]
            .iter()
            .zip(errors)
        {
            assert!(
                error < 1e-9,
                "{name}: {what} differs from TRL's by {error:e} (relative)"
            );
        }
    }
}

#[test]
fn advantages_match_trl() {
    let reference = fixture("grpo_loss.json");
    let expected = &reference["advantages"];
    let rewards = vector(&expected["rewards"]);
    let group = expected["group_size"].as_u64().unwrap() as usize;
    for (name, scaling) in [
        ("group", AdvantageScaling::Group),
        ("batch", AdvantageScaling::Batch),
        ("none", AdvantageScaling::None),
    ] {
        let (ours, _) = advantages(&rewards, group, scaling);
        let theirs = vector(&expected[name]);
        let error = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!("{name} scaling: max |advantage - TRL's| {error:e}");
        // TRL's nanstd computes its Bessel factor count / (count - 1) from integer tensors, in
        // float32: its std carries a ~1e-8 relative rounding that distill's f64 one does not.
        assert!(error < 1e-7, "{name}: {ours:?} vs TRL {theirs:?}");
    }
}

#[test]
fn sft_tokens_mask_log_probs_and_loss_match_transformers_and_trl() {
    let reference = fixture("sft_reference.json");
    println!("reference: {}", reference["versions"]);
    let loaded =
        distill::model::load(&format!("{FIXTURES}/sft_model"), &Device::Cpu, DType::F32).unwrap();
    let messages: Vec<Message> = reference["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let (tokens, loss_mask) = tokenize_conversation(&loaded.tokenizer, &messages).unwrap();
    let ids: Vec<u32> = reference["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let mask: Vec<u8> = reference["completion_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(tokens, ids, "token ids of the rendered chat");
    assert_eq!(loss_mask, mask, "assistant-only loss mask");

    let example = SftExample {
        id: "reference".into(),
        tokens,
        loss_mask,
    };
    let batch = Batch::new(std::slice::from_ref(&example), &vec![vec![0]], &Device::Cpu).unwrap();
    let hidden = loaded
        .model
        .forward(&batch.ids, &batch.positions, Some(&batch.mask), None)
        .unwrap();
    let everywhere = Tensor::ones(batch.ids.dims(), DType::F32, &Device::Cpu).unwrap();
    let log_probs: Vec<f32> =
        next_token_log_probs(&hidden, loaded.model.lm_head(), &batch.ids, &everywhere)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
    let theirs = vector(&reference["next_token_log_probs"]);
    assert_eq!(log_probs.len(), theirs.len());
    let worst = log_probs
        .iter()
        .zip(&theirs)
        .map(|(&a, b)| (f64::from(a) - b).abs())
        .fold(0.0, f64::max);
    let loss = next_token_loss(
        &hidden,
        loaded.model.lm_head(),
        &batch.ids,
        &batch.loss_mask,
    )
    .unwrap()
    .to_scalar::<f32>()
    .unwrap();
    let expected_loss = reference["loss"].as_f64().unwrap();
    let loss_error = relative(f64::from(loss), expected_loss);
    println!(
        "{} tokens, {} loss tokens: max |log-prob - transformers'| {worst:.1e}; loss {loss:.7} vs \
         {expected_loss:.7} (relative {loss_error:.1e})",
        ids.len(),
        batch.target_tokens
    );
    assert_eq!(
        batch.target_tokens as u64,
        reference["loss_tokens"].as_u64().unwrap()
    );
    assert!(worst < 1e-5, "per-token log-probs differ by {worst:e}");
    assert!(
        loss_error < 1e-5,
        "loss differs by {loss_error:e} (relative)"
    );
}
