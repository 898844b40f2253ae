//! SFT: overfitting, the assistant-only loss mask, packing, exact resume after kill -9, export,
//! and what max_length takes away.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use distill::model::{Message, Tokenizer};
use distill::train::loss::{next_token_log_probs, next_token_loss};
use distill::train::sft::{run_sft, SftConfig};
use distill::train::sft_data::{tokenize_conversation, Batch, SftExample};

fn config(student: &str, data: &Path, out: &Path) -> SftConfig {
    toml::from_str(&format!(
        "student = {student:?}\ndata = {:?}\nout = {:?}\neval_fraction = 0.0\n",
        data.display().to_string(),
        out.display().to_string()
    ))
    .unwrap()
}

#[test]
fn a_tiny_model_overfits_32_traces() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 1);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 32, 5);
    let mut cfg = config(&student, &data, &tmp.path().join("run"));
    cfg.learning_rate = 1e-2;
    cfg.min_lr_ratio = 0.1;
    cfg.warmup_steps = 10;
    cfg.max_steps = Some(300);
    cfg.batch_size = 8;
    cfg.optimizer.max_grad_norm = 1.0;
    let summary = run_sft(&cfg, false).unwrap();
    println!(
        "overfit: {} steps, final loss {:.4}",
        summary.steps, summary.final_loss
    );
    assert!(
        summary.final_loss < 0.05,
        "final loss {}",
        summary.final_loss
    );
    assert!(tmp.path().join("run/loss.svg").is_file());
    let metrics = std::fs::read_to_string(tmp.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 300);
}

fn student_tokenizer(dir: &Path) -> (String, Tokenizer) {
    let student = common::synthetic_student(dir, 2);
    let tokenizer = Tokenizer::from_dir(Path::new(&student)).unwrap();
    (student, tokenizer)
}

#[test]
fn the_loss_covers_assistant_tokens_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (student, tokenizer) = student_tokenizer(tmp.path());
    let (problem, cot) = common::synthetic_conversations(1, 2, 3).remove(0);
    let messages = [
        Message::new("system", "You are a careful solver."),
        Message::user(problem.problem.clone()),
        Message::assistant(cot),
    ];
    let (tokens, mask) = tokenize_conversation(&tokenizer, &messages).unwrap();
    let completion_start = mask.iter().position(|&m| m == 1).unwrap();
    assert!(
        mask[completion_start..].iter().all(|&m| m == 1),
        "the completion is one block at the end"
    );
    let prompt_text = tokenizer
        .decode(&tokens[..completion_start], false)
        .unwrap();
    assert!(
        prompt_text.ends_with("<|im_start|>assistant\n"),
        "{prompt_text:?}"
    );

    let loaded = distill::model::load(&student, &Device::Cpu, DType::F32).unwrap();
    let example = SftExample {
        id: "x".into(),
        tokens: tokens.clone(),
        loss_mask: mask.clone(),
    };
    let batch = Batch::new(std::slice::from_ref(&example), &vec![vec![0]], &Device::Cpu).unwrap();
    let hidden = loaded
        .model
        .forward(&batch.ids, &batch.positions, Some(&batch.mask), None)
        .unwrap();
    let loss_with = |targets: Vec<u32>| {
        let targets = Tensor::from_vec(targets, (1, tokens.len()), &Device::Cpu).unwrap();
        next_token_loss(&hidden, loaded.model.lm_head(), &targets, &batch.loss_mask)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let base = loss_with(tokens.clone());
    let mut prompt_changed = tokens.clone();
    for t in prompt_changed.iter_mut().take(completion_start).skip(1) {
        *t = (*t + 7) % 300;
    }
    assert_eq!(
        loss_with(prompt_changed),
        base,
        "prompt labels do not affect the loss"
    );
    let mut completion_changed = tokens.clone();
    completion_changed[completion_start + 2] = (completion_changed[completion_start + 2] + 7) % 300;
    assert_ne!(loss_with(completion_changed), base, "completion labels do");
}

