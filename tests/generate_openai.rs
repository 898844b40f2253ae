//! The OpenAI-compatible teacher against a scripted local HTTP server: request shape, `n`,
//! `reasoning_content`, retries on 429/5xx/timeouts, no retries on 400 or a malformed 200, the
//! R1 `<think>\n` prefill with the completions API, and the API key kept out of every file and
//! error.

mod generate_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use distill::generate::config::EndpointTeacherConfig;
use distill::generate::prompts::problem_seed;
use distill::generate::{run_generate, GenerateConfig, GenerateError, TeacherConfig};
use distill::teacher::openai::ApiKind;
use distill::teacher::TeacherError;
use generate_common::{
    all_files, chat_body, comparable_rows, one_choice_naming_seed, FakeServer, Reply, DATA,
};

const PROMPTS: &str = "synth:arith:difficulty=1:count=3:seed=2";

fn endpoint_config(server: &FakeServer, out: &Path, api_key_env: Option<&str>) -> GenerateConfig {
    GenerateConfig {
        teacher: TeacherConfig::Openai(EndpointTeacherConfig {
            endpoint: Some(format!("{}/v1", server.url)),
            model: "deepseek-r1".into(),
            api: ApiKind::Chat,
            api_key_env: api_key_env.map(str::to_string),
            concurrency: 2,
            timeout_secs: 1.0,
            max_retries: 3,
            backoff_secs: 0.01,
            ..EndpointTeacherConfig::default()
        }),
        n: 2,
        max_new_tokens: 64,
        ..generate_common::local_config(PROMPTS, out)
    }
}

#[test]
fn chat_samples_join_reasoning_and_send_the_request_fields() {
    std::env::set_var("DISTILL_TEST_KEY_CHAT", "sk-chat-secret-123");
    let server = FakeServer::start(|_, _| Reply::Respond(200, chat_body(2, 40, 30)));
    let tmp = tempfile::tempdir().unwrap();
    let config = endpoint_config(&server, tmp.path(), Some("DISTILL_TEST_KEY_CHAT"));
    let summary = run_generate(&config).unwrap();
    assert_eq!((summary.rows_written, summary.samples_generated), (6, 6));
    assert_eq!(server.count(), 3, "one request per problem, n samples each");

    let received = server.received.lock().unwrap().clone();
    for request in &received {
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(
            request.headers.get("authorization").map(String::as_str),
            Some("Bearer sk-chat-secret-123")
        );
        let body = &request.body;
        assert_eq!(body["model"], "deepseek-r1");
        assert_eq!(body["n"], 2);
        assert_eq!(body["temperature"], 0.8);
        assert_eq!(body["top_p"], 0.95);
        assert_eq!(body["max_tokens"], 64);
        assert!(body["seed"].is_u64());
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["role"], "user");
        assert!(messages[0]["content"]
            .as_str()
            .unwrap()
            .ends_with("Please reason step by step, and put your final answer within \\boxed{}."));
    }

    let rows = comparable_rows(tmp.path());
    assert_eq!(rows.len(), 6);
    for row in &rows {
        let i = row.sample_index;
        assert_eq!(
            row.generation,
            format!("<think>\nthought {i}\n</think>\n\nanswer {i} \\boxed{{{i}}}")
        );
        assert_eq!(row.reasoning, format!("thought {i}"));
        assert_eq!(row.final_text, format!("answer {i} \\boxed{{{i}}}"));
        let expected_reason = if i == 0 { "stop" } else { "length" };
        assert_eq!(row.finish_reason.as_str(), expected_reason);
        assert_eq!(row.prompt_tokens, Some(40));
        assert_eq!(
            row.teacher,
            format!("deepseek-r1@{}/v1/chat/completions", server.url)
        );
        // Without a local tokenizer the prompt column holds the JSON messages sent.
        assert!(
            row.prompt.starts_with("[{\"role\":\"user\""),
            "{}",
            row.prompt
        );
    }
    // Usage: the response's 30 completion tokens split over the two equally long samples.
    let per_problem: Vec<u32> = rows.iter().map(|r| r.completion_tokens.unwrap()).collect();
    assert_eq!(
        per_problem
            .chunks(2)
            .map(|c| c[0] + c[1])
            .collect::<Vec<_>>(),
        vec![30; 3]
    );

    for file in all_files(tmp.path()) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("sk-chat-secret"),
            "{} holds the key",
            file.display()
        );
    }
}

