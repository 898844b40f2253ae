//! Activation checkpointing (`gradient_checkpointing`): recomputing each decoder layer in the backward
//! gives the plain backward's gradients (f32, relative error ≤ 1e-6 for every weight) for the SFT
//! loss on packed rows with segment ids, and for the GRPO objective with a KL term; and an SFT run
//! with it ends on the plain run's weights.

mod common;

use candle_core::{DType, Device, Tensor};
use distill::model::{Architecture, AttentionMask, Completion, FinishReason};
use distill::train::grpo::{objective, GrpoConfig, RolloutBatch};
use distill::train::loss::next_token_loss;
use distill::train::recompute::{loss_and_gradients, Checkpointing};
use distill::train::trainable::TrainableDecoder;

/// The largest absolute value of `t`.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// `max |got - want| / max |want|` over every weight's gradient, the largest over all weights.
fn worst_gradient_error(
    t: &TrainableDecoder,
    plain: &candle_core::backprop::GradStore,
    recomputed: &candle_core::backprop::GradStore,
) -> f64 {
    let mut worst = 0.0f64;
    for (name, var) in &t.params {
        let want = plain
            .get(var)
            .unwrap_or_else(|| panic!("{name}: no plain gradient"));
        let got = recomputed
            .get(var)
            .unwrap_or_else(|| panic!("{name}: no gradient with checkpointing"));
        let scale = max_abs(want);
        let diff = max_abs(&(got - want).unwrap());
        let error = f64::from(diff) / f64::from(scale).max(1e-30);
        assert!(
            scale > 0.0,
            "{name}: zero gradient, the comparison would be empty"
        );
        worst = worst.max(error);
    }
    worst
}

#[test]
fn sft_gradients_on_packed_rows_equal_the_plain_backward() {
    let (b, len, vocab) = (2, 11, 89);
    // Row 0 packs three examples, row 1 one example and padding (segment 9, masked out).
    let segments = vec![
        vec![0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2],
        vec![4, 4, 4, 4, 4, 4, 4, 4, 9, 9, 9],
    ];
    let positions: Vec<u32> = segments
        .iter()
        .flat_map(|row| {
            let mut out = Vec::new();
            for (i, &s) in row.iter().enumerate() {
                let start = row.iter().position(|&x| x == s).unwrap();
                out.push((i - start) as u32);
            }
            out
        })
        .collect();
    let positions = Tensor::from_vec(positions, (b, len), &Device::Cpu).unwrap();
    let loss_mask: Vec<f32> = segments
        .iter()
        .flat_map(|row| row.iter().map(|&s| if s == 9 { 0.0 } else { 1.0 }))
        .collect();
    let loss_mask = Tensor::from_vec(loss_mask, (b, len), &Device::Cpu).unwrap();
    for arch in [Architecture::Qwen2, Architecture::Llama] {
        let config = common::tiny(arch, vocab);
        let t = common::trainable(&config, 21, DType::F32);
        let ids = common::token_ids(b, len, vocab, 5);
        let mask = AttentionMask::packed(&segments, &Device::Cpu).unwrap();
        let run = |checkpointing: Option<Checkpointing>| {
            loss_and_gradients(
                &t.model,
                &ids,
                &positions,
                Some(&mask),
                checkpointing,
                |hidden| {
                    Ok((
                        next_token_loss(hidden, t.model.lm_head(), &ids, &loss_mask)?,
                        (),
                    ))
                },
            )
            .unwrap()
        };
        let plain = run(None);
        // The MLP half in chunks of 5 of the 22 tokens: chunks that cross the row boundary and a
        // short last one; and the default, one chunk.
        for chunk in [5, Checkpointing::default().mlp_chunk_tokens] {
            let recomputed = run(Some(Checkpointing {
                mlp_chunk_tokens: chunk,
            }));
            assert_eq!(
                plain.loss.to_scalar::<f32>().unwrap(),
                recomputed.loss.to_scalar::<f32>().unwrap(),
                "{arch:?}, MLP chunks of {chunk}: the loss"
            );
            let worst = worst_gradient_error(&t, &plain.grads, &recomputed.grads);
            assert!(
                worst <= 1e-6,
                "{arch:?}, MLP chunks of {chunk}: gradient relative error {worst:e}"
            );
        }
    }
}

