//! Error text a user acts on: an OS error is said once, a file that is no model is called
//! that, and `model inspect` checks the weights' safetensors headers against `config.json`
//! (a truncated download or a config that does not match its weights is caught without
//! loading anything).

mod common;

use std::path::Path;
use std::process::Command;

/// Runs `distill ARGS…` and returns (success, stdout, stderr).
fn distill(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `distill model init --preset tiny` into `out`.
fn tiny_model(out: &Path) {
    let tokenizer = format!("{}/tokenizer_qwen2_5", common::DATA);
    let (ok, _, stderr) = distill(&[
        "model",
        "init",
        "--preset",
        "tiny",
        "--tokenizer",
        &tokenizer,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
}

#[test]
fn an_os_error_is_reported_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let out = tmp.path().join("out");
    for args in [
        vec!["filter", "--input", missing.to_str().unwrap()],
        vec![
            "eval",
            "--model",
            "../shared/data/llama2c_stories260K/stories260K.bin",
            "--prompts",
            "missing.jsonl",
        ],
    ] {
        let mut args = args;
        args.extend(["--out", out.to_str().unwrap()]);
        let (ok, _, stderr) = distill(&args);
        assert!(!ok);
        assert_eq!(
            stderr.matches("No such file or directory").count(),
            1,
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_file_that_is_no_model_is_called_that() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("traces.jsonl");
    std::fs::write(&data, "{}\n").unwrap();
    let (ok, _, stderr) = distill(&["model", "inspect", data.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("not a model"), "{stderr}");
    assert!(!stderr.contains("tokenizer.bin"), "{stderr}");

    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let weights = model.join("model.safetensors");
    let (ok, _, stderr) = distill(&["model", "inspect", weights.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("did you mean its directory {}", model.display())),
        "{stderr}"
    );
}

#[test]
fn model_inspect_checks_the_weights_against_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let dir = model.to_str().unwrap();
    let (ok, stdout, stderr) = distill(&["model", "inspect", dir]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("with the shape config.json implies"),
        "{stdout}"
    );

    // A config that no longer matches its weights.
    let config_path = model.join("config.json");
    let original = std::fs::read_to_string(&config_path).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    let width = config["intermediate_size"].as_u64().unwrap();
    config["intermediate_size"] = (width * 2).into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let (ok, _, stderr) = distill(&["model", "inspect", dir]);
    assert!(!ok, "a wrong-shape model passed inspect");
    assert!(
        stderr.contains("mlp") && stderr.contains("shape"),
        "{stderr}"
    );
    std::fs::write(&config_path, original).unwrap();

    // A truncated download.
    let weights = model.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 100]).unwrap();
    let (ok, _, stderr) = distill(&["model", "inspect", dir]);
    assert!(!ok, "a truncated model passed inspect");
    assert!(
        stderr.contains("model.safetensors") && stderr.contains("truncated"),
        "{stderr}"
    );
}