#[test]
fn rate_limits_server_errors_and_stalls_are_retried() {
    // Request 0: 429, 1: 500, 2: stalls past the 1 s timeout, then successes.
    let server = FakeServer::start(|index, _| match index {
        0 => Reply::Respond(429, r#"{"error":"slow down"}"#.into()),
        1 => Reply::Respond(500, r#"{"error":"boom"}"#.into()),
        2 => Reply::Stall(Duration::from_secs(3)),
        _ => Reply::Respond(200, chat_body(2, 10, 8)),
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut config = endpoint_config(&server, tmp.path(), None);
    config.limit = Some(1);
    let started = Instant::now();
    let summary = run_generate(&config).unwrap();
    assert_eq!(summary.rows_written, 2);
    assert_eq!(server.count(), 4, "three failures retried, then success");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for the timeout"
    );
    let received = server.received.lock().unwrap();
    assert!(received
        .iter()
        .all(|r| !r.headers.contains_key("authorization")));
}

#[test]
fn retries_run_out_with_a_clear_error() {
    let server = FakeServer::start(|_, _| Reply::Respond(503, "overloaded".into()));
    let tmp = tempfile::tempdir().unwrap();
    let mut config = endpoint_config(&server, tmp.path(), None);
    config.limit = Some(1);
    let error = run_generate(&config).unwrap_err();
    assert!(
        matches!(
            error,
            GenerateError::Teacher(TeacherError::Status {
                status: 503,
                attempts: 4,
                ..
            })
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&server.url) && message.contains("overloaded"),
        "{message}"
    );
    assert_eq!(server.count(), 4, "1 attempt + 3 retries");
}

#[test]
fn a_malformed_body_and_a_400_fail_at_once() {
    let cases: [(u16, &str, &str); 3] = [
        (200, "<html>gateway</html>", "not JSON"),
        (
            200,
            r#"{"choices":[{"index":0,"message":{"content":"x"},"finish_reason":"stop"},{"index":0,"message":{"content":"y"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            "got indices [0, 0]",
        ),
        (
            400,
            r#"{"error":"max_tokens is too large"}"#,
            "max_tokens is too large",
        ),
    ];
    for (status, body, what) in cases {
        let body = body.to_string();
        let server = FakeServer::start(move |_, _| Reply::Respond(status, body.clone()));
        let tmp = tempfile::tempdir().unwrap();
        let mut config = endpoint_config(&server, tmp.path(), None);
        config.limit = Some(1);
        let message = run_generate(&config).unwrap_err().to_string();
        assert!(message.contains(&server.url), "{message}");
        assert!(message.contains(&format!("HTTP {status}")), "{message}");
        assert!(message.contains(what), "{message}");
        assert_eq!(server.count(), 1, "not retried: {message}");
    }
}

#[test]
fn completions_api_renders_the_r1_template_and_keeps_the_think_prefill() {
    // A tokenizer directory whose chat template is DeepSeek-R1-Distill's (it opens `<think>\n`).
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = tmp.path().join("r1-tokenizer");
    std::fs::create_dir(&tokenizer).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(
            format!("{DATA}/tokenizer_qwen2_5/{file}"),
            tokenizer.join(file),
        )
        .unwrap();
    }
    std::fs::copy(
        format!("{DATA}/chat_template_deepseek_r1_distill_qwen/chat_template.jinja"),
        tokenizer.join("chat_template.jinja"),
    )
    .unwrap();
    let body = serde_json::json!({
        "choices": [{"index": 0, "text": "2 + 2 = 4.\n</think>\n\nThe answer is \\boxed{4}.", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 17},
    })
    .to_string();
    let server = FakeServer::start(move |_, _| Reply::Respond(200, body.clone()));
    let out = tmp.path().join("out");
    let mut config = endpoint_config(&server, &out, None);
    config.limit = Some(1);
    config.n = 1;
    config.system_prompt = Some("You are careful.".into());
    if let TeacherConfig::Openai(teacher) = &mut config.teacher {
        teacher.api = ApiKind::Completions;
        teacher.tokenizer = Some(tokenizer.to_string_lossy().into_owned());
    }
    run_generate(&config).unwrap();
    let request = server.received.lock().unwrap()[0].clone();
    assert_eq!(request.path, "/v1/completions");
    let prompt = request.body["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("You are careful."), "{prompt}");
    assert!(prompt.ends_with("<｜Assistant｜><think>\n"), "{prompt}");

    let rows = comparable_rows(&out);
    let row = &rows[0];
    assert_eq!(row.prompt, prompt);
    assert_eq!(
        row.generation,
        "<think>\n2 + 2 = 4.\n</think>\n\nThe answer is \\boxed{4}."
    );
    assert_eq!(row.reasoning, "2 + 2 = 4.");
    assert_eq!(row.final_text, "The answer is \\boxed{4}.");
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (Some(21), Some(17))
    );
    assert_eq!(row.messages[0].role, "system");
    assert_eq!(row.messages[2].content, row.generation);
}

#[test]
fn the_cli_never_shows_or_stores_the_api_key() {
    let key = "sk-cli-secret-456";
    let tmp = tempfile::tempdir().unwrap();
    let run = |server: &FakeServer, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_distill"))
            .env("DISTILL_TEST_KEY_CLI", key)
            .args(["generate", "--prompts", PROMPTS, "--endpoint", &server.url])
            .args(["--api-model", "r1", "--api-key-env", "DISTILL_TEST_KEY_CLI"])
            .args([
                "-n",
                "2",
                "--max-retries",
                "1",
                "--backoff-secs",
                "0.01",
                "--out",
            ])
            .arg(out)
            .output()
            .unwrap()
    };

    let ok = FakeServer::start(|_, _| Reply::Respond(200, chat_body(2, 5, 6)));
    let out = tmp.path().join("ok");
    let output = run(&ok, &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Wrote 6 rows"), "{stdout}");
    assert!(out.join("summary.json").is_file());

    let refused = FakeServer::start(|_, _| Reply::Respond(401, r#"{"error":"bad key"}"#.into()));
    let output = run(&refused, &tmp.path().join("refused"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("bad key"),
        "{stderr}"
    );

    for server in [&ok, &refused] {
        for request in server.received.lock().unwrap().iter() {
            assert_eq!(request.headers["authorization"], format!("Bearer {key}"));
        }
    }
    let mut outputs = String::from_utf8_lossy(&output.stdout).into_owned() + &stderr + &stdout;
    for file in all_files(tmp.path()) {
        outputs += &String::from_utf8_lossy(&std::fs::read(file).unwrap());
    }
    assert!(!outputs.contains(key), "the key leaked");

    let missing = Command::new(env!("CARGO_BIN_EXE_distill"))
        .env_remove("DISTILL_TEST_KEY_ABSENT")
        .args(["generate", "--prompts", PROMPTS, "--endpoint", &ok.url])
        .args([
            "--api-model",
            "r1",
            "--api-key-env",
            "DISTILL_TEST_KEY_ABSENT",
            "--out",
        ])
        .arg(tmp.path().join("absent"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("DISTILL_TEST_KEY_ABSENT"));
    assert!(
        !tmp.path().join("absent").exists(),
        "nothing written before the teacher is ready"
    );
}

#[test]
fn samples_stream_out_as_requests_complete() {
    use distill::model::Message;
    use distill::teacher::endpoint::{EndpointConfig, Transfer};
    use distill::teacher::openai::{OpenAiConfig, OpenAiTeacher};
    use distill::teacher::{PromptJob, SamplingParams, Teacher};

    // The request for "slow" takes 1.5 s; the others answer at once.
    let server = FakeServer::start(|_, request| {
        let slow = request.body["messages"][0]["content"] == "slow";
        let body = chat_body(1, 3, 4);
        if slow {
            Reply::Slow(Duration::from_millis(1500), body)
        } else {
            Reply::Respond(200, body)
        }
    });
    let mut teacher = OpenAiTeacher::new(&OpenAiConfig {
        endpoints: vec![EndpointConfig {
            url: server.url.clone(),
            model: "r1".into(),
            api_key_env: None,
            concurrency: 2,
            limits: Default::default(),
            prices: None,
        }],
        api: ApiKind::Chat,
        transfer: Transfer::Whole(Duration::from_secs(5)),
        retry: Default::default(),
    })
    .unwrap();
    let jobs: Vec<PromptJob> = ["slow", "a", "b", "c"]
        .iter()
        .map(|text| PromptJob {
            messages: vec![Message::user(*text)],
            prompt: text.to_string(),
            seed: 1,
        })
        .collect();
    let params = SamplingParams {
        temperature: 0.6,
        top_p: 0.95,
        top_k: 0,
        n: 1,
        max_new_tokens: 16,
    };
    let mut order = Vec::new();
    teacher
        .sample_streaming(&jobs, &params, &mut |samples| {
            order.extend(samples.iter().map(|s| s.job_index));
            true
        })
        .unwrap();
    assert_eq!(order.len(), 4);
    assert_eq!(
        order.last(),
        Some(&0),
        "the slow job does not hold back the others: {order:?}"
    );
}

#[test]
fn rows_finished_before_an_endpoint_failure_are_kept_and_resumed_after() {
    // One request at a time: problems 0 and 1 succeed, the third request is refused.
    let server = FakeServer::start(|index, _| match index {
        2 => Reply::Respond(400, r#"{"error":"context too long"}"#.into()),
        _ => Reply::Respond(200, chat_body(2, 5, 6)),
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut config = endpoint_config(&server, tmp.path(), None);
    if let TeacherConfig::Openai(teacher) = &mut config.teacher {
        teacher.concurrency = 1;
    }
    let error = run_generate(&config).unwrap_err().to_string();
    assert!(error.contains("HTTP 400"), "{error}");
    assert_eq!(comparable_rows(tmp.path()).len(), 4, "finished rows kept");

    let summary = run_generate(&config).unwrap();
    assert_eq!((summary.rows_written, summary.rows_skipped), (2, 4));
    assert_eq!(summary.problems_already_done, 2);
    assert_eq!(server.count(), 4);
    assert_eq!(comparable_rows(tmp.path()).len(), 6);
}

#[test]
fn a_response_without_usage_is_counted_with_the_tokenizer_or_recorded_as_null() {
    let mut body: serde_json::Value = serde_json::from_str(&chat_body(2, 0, 0)).unwrap();
    body.as_object_mut().unwrap().remove("usage");
    let body = body.to_string();

    // No tokenizer: the run completes, the counts are null and the summary says how many.
    let server = {
        let body = body.clone();
        FakeServer::start(move |_, _| Reply::Respond(200, body.clone()))
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = endpoint_config(&server, &tmp.path().join("uncounted"), None);
    let summary = run_generate(&config).unwrap();
    assert_eq!(summary.samples_without_token_counts, 6);
    let rows = comparable_rows(&config.out);
    assert_eq!(rows.len(), 6);
    assert!(rows
        .iter()
        .all(|r| r.prompt_tokens.is_none() && r.completion_tokens.is_none()));

    // With a tokenizer: counted by it.
    let tokenizer_dir = format!("{DATA}/tokenizer_qwen2_5");
    let mut config = endpoint_config(&server, &tmp.path().join("counted"), None);
    if let TeacherConfig::Openai(teacher) = &mut config.teacher {
        teacher.tokenizer = Some(tokenizer_dir.clone());
    }
    let summary = run_generate(&config).unwrap();
    assert_eq!(summary.samples_without_token_counts, 0);
    let tokenizer = distill::model::Tokenizer::from_dir(Path::new(&tokenizer_dir)).unwrap();
    let count = |text: &str| Some(tokenizer.encode(text, false).unwrap().len() as u32);
    for row in comparable_rows(&config.out) {
        assert_eq!(row.prompt_tokens, count(&row.prompt), "{}", row.prompt);
        assert_eq!(row.completion_tokens, count(&row.generation));
    }
}

#[test]
fn a_server_that_ignores_n_gets_one_request_per_missing_sample() {
    // Like `transformers serve`: one choice whatever `n` asks for.
    let server = FakeServer::start(|_, request| {
        let seed = request.body["seed"].as_u64().unwrap();
        Reply::Respond(200, one_choice_naming_seed(seed))
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut config = endpoint_config(&server, tmp.path(), None);
    if let TeacherConfig::Openai(teacher) = &mut config.teacher {
        teacher.concurrency = 1;
    }
    let summary = run_generate(&config).unwrap();
    assert_eq!((summary.rows_written, summary.samples_generated), (6, 6));

    // The first request asks for 2 and gets 1: the missing sample is one more request. From
    // then on the endpoint is known to ignore `n`: one request per sample.
    let received = server.received.lock().unwrap().clone();
    let asked: Vec<u64> = received
        .iter()
        .map(|r| r.body["n"].as_u64().unwrap())
        .collect();
    assert_eq!(asked, vec![2, 1, 1, 1, 1, 1]);

    // Sample k of a problem is drawn with the problem's seed + k, so the two differ.
    let rows = comparable_rows(tmp.path());
    assert_eq!(rows.len(), 6);
    for row in &rows {
        let expected = problem_seed(config.seed, &row.id) + u64::from(row.sample_index);
        assert_eq!(row.seed, expected, "{} sample {}", row.id, row.sample_index);
        assert!(
            row.generation.contains(&format!("seed {expected} ")),
            "{}",
            row.generation
        );
    }
}