#[test]
fn grpo_gradients_with_a_kl_term_equal_the_plain_backward() {
    let vocab = 61;
    let config = common::tiny(Architecture::Qwen3, vocab);
    let t = common::trainable(&config, 13, DType::F32);
    let reference = common::trainable(&config, 14, DType::F32);
    let prompts = vec![vec![1, 5, 9, 3], vec![2, 7]];
    let completions: Vec<Completion> = (0..6)
        .map(|i| {
            let tokens: Vec<u32> = (0..3 + i % 4)
                .map(|k| ((i * 13 + k * 7 + 2) % vocab) as u32)
                .collect();
            Completion {
                prompt_index: i / 3,
                sample_index: i % 3,
                completion_tokens: tokens.len() + 1,
                prompt_tokens: prompts[i / 3].len(),
                tokens,
                eos_token: Some(0),
                text: String::new(),
                finish_reason: FinishReason::Stop,
            }
        })
        .collect();
    let batch = RolloutBatch::new(&prompts, &completions, false, &Device::Cpu).unwrap();
    let detached = t.model.detached().unwrap();
    // Old log-probs off the current ones (as after an update within μ), so the ratio clips.
    let old = (batch.log_probs(&detached, 1.0).unwrap().logp.detach() - 0.3).unwrap();
    let ref_logp = batch
        .log_probs(&reference.model, 1.0)
        .unwrap()
        .logp
        .detach();
    let advantages = Tensor::new(&[1.0f32, -0.5, -0.5, 0.7, -1.2, 0.5], &Device::Cpu).unwrap();
    let config: GrpoConfig = toml::from_str(
        "policy = \"unused\"\nout = \"unused\"\nmax_new_tokens = 9\nbeta = 0.04\nloss = \"dapo\"",
    )
    .unwrap();
    let run = |checkpointing: Option<Checkpointing>| {
        loss_and_gradients(
            &t.model,
            &batch.ids,
            &batch.positions,
            None,
            checkpointing,
            |hidden| {
                let current = batch.log_probs_of_hidden(hidden, &t.model, 1.0)?;
                let (loss, _) = objective(
                    &current,
                    &batch,
                    &old,
                    Some(&ref_logp),
                    &advantages,
                    &config,
                )?;
                Ok((loss.loss, ()))
            },
        )
        .unwrap()
    };
    // The MLP half in chunks of 4 tokens, across the completions' rows.
    let chunked = Checkpointing {
        mlp_chunk_tokens: 4,
    };
    let (plain, recomputed) = (run(None), run(Some(chunked)));
    assert_eq!(
        plain.loss.to_scalar::<f32>().unwrap(),
        recomputed.loss.to_scalar::<f32>().unwrap()
    );
    let worst = worst_gradient_error(&t, &plain.grads, &recomputed.grads);
    assert!(worst <= 1e-6, "gradient relative error {worst:e}");
}

#[test]
fn a_packed_sft_run_with_checkpointing_ends_on_the_plain_runs_weights() {
    use distill::train::sft::{run_sft, SftConfig};
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 1);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 24, 5);
    let run = |name: &str, checkpointing: bool| {
        let out = tmp.path().join(name);
        let mut cfg: SftConfig = toml::from_str(&format!(
            "student = {student:?}\ndata = {:?}\nout = {:?}\neval_fraction = 0.0\npack = true\n\
             max_steps = 6\nbatch_size = 2\nlearning_rate = 3e-3\nwarmup_steps = 0\n",
            data.display().to_string(),
            out.display().to_string()
        ))
        .unwrap();
        cfg.gradient_checkpointing = checkpointing;
        let summary = run_sft(&cfg, false).unwrap();
        let model = distill::model::load(
            out.join("final").to_str().unwrap(),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap()
        .model;
        (summary.final_loss, model.named_parameters())
    };
    let (plain_loss, plain) = run("plain", false);
    let (loss, recomputed) = run("recomputed", true);
    assert!(
        (plain_loss - loss).abs() <= 1e-5 * plain_loss.abs(),
        "final loss {loss} against {plain_loss}"
    );
    for ((name, got), (_, want)) in recomputed.iter().zip(&plain) {
        let diff = max_abs(&(got - want).unwrap());
        assert!(diff <= 1e-4, "{name}: weights differ by {diff}");
    }
}

#[test]
fn checkpointing_while_computing_in_bf16_gives_every_f32_variable_the_plain_gradient() {
    // The compute model is a bf16 cast of the f32 variables: every gradient, the embedding
    // lookup's included, has to flow back through the cast to reach them.
    let (b, len, vocab) = (2, 9, 71);
    for arch in [Architecture::Qwen2, Architecture::Llama] {
        let config = common::tiny(arch, vocab);
        let t = common::trainable(&config, 31, DType::F32).computing_in(DType::BF16);
        let model = t.compute_model().unwrap();
        let ids = common::token_ids(b, len, vocab, 8);
        let positions = common::positions(b, len);
        let loss_mask = Tensor::ones((b, len), DType::F32, &Device::Cpu).unwrap();
        let run = |checkpointing: Option<Checkpointing>| {
            loss_and_gradients(&model, &ids, &positions, None, checkpointing, |hidden| {
                Ok((
                    next_token_loss(hidden, model.lm_head(), &ids, &loss_mask)?,
                    (),
                ))
            })
            .unwrap()
        };
        let (plain, recomputed) = (run(None), run(Some(Checkpointing::default())));
        let worst = worst_gradient_error(&t, &plain.grads, &recomputed.grads);
        // bf16 sums in another order differ by a few units of its 8-bit mantissa.
        assert!(worst <= 2e-2, "{arch:?}: gradient relative error {worst:e}");
    }
}
