//! The command line: model init / inspect / sample end to end, and honest refusals for unbuilt verbs.

mod common;

use std::process::Command;

fn distill(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_verb_has_help_and_bad_arguments_fail_without_output() {
    for verb in [
        "generate", "filter", "train", "grpo", "eval", "compare", "run", "model", "bench",
    ] {
        let help = distill(&[verb, "--help"]);
        assert!(help.status.success(), "{verb} --help works");
        assert!(!help.stdout.is_empty());
    }
    for args in [
        &["train"][..],
        &["grpo", "--prompts", "synth:arith"],
        &["run", "no-such-recipe.toml"],
    ] {
        let out = distill(args);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(out.stdout.is_empty(), "{args:?} prints no results");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
}

#[test]
fn model_sample_continues_a_prompt_with_stories260k() {
    let model = common::stories260k();
    let out = distill(&[
        "model",
        "sample",
        "--model",
        &model,
        "--max-new-tokens",
        "60",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("Once upon a time, there was a little girl named Lily."),
        "{stdout}"
    );

    let out = distill(&[
        "model",
        "sample",
        "--model",
        &model,
        "--prompt",
        "The cat",
        "--max-new-tokens",
        "20",
        "--temperature",
        "0.8",
        "--seed",
        "4",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("The cat") && stdout.trim().len() > "The cat".len(),
        "{stdout}"
    );
}

#[test]
fn model_init_then_inspect_and_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("tiny");
    let tokenizer = format!("{}/tokenizer_qwen2_5", common::DATA);
    let out = distill(&[
        "model",
        "init",
        "--preset",
        "tiny",
        "--tokenizer",
        &tokenizer,
        "--seed",
        "7",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = distill(&["model", "inspect", out_dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("qwen2") && stdout.contains("151665"),
        "{stdout}"
    );
    let out = distill(&[
        "model",
        "sample",
        "--model",
        out_dir.to_str().unwrap(),
        "--prompt",
        "Hello",
        "--chat",
        "--max-new-tokens",
        "5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("5 generated"));
}
