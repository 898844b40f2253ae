//! Inputs that used to run silently into garbage: prompts longer than the model's context (refused
//! before anything is sampled, naming the problem), `max_new_tokens` past the context, and a
//! llama2.c checkpoint named by its bare file name.

mod generate_common;

use std::path::Path;
use std::process::Command;

use distill::generate::run_generate;
use generate_common::{local_config, stories260k};

fn distill_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_distill"))
}

#[test]
fn generate_refuses_a_prompt_past_the_teachers_context_before_sampling_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("long.jsonl");
    let long_question = "How many apples are there in the basket now? ".repeat(300);
    std::fs::write(
        &prompts,
        format!(
            "{}\n{}\n",
            serde_json::json!({"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}),
            serde_json::json!({"question": long_question, "answer": "#### 7"}),
        ),
    )
    .unwrap();
    let out = tmp.path().join("traces");
    let error = run_generate(&local_config(prompts.to_str().unwrap(), &out))
        .unwrap_err()
        .to_string();
    // stories260K was trained on 512 positions.
    assert!(
        error.contains("1 prompt(s) do not fit")
            && error.contains("context of 512 tokens")
            && error.contains("nothing was sampled"),
        "{error}"
    );
    let written: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(
        written
            .iter()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".parquet")),
        "shards were written: {written:?}"
    );
}

#[test]
fn model_sample_refuses_max_new_tokens_past_the_context() {
    let output = distill_bin()
        .args(["model", "sample", "--model", &stories260k()])
        .args(["--prompt", "Once upon a time", "--max-new-tokens", "2000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("2000 new tokens") && stderr.contains("context of 512 tokens"),
        "{stderr}"
    );
}

#[test]
fn a_llama2c_checkpoint_named_by_its_bare_file_name_loads() {
    let checkpoint = std::path::PathBuf::from(stories260k())
        .canonicalize()
        .unwrap();
    let output = distill_bin()
        .current_dir(checkpoint.parent().unwrap())
        .args(["model", "sample", "--model", "stories260K.bin"])
        .args(["--max-new-tokens", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("Once upon a time"), "{stdout}");
}

#[test]
fn generate_reads_a_generic_problem_answer_file_as_eval_and_grpo_do() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("mine.jsonl");
    std::fs::write(
        &prompts,
        format!(
            "{}\n{}\n",
            serde_json::json!({"problem": "What is 2 + 3?", "answer": "5"}),
            serde_json::json!({"problem": "What is 4 + 4?", "answer": "8"}),
        ),
    )
    .unwrap();
    let summary = run_generate(&local_config(
        prompts.to_str().unwrap(),
        &tmp.path().join("out"),
    ))
    .unwrap();
    assert_eq!(summary.problems, 2);
    assert_eq!(summary.rows_written, 4);
}

#[test]
fn exported_weights_follow_the_umask_like_every_other_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("stories");
    let status = distill_bin()
        .args(["model", "export", &stories260k(), "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let mode = |name: &str| {
        std::fs::metadata(out.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    // Whatever the umask, the weights get the same permissions as config.json beside them.
    assert_eq!(mode("model.safetensors"), mode("config.json"));
}

/// Runs `distill ARGS…` and returns (success, stderr).
fn run_distill(args: &[&str]) -> (bool, String) {
    let output = distill_bin().args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn impossible_values_are_refused_before_any_work_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "train",
                "--student",
                "no-such-model",
                "--data",
                out,
                "--out",
                out,
                "--lr",
                "nan",
            ],
            "`learning_rate` is NaN",
        ),
        (
            &[
                "train",
                "--student",
                "no-such-model",
                "--data",
                out,
                "--out",
                out,
                "--batch-size",
                "0",
            ],
            "`batch_size` is 0",
        ),
        (
            &[
                "grpo",
                "--policy",
                "no-such-model",
                "--prompts",
                "synth:arith:count=4",
                "--out",
                out,
                "--group-size",
                "1",
            ],
            "`group_size` is 1",
        ),
        (
            &[
                "grpo",
                "--policy",
                "no-such-model",
                "--prompts",
                "synth:arith:count=4",
                "--out",
                out,
                "--lr",
                "inf",
            ],
            "`learning_rate` is inf",
        ),
        (
            &[
                "filter",
                "--input",
                out,
                "--out",
                out,
                "--min-script-share",
                "7",
            ],
            "`min_script_share`",
        ),
    ];
    for (args, expected) in cases {
        let (ok, stderr) = run_distill(args);
        assert!(!ok && stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("no-such-model"),
            "{args:?} loaded before checking: {stderr}"
        );
    }
    assert!(!Path::new(out).exists(), "nothing may be written");
}
