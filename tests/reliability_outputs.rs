//! Finished work is never destroyed by accident and every output directory has one writer: a
//! training run is not restarted over an existing one without `--force`, a model is not replaced
//! without `--force`, a directory holding another verb's output is refused, and a second process
//! is stopped by the first one's lock (a lock left by a dead process is replaced).

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn distill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn train(student: &str, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--student",
        student,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
    ];
    args.extend_from_slice(extra);
    distill(&args)
}

#[test]
fn a_finished_training_run_is_not_restarted_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 4);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 8, 2);
    let out = tmp.path().join("run");
    let first = train(&student, &data, &out, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let weights = std::fs::read(out.join("final/model.safetensors")).unwrap();
    let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();

    let again = train(&student, &data, &out, &["--lr", "1e-2"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("--resume") && stderr(&again).contains("--force"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read(out.join("final/model.safetensors")).unwrap(),
        weights
    );
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), metrics);

    let forced = train(&student, &data, &out, &["--lr", "1e-2", "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(
        std::fs::read(out.join("final/model.safetensors")).unwrap(),
        weights
    );
}

#[test]
fn a_model_is_not_replaced_and_a_directory_keeps_its_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let init = |seed: &str, extra: &[&str]| {
        let mut args = vec!["model", "init", "--preset", "tiny", "--tokenizer"];
        let tokenizer = format!("{}/tokenizer_qwen2_5", common::DATA);
        args.push(&tokenizer);
        args.extend_from_slice(&["--seed", seed, "--out", model.to_str().unwrap()]);
        args.extend_from_slice(extra);
        distill(&args)
    };
    assert!(init("1", &[]).status.success());
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    let again = init("2", &[]);
    assert!(!again.status.success() && stderr(&again).contains("already holds a model"));
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        weights
    );
    let forced = init("2", &["--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        weights
    );

    // Traces into a model directory: refused, nothing written.
    let generate = distill(&[
        "generate",
        "--prompts",
        "synth:arith:count=2",
        "--teacher",
        &common::stories260k(),
        "--max-new-tokens",
        "4",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(
        !generate.status.success() && stderr(&generate).contains("holds `distill model` output"),
        "{}",
        stderr(&generate)
    );
    assert!(!model.join("summary.json").exists());
}

#[test]
fn a_second_writer_is_stopped_and_a_stale_lock_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 4);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 8, 2);
    let out = tmp.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = out.join(distill::output_dir::LOCK_FILE);

    // A live holder: this test process.
    std::fs::write(&lock, format!("{} {}\n", std::process::id(), host.trim())).unwrap();
    let busy = train(&student, &data, &out, &[]);
    let message = stderr(&busy);
    assert!(
        !busy.status.success()
            && message.contains(&format!("pid {}", std::process::id()))
            && message.contains("another distill process"),
        "{message}"
    );
    assert!(!out.join("final").exists());

    // A dead holder: a process that has exited.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(&lock, format!("{dead} {}\n", host.trim())).unwrap();
    let resumed = train(&student, &data, &out, &[]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("stale lock"),
        "{}",
        stderr(&resumed)
    );
    assert!(!lock.exists(), "the lock is released at the end");
}
