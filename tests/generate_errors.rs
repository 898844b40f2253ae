//! Bad prompt files and settings through the `distill generate` command line: the error names
//! the file, line and field, the exit code is non-zero, and the output directory is untouched.

mod generate_common;

use std::path::Path;
use std::process::{Command, Output};

use generate_common::stories260k;

fn generate(prompts: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distill"))
        .arg("generate")
        .arg("--prompts")
        .arg(prompts)
        .args(["--teacher", &stories260k(), "--max-new-tokens", "8"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// Runs generate on a prompts file holding `content` and returns stderr after checking the
/// run failed and left no output directory.
fn fails(content: &[u8], extra: &[&str]) -> (String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    std::fs::write(&prompts, content).unwrap();
    let out = tmp.path().join("out");
    let output = generate(&prompts, &out, extra);
    assert!(!output.status.success(), "must fail");
    assert!(output.stdout.is_empty(), "no summary for a failed run");
    assert!(!out.exists(), "nothing written into the output directory");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stderr.contains(&prompts.display().to_string()), "{stderr}");
    (stderr, prompts.display().to_string())
}

const GOOD: &str = r#"{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}"#;

#[test]
fn a_malformed_jsonl_line_is_named() {
    let content = format!("{GOOD}\n{{\"question\": \"What is 1 + 1?\", \"answer\": \n{GOOD}\n");
    let (stderr, _) = fails(content.as_bytes(), &["--adapter", "gsm8k"]);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains("malformed JSON"), "{stderr}");
}

#[test]
fn a_missing_column_is_named_with_its_line() {
    let content = format!(
        "{}\n{}\n{}\n",
        r#"{"q": "What is 2 + 3?", "a": "5"}"#,
        r#"{"q": "What is 4 + 4?", "a": "8"}"#,
        r#"{"q": "What is 1 + 1?"}"#
    );
    let (stderr, _) = fails(
        content.as_bytes(),
        &["--problem-column", "q", "--answer-column", "a"],
    );
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("`a`"), "{stderr}");
}

#[test]
fn a_non_utf8_file_is_named_with_its_line_and_field() {
    let mut content = format!("{GOOD}\n").into_bytes();
    content.extend_from_slice(b"{\"question\": \"caf\xff?\", \"answer\": \"#### 1\"}\n");
    let (stderr, _) = fails(&content, &["--adapter", "gsm8k"]);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains("UTF-8"), "{stderr}");
    assert!(stderr.contains("question"), "{stderr}");
}

#[test]
fn bad_settings_fail_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cases: [(&str, &[&str], &str); 5] = [
        ("synth:arith:count=3", &["--top-p", "0"], "--top-p"),
        ("synth:arith:count=3", &["-n", "0"], "-n"),
        ("synth:nope:count=3", &[], "unknown task kind `nope`"),
        (
            "synth:arith:count=3",
            &["--device", "tpu"],
            "unknown device",
        ),
        ("no/such/prompts.jsonl", &[], "no/such/prompts.jsonl"),
    ];
    for (prompts, extra, what) in cases {
        let output = generate(Path::new(prompts), &out, extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{prompts} {extra:?}");
        assert!(stderr.contains(what), "{stderr}");
        assert!(!out.exists(), "{prompts} {extra:?} wrote output");
    }
}