#[test]
fn packing_gives_the_same_per_example_loss_as_unpacked_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (student, tokenizer) = student_tokenizer(tmp.path());
    let loaded = distill::model::load(&student, &Device::Cpu, DType::F32).unwrap();
    let examples: Vec<SftExample> = common::synthetic_conversations(3, 2, 8)
        .into_iter()
        .enumerate()
        .map(|(i, (p, cot))| {
            let (tokens, loss_mask) = tokenize_conversation(
                &tokenizer,
                &[Message::user(p.problem), Message::assistant(cot)],
            )
            .unwrap();
            SftExample {
                id: i.to_string(),
                tokens,
                loss_mask,
            }
        })
        .collect();
    let per_example = |plan: Vec<Vec<usize>>| -> Vec<f64> {
        let batch = Batch::new(&examples, &plan, &Device::Cpu).unwrap();
        let hidden = loaded
            .model
            .forward(&batch.ids, &batch.positions, Some(&batch.mask), None)
            .unwrap();
        let logp: Vec<Vec<f32>> = next_token_log_probs(
            &hidden,
            loaded.model.lm_head(),
            &batch.ids,
            &batch.loss_mask,
        )
        .unwrap()
        .to_vec2()
        .unwrap();
        let mut sums = vec![0.0f64; examples.len()];
        for (row, plan_row) in plan.iter().enumerate() {
            for (t, &lp) in logp[row].iter().enumerate() {
                let segment = batch.segments[row][t + 1];
                if segment != u32::MAX {
                    sums[plan_row[segment as usize]] += f64::from(lp);
                }
            }
        }
        sums
    };
    let unpacked = per_example(vec![vec![0], vec![1], vec![2]]);
    let packed = per_example(vec![vec![2, 0, 1]]);
    for (a, b) in unpacked.iter().zip(&packed) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "unpacked {a} vs packed {b}"
        );
    }
}

fn train_command(student: &str, data: &Path, out: &Path, resume: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distill"));
    command.args([
        "train",
        "--student",
        student,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    command.args([
        "--max-steps",
        "40",
        "--save-every",
        "4",
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--eval-fraction",
        "0.1",
    ]);
    if resume {
        command.arg("--resume");
    }
    command
}

#[test]
fn kill_9_then_resume_gives_bit_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 3);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 40, 9);

    let straight = tmp.path().join("straight");
    let status = train_command(&student, &data, &straight, false)
        .status()
        .unwrap();
    assert!(status.success());

    let killed = tmp.path().join("killed");
    let mut child = train_command(&student, &data, &killed, false)
        .spawn()
        .unwrap();
    let marker = killed.join("checkpoints").join("step-000012");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !marker.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("final").exists(),
        "the run was killed before it finished"
    );
    let status = train_command(&student, &data, &killed, true)
        .status()
        .unwrap();
    assert!(status.success());

    let a = std::fs::read(straight.join("final/model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("final/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from an uninterrupted run's");
    let losses = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {} {}", v["step"], v["loss"], v["grad_norm"])
            })
            .collect()
    };
    assert_eq!(
        losses(&straight),
        losses(&killed),
        "the loss curve is the same, bit for bit"
    );
}

