//! No secret in any output: an endpoint that echoes the `Authorization` header in its error body,
//! and credentials written into the endpoint URL, never reach stdout, stderr, rows, manifests or
//! summaries.

mod generate_common;

use std::path::Path;
use std::process::{Command, Output};

use generate_common::{all_files, chat_body, FakeServer, Reply};

const PROMPTS: &str = "synth:arith:difficulty=1:count=3:seed=1";

fn generate(endpoint: &str, key: &str, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distill"))
        .env("DISTILL_TEST_SECRET_KEY", key)
        .args(["generate", "--prompts", PROMPTS, "--endpoint", endpoint])
        .args([
            "--api-model",
            "r1",
            "--api-key-env",
            "DISTILL_TEST_SECRET_KEY",
        ])
        .args(["-n", "2", "--max-retries", "0", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

/// Everything a run showed or wrote.
fn everything(output: &Output, dir: &Path) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text += &String::from_utf8_lossy(&output.stderr);
    for file in all_files(dir) {
        text += &String::from_utf8_lossy(&std::fs::read(file).unwrap());
    }
    text
}

#[test]
fn an_error_body_that_echoes_the_authorization_header_is_redacted() {
    let key = "sk-echoed-secret-9731";
    let echo = FakeServer::start(|_, request| {
        let auth = request
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default();
        Reply::Respond(401, format!(r#"{{"error":"invalid header: {auth}"}}"#))
    });
    let tmp = tempfile::tempdir().unwrap();
    let output = generate(&echo.url, key, &tmp.path().join("out"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("<redacted>"),
        "{stderr}"
    );
    assert!(
        !everything(&output, tmp.path()).contains(key),
        "the key leaked: {stderr}"
    );
}

#[test]
fn credentials_in_the_endpoint_url_are_never_stored_or_shown() {
    let password = "pw-in-url-5520";
    let server = FakeServer::start(|_, _| Reply::Respond(200, chat_body(2, 5, 6)));
    let endpoint = server
        .url
        .replace("http://", &format!("http://alice:{password}@"));
    let tmp = tempfile::tempdir().unwrap();
    let output = generate(&endpoint, "sk-other", &tmp.path().join("out"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let all = everything(&output, tmp.path());
    assert!(
        all.contains("r1@http://<redacted>@127.0.0.1"),
        "teacher name not shown redacted"
    );
    assert!(!all.contains(password), "the URL's password leaked");

    // A failing endpoint's error names it without the credentials, too.
    let refused = FakeServer::start(|_, _| Reply::Respond(500, "{}".into()));
    let endpoint = refused
        .url
        .replace("http://", &format!("http://alice:{password}@"));
    let output = generate(&endpoint, "sk-other", &tmp.path().join("refused"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("<redacted>@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains(password), "{stderr}");
}
