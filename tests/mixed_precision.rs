//! Mixed precision and MFU: bf16 compute over f32 master weights gives every weight an f32
//! gradient close to the f32 run's, a bf16 SFT run learns like an f32 one and saves f32 weights, and
//! the logged MFU is the PaLM FLOP count of the step over its time and the configured peak; a bf16
//! GRPO run on a policy with reward spread takes finite steps that move every weight.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use distill::model::Architecture;
use distill::train::loss::next_token_loss;
use distill::train::sft::{run_sft, SftConfig};

#[test]
fn bf16_compute_returns_an_f32_gradient_to_every_master_weight() {
    let config = common::tiny(Architecture::Qwen2, 96);
    let (batch, len) = (3, 24);
    let ids = common::token_ids(batch, len, 96, 7);
    let positions = common::positions(batch, len);
    let loss_mask = candle_core::Tensor::ones((batch, len), DType::F32, &Device::Cpu).unwrap();
    let gradients = |compute: DType| {
        let trainable = common::trainable(&config, 11, DType::F32).computing_in(compute);
        let model = trainable.compute_model().unwrap();
        assert_eq!(model.dtype(), compute);
        let hidden = model
            .forward(&ids, &positions, Some(&common::causal()), None)
            .unwrap();
        let loss = next_token_loss(&hidden, model.lm_head(), &ids, &loss_mask).unwrap();
        assert_eq!(
            loss.dtype(),
            DType::F32,
            "the loss is f32 in either precision"
        );
        let grads = loss.backward().unwrap();
        let loss = loss.to_scalar::<f32>().unwrap();
        let per_param: Vec<(String, candle_core::Tensor)> = trainable
            .params
            .iter()
            .map(|(name, var)| {
                let grad = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no gradient with {compute:?} compute"));
                assert_eq!(grad.dtype(), DType::F32, "{name}: master gradients are f32");
                (name.clone(), grad.clone())
            })
            .collect();
        (loss, per_param)
    };
    let (loss32, grads32) = gradients(DType::F32);
    let (loss16, grads16) = gradients(DType::BF16);
    println!("loss f32 {loss32:.5}, bf16 compute {loss16:.5}");
    assert!((loss32 - loss16).abs() / loss32 < 1e-2);
    let mut worst = (String::new(), 0.0f32);
    for ((name, g32), (_, g16)) in grads32.iter().zip(&grads16) {
        let norm = g32.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
        let diff = (g32 - g16)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt();
        let relative = (diff.unwrap() / norm).unwrap().to_scalar::<f32>().unwrap();
        if relative > worst.1 {
            worst = (name.clone(), relative);
        }
    }
    println!(
        "largest relative gradient difference: {:.4} ({})",
        worst.1, worst.0
    );
    assert!(
        worst.1 < 0.05,
        "{}: relative gradient difference {}",
        worst.0,
        worst.1
    );
}

fn config(student: &str, data: &Path, out: &Path, extra: &str) -> SftConfig {
    toml::from_str(&format!(
        "student = {student:?}\ndata = {:?}\nout = {:?}\neval_fraction = 0.0\nlearning_rate = 1e-2\nwarmup_steps = 5\nbatch_size = 8\n{extra}",
        data.display().to_string(),
        out.display().to_string()
    ))
    .unwrap()
}

#[test]
fn a_bf16_run_learns_like_an_f32_run_and_saves_f32_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 3);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 32, 5);
    let run = |name: &str, precision: &str| {
        let out = tmp.path().join(name);
        let summary = run_sft(
            &config(
                &student,
                &data,
                &out,
                &format!("max_steps = 40\nprecision = {precision:?}"),
            ),
            false,
        )
        .unwrap();
        let losses: Vec<f64> =
            distill::train::metrics::MetricsLog::read(&out.join("metrics.jsonl"))
                .unwrap()
                .iter()
                .map(|r| r["loss"].as_f64().unwrap())
                .collect();
        (summary, losses)
    };
    let (full, full_losses) = run("f32", "f32");
    let (mixed, mixed_losses) = run("bf16", "bf16");
    println!(
        "loss f32 {:.3} → {:.4}; bf16 compute {:.3} → {:.4}",
        full_losses[0], full.final_loss, mixed_losses[0], mixed.final_loss
    );
    assert_eq!(full.compute_dtype, "F32");
    assert_eq!(mixed.compute_dtype, "BF16");
    assert!(
        (full_losses[0] - mixed_losses[0]).abs() / full_losses[0] < 1e-2,
        "the first step's loss is the same model's up to bf16 rounding"
    );
    assert!(
        mixed.final_loss < 0.3 * mixed_losses[0],
        "bf16 compute learns"
    );
    assert!(
        (mixed.final_loss - full.final_loss).abs() < 0.25 * full.final_loss,
        "and ends near the f32 run: {} vs {}",
        mixed.final_loss,
        full.final_loss
    );
    let saved =
        candle_core::safetensors::load(mixed.model_dir.join("model.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(
        saved.values().all(|t| t.dtype() == DType::F32),
        "the exported weights are the f32 master weights"
    );
}