#[test]
fn the_exported_model_loads_back_with_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 4);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 8, 2);
    let mut cfg = config(&student, &data, &tmp.path().join("run"));
    cfg.max_steps = Some(3);
    let summary = run_sft(&cfg, false).unwrap();
    let trained = distill::model::load(
        summary.model_dir.to_str().unwrap(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let last = distill::train::checkpoint::latest_checkpoint(&cfg.out).unwrap();
    let checkpoint =
        distill::model::load(last.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    let ids = common::token_ids(1, 12, trained.model.config().vocab_size, 5);
    let logits = |m: &distill::model::Decoder| {
        let h = m
            .forward(&ids, &common::positions(1, 12), None, None)
            .unwrap();
        m.logits(&h).unwrap()
    };
    assert_eq!(
        common::max_abs_diff(&logits(&trained.model), &logits(&checkpoint.model)),
        0.0
    );
    let base = distill::model::load(&student, &Device::Cpu, DType::F32).unwrap();
    assert!(
        common::max_abs_diff(&logits(&trained.model), &logits(&base.model)) > 0.0,
        "training changed the model"
    );
    if let Some(report) =
        common::transformers_logit_check(&summary.model_dir, &ids, &logits(&trained.model))
    {
        println!("{report}");
    }
}

#[test]
fn resume_falls_back_past_damaged_checkpoints_to_the_newest_intact_one() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 4);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 8, 2);
    let mut straight = config(&student, &data, &tmp.path().join("straight"));
    straight.max_steps = Some(6);
    straight.save_every = 2;
    run_sft(&straight, false).unwrap();

    let damaged = SftConfig {
        out: tmp.path().join("damaged"),
        ..straight.clone()
    };
    run_sft(&damaged, false).unwrap();
    let checkpoints = damaged.out.join("checkpoints");
    // The newest checkpoint's weights are truncated, the one before has a corrupt optimizer state.
    let weights = checkpoints.join("step-000006/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(
        checkpoints.join("step-000004/optimizer.safetensors"),
        b"not safetensors",
    )
    .unwrap();
    std::fs::remove_dir_all(damaged.out.join("final")).unwrap();
    run_sft(&damaged, true).unwrap();
    let a = std::fs::read(straight.out.join("final/model.safetensors")).unwrap();
    let b = std::fs::read(damaged.out.join("final/model.safetensors")).unwrap();
    assert!(
        a == b,
        "resuming from step 2 did not reproduce the uninterrupted run"
    );

    // With every checkpoint damaged, resuming stops and names each file.
    let bytes = std::fs::read(checkpoints.join("step-000002/model.safetensors")).unwrap();
    for step in ["step-000002", "step-000004", "step-000006"] {
        std::fs::write(
            checkpoints.join(step).join("model.safetensors"),
            &bytes[..100],
        )
        .unwrap();
    }
    let error = run_sft(&damaged, true).unwrap_err();
    let message = format!("{error:#}");
    for step in ["step-000002", "step-000004", "step-000006"] {
        assert!(
            message.contains(&format!("{step}/model.safetensors")),
            "{message}"
        );
    }
}

/// No silent truncation (issue 20 item 5): the loss tokens `max_length` takes away are counted
/// exactly (every one of a dropped example's, the cut part of a truncated one's), and a run that
/// would lose more than `max_lost_loss_fraction` of them refuses to start, saying how many.
#[test]
fn max_length_losses_are_counted_and_too_many_stop_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 1);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 24, 5);
    let tokenizer = Tokenizer::from_dir(Path::new(&student)).unwrap();
    let examples: Vec<(Vec<u32>, Vec<u8>)> = common::load_conversations(&data)
        .unwrap()
        .iter()
        .map(|c| tokenize_conversation(&tokenizer, &c.messages).unwrap())
        .collect();
    let loss_tokens = |mask: &[u8]| mask.iter().skip(1).filter(|&&m| m == 1).count();
    let mut lengths: Vec<usize> = examples.iter().map(|(t, _)| t.len()).collect();
    lengths.sort_unstable();
    // A limit that the longest third of the examples exceed.
    let max_length = lengths[lengths.len() * 2 / 3];
    let total: usize = examples.iter().map(|(_, m)| loss_tokens(m)).sum();
    let truncated_loss: usize = examples
        .iter()
        .filter(|(t, _)| t.len() > max_length)
        .map(|(_, m)| loss_tokens(m) - loss_tokens(&m[..max_length]))
        .sum();

    let mut cfg = config(&student, &data, &tmp.path().join("refused"));
    cfg.max_length = max_length;
    cfg.max_steps = Some(1);
    let error = format!("{:#}", run_sft(&cfg, false).unwrap_err());
    assert!(
        error.contains("max_length") && error.contains("max_lost_loss_fraction"),
        "{error}"
    );
    assert!(
        !tmp.path().join("refused/final").exists(),
        "nothing was trained"
    );

    cfg.out = tmp.path().join("truncated");
    cfg.over_length = distill::train::sft_data::OverLength::Truncate;
    cfg.max_lost_loss_fraction = 1.0;
    let report = run_sft(&cfg, false).unwrap().examples;
    assert_eq!(report.loss_tokens, total);
    assert_eq!(report.lost_loss_tokens, truncated_loss);
    assert!(report.truncated > 0 && report.lost_loss_tokens > 0);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("truncated/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["examples"]["lost_loss_tokens"], truncated_loss);
}