#[test]
fn the_logged_mfu_is_the_steps_palm_flops_over_time_and_peak() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 4);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 16, 6);
    let out = tmp.path().join("run");
    let peak_tflops = 0.05;
    let cfg = config(
        &student,
        &data,
        &out,
        &format!("max_steps = 4\npeak_tflops = {peak_tflops}"),
    );
    let summary = run_sft(&cfg, false).unwrap();
    let model_config =
        distill::model::ModelConfig::from_file(&Path::new(&student).join("config.json")).unwrap();
    let records = distill::train::metrics::MetricsLog::read(&out.join("metrics.jsonl")).unwrap();
    for record in &records {
        let mfu = record["mfu"]
            .as_f64()
            .expect("an mfu in every step's metrics");
        let tokens = record["tokens"].as_f64().unwrap();
        let seconds = tokens / record["tokens_per_s"].as_f64().unwrap();
        let flops_per_token = mfu * peak_tflops * 1e12 * seconds / tokens;
        // Between the weights alone (6 per matmul weight per token) and the attention term of the
        // longest example the batch could hold.
        let weights_only = distill::train::compute::training_flops(&model_config, [1]);
        let with_attention =
            distill::train::compute::training_flops(&model_config, [1024]) / 1024.0;
        assert!(
            flops_per_token >= weights_only * 0.999 && flops_per_token <= with_attention,
            "FLOPs per token {flops_per_token} outside [{weights_only}, {with_attention}]"
        );
    }
    let run_mfu = summary.mfu.expect("the summary reports the run's MFU");
    println!("CPU MFU against a {peak_tflops} TFLOP/s peak: {run_mfu:.3}");
    assert!(run_mfu > 0.0 && run_mfu.is_finite());
}

#[test]
fn a_bf16_grpo_run_takes_finite_steps_that_move_the_weights_and_saves_f32_weights() {
    use distill::data::synth::{generate_tasks, TaskKind};
    let tmp = tempfile::tempdir().unwrap();
    // Completions of varied length and a length reward: every group has reward spread.
    let policy = common::early_stopping_student(tmp.path(), 5);
    let problems: Vec<_> = generate_tasks(TaskKind::Arithmetic, 1, 8, 8)
        .unwrap()
        .iter()
        .map(|t| t.to_problem())
        .collect();
    let out = tmp.path().join("grpo");
    let config: distill::train::grpo::GrpoConfig = toml::from_str(&format!(
        "policy = {policy:?}\nout = {:?}\nsteps = 3\ngroup_size = 4\nprompts_per_step = 2\nmax_new_tokens = 12\nbeta = 0.05\nmu = 2\nlearning_rate = 1e-3\nprecision = \"bf16\"\n[rewards]\naccuracy = 0.0\nlength_penalty = 1.0\n",
        out.display().to_string()
    ))
    .unwrap();
    let summary = distill::train::grpo::run_grpo(&config, &problems, false).unwrap();
    assert_eq!(summary.steps, 3);
    let records = distill::train::metrics::MetricsLog::read(&out.join("metrics.jsonl")).unwrap();
    for record in &records {
        for key in ["loss", "kl", "entropy"] {
            let value = record[key].as_f64().unwrap();
            assert!(
                value.is_finite(),
                "step {}: {key} = {value}",
                record["step"]
            );
        }
    }
    assert!(
        records
            .iter()
            .all(|r| r["zero_std_group_fraction"].as_f64().unwrap() < 1.0),
        "every step has groups with reward spread"
    );
    let saved =
        candle_core::safetensors::load(summary.model_dir.join("model.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(saved.values().all(|t| t.dtype() == DType::F32));
    let initial =
        candle_core::safetensors::load(Path::new(&policy).join("model.safetensors"), &Device::Cpu)
            .unwrap();
    for (name, before) in &initial {
        let change = common::max_abs_diff(before, &saved[name]);
        assert!(change > 1e-4, "{name} moved only {change:e}");
    }
}
