//! The endpoint teacher at scale, against scripted local HTTP servers: several endpoints with
//! failover, a clean stop when all are down (rows kept, resumable), 429 with `Retry-After`,
//! request pacing, streaming with reasoning deltas and an idle timeout, and cost.

mod generate_common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distill::generate::config::{EndpointEntry, EndpointTeacherConfig};
use distill::generate::{run_generate, GenerateConfig, GenerateError, TeacherConfig};
use distill::teacher::TeacherError;
use generate_common::{chat_body, comparable_rows, FakeServer, Reply};

/// A config sampling `count` problems once each from the endpoints at `urls`.
fn pool_config(urls: &[&str], count: usize, out: &Path) -> GenerateConfig {
    let prompts = format!("synth:arith:difficulty=2:count={count}:seed=5");
    GenerateConfig {
        teacher: TeacherConfig::Openai(EndpointTeacherConfig {
            model: "r1".into(),
            endpoints: urls
                .iter()
                .map(|url| EndpointEntry {
                    url: url.to_string(),
                    ..EndpointEntry::default()
                })
                .collect(),
            concurrency: 2,
            timeout_secs: 2.0,
            max_retries: 3,
            backoff_secs: 0.01,
            ..EndpointTeacherConfig::default()
        }),
        n: 1,
        max_new_tokens: 64,
        rows_per_shard: 4,
        ..generate_common::local_config(&prompts, out)
    }
}

fn teacher(config: &mut GenerateConfig) -> &mut EndpointTeacherConfig {
    match &mut config.teacher {
        TeacherConfig::Openai(teacher) => teacher,
        other => panic!("{other:?}"),
    }
}

/// Each row's key appears once; returns the rows per serving endpoint.
fn rows_per_endpoint(out: &Path, expected_rows: usize) -> HashMap<String, usize> {
    let rows = comparable_rows(out);
    assert_eq!(rows.len(), expected_rows);
    let keys: BTreeSet<(String, u32)> = rows
        .iter()
        .map(|r| (r.id.clone(), r.sample_index))
        .collect();
    assert_eq!(keys.len(), expected_rows, "every key written once");
    let mut per_endpoint = HashMap::new();
    for row in rows {
        *per_endpoint
            .entry(row.teacher_endpoint.expect("endpoint recorded"))
            .or_default() += 1;
    }
    per_endpoint
}

#[test]
fn work_of_an_endpoint_that_dies_mid_run_moves_to_the_other() {
    let healthy =
        FakeServer::start(|_, _| Reply::Slow(Duration::from_millis(30), chat_body(1, 10, 20)));
    // Answers its first two requests, then dies with every later request in flight.
    let dying = FakeServer::start(|index, _| match index {
        0 | 1 => Reply::Slow(Duration::from_millis(30), chat_body(1, 10, 20)),
        _ => Reply::HangUp(Duration::from_millis(40)),
    });
    let tmp = tempfile::tempdir().unwrap();
    let config = pool_config(&[&healthy.url, &dying.url], 16, tmp.path());
    let summary = run_generate(&config).unwrap();
    assert_eq!(summary.rows_written, 16);

    let served = rows_per_endpoint(tmp.path(), 16);
    let name = |server: &FakeServer| format!("{}/v1/chat/completions", server.url);
    assert_eq!(served[&name(&dying)], 2, "{served:?}");
    assert_eq!(served[&name(&healthy)], 14, "{served:?}");
    assert_eq!(summary.endpoints[&name(&dying)].samples, 2);
    // The dead endpoint got requests that failed over, then was benched: after three failures
    // in a row it only sees an occasional probe.
    let failed_there = dying.count() - 2;
    assert!(failed_there >= 1, "failover happened");
    assert!(failed_there < 12, "benched, not hammered: {failed_there}");
    assert_eq!(
        healthy.count(),
        14,
        "each failed request retried once, elsewhere"
    );
}

#[test]
fn when_every_endpoint_is_down_the_run_stops_and_resumes_later() {
    let answered = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(true));
    let script = {
        let (answered, down) = (answered.clone(), down.clone());
        move |_: usize, _: &generate_common::Received| {
            if down.load(Ordering::SeqCst) && answered.fetch_add(1, Ordering::SeqCst) >= 4 {
                Reply::HangUp(Duration::ZERO)
            } else {
                Reply::Respond(200, chat_body(1, 10, 20))
            }
        }
    };
    let a = FakeServer::start(script.clone());
    let b = FakeServer::start(script);
    let tmp = tempfile::tempdir().unwrap();
    let mut config = pool_config(&[&a.url, &b.url], 12, tmp.path());
    teacher(&mut config).concurrency = 1;
    let error = run_generate(&config).unwrap_err();
    assert!(
        matches!(
            error,
            GenerateError::Teacher(TeacherError::Transport { attempts: 4, .. })
        ),
        "{error}"
    );
    // The four answered samples were written and are kept.
    assert_eq!(comparable_rows(tmp.path()).len(), 4);

    down.store(false, Ordering::SeqCst);
    let summary = run_generate(&config).unwrap();
    assert_eq!((summary.rows_skipped, summary.rows_written), (4, 8));
    rows_per_endpoint(tmp.path(), 12);
}

#[test]
fn a_429_with_retry_after_pauses_the_whole_endpoint() {
    // The first request is refused for a second; the other worker's requests must wait too.
    let server = FakeServer::start(|index, _| match index {
        0 => Reply::WithHeaders(
            429,
            vec![("Retry-After".into(), "1".into())],
            r#"{"error":"rate limited"}"#.into(),
        ),
        _ => Reply::Slow(Duration::from_millis(50), chat_body(1, 10, 20)),
    });
    let tmp = tempfile::tempdir().unwrap();
    let config = pool_config(&[&server.url], 4, tmp.path());
    let summary = run_generate(&config).unwrap();
    assert_eq!(summary.rows_written, 4);
    let received = server.received.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        5,
        "one refusal, then one request per problem"
    );
    let refused_at = received[0].at;
    // Request 1 went out alongside the refused one; every later one waited out the second.
    for later in &received[2..] {
        let waited = later.at.duration_since(refused_at);
        assert!(waited >= Duration::from_millis(990), "{waited:?}");
    }
}

#[test]
fn an_exhausted_x_ratelimit_header_pauses_until_its_reset() {
    let server = FakeServer::start(|index, _| match index {
        0 => Reply::WithHeaders(
            200,
            vec![
                ("x-ratelimit-remaining-requests".into(), "0".into()),
                ("x-ratelimit-reset-requests".into(), "600ms".into()),
            ],
            chat_body(1, 10, 20),
        ),
        _ => Reply::Respond(200, chat_body(1, 10, 20)),
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut config = pool_config(&[&server.url], 2, tmp.path());
    teacher(&mut config).concurrency = 1;
    run_generate(&config).unwrap();
    let received = server.received.lock().unwrap().clone();
    let waited = received[1].at.duration_since(received[0].at);
    assert!(waited >= Duration::from_millis(590), "{waited:?}");
}

#[test]
fn requests_are_paced_at_the_requests_per_minute_limit() {
    let server = FakeServer::start(|_, _| Reply::Respond(200, chat_body(1, 10, 20)));
    let tmp = tempfile::tempdir().unwrap();
    let mut config = pool_config(&[&server.url], 30, tmp.path());
    teacher(&mut config).concurrency = 4;
    teacher(&mut config).rpm = Some(1200.0); // 20 requests a second
    run_generate(&config).unwrap();
    let received = server.received.lock().unwrap().clone();
    assert_eq!(received.len(), 30);
    let span = received[29].at.duration_since(received[0].at).as_secs_f64();
    let rate = 29.0 / span;
    assert!((rate - 20.0).abs() <= 2.0, "{rate:.2} requests/s");
}

/// A chat event stream: reasoning pieces, then content pieces, each after `gap`, then usage.
fn chat_events(gap: Duration) -> Vec<(Duration, String)> {
    let event = |value: serde_json::Value| format!("data: {value}\n\n");
    let mut events = Vec::new();
    for piece in ["Two ", "plus ", "two."] {
        let delta =
            serde_json::json!({"choices": [{"index": 0, "delta": {"reasoning_content": piece}}]});
        events.push((gap, event(delta)));
    }
    let delta = serde_json::json!({"choices": [{"index": 0, "delta": {"content": "\\boxed{4}"}, "finish_reason": "stop"}]});
    events.push((gap, event(delta)));
    let usage =
        serde_json::json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9}});
    events.push((Duration::ZERO, event(usage)));
    events.push((Duration::ZERO, "data: [DONE]\n\n".into()));
    events
}

#[test]
fn streamed_reasoning_and_usage_are_assembled_within_the_idle_timeout() {
    // Four pieces 150 ms apart: 0.6 s in all, longer than the 0.4 s idle timeout.
    let server = FakeServer::start(|_, _| Reply::Events(chat_events(Duration::from_millis(150))));
    let tmp = tempfile::tempdir().unwrap();
    let mut config = pool_config(&[&server.url], 2, tmp.path());
    teacher(&mut config).stream = true;
    teacher(&mut config).idle_timeout_secs = 0.4;
    let summary = run_generate(&config).unwrap();
    assert_eq!(summary.rows_written, 2);
    assert_eq!(server.count(), 2, "no retries");
    for request in server.received.lock().unwrap().iter() {
        assert_eq!(request.body["stream"], true);
        assert_eq!(request.body["stream_options"]["include_usage"], true);
    }
    for row in comparable_rows(tmp.path()) {
        assert_eq!(
            row.generation,
            "<think>\nTwo plus two.\n</think>\n\n\\boxed{4}"
        );
        assert_eq!(
            (row.prompt_tokens, row.completion_tokens),
            (Some(12), Some(9))
        );
        assert_eq!(row.finish_reason.as_str(), "stop");
    }
}

#[test]
fn a_stream_that_stalls_past_the_idle_timeout_is_retried_then_fails_clearly() {
    let stalled = || {
        let mut events = chat_events(Duration::ZERO);
        events[2].0 = Duration::from_secs(2);
        Reply::Events(events)
    };
    // First attempt stalls mid-stream; the retry streams through.
    let server = FakeServer::start(move |index, _| match index {
        0 => stalled(),
        _ => Reply::Events(chat_events(Duration::ZERO)),
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut config = pool_config(&[&server.url], 1, tmp.path());
    teacher(&mut config).stream = true;
    teacher(&mut config).idle_timeout_secs = 0.3;
    let started = std::time::Instant::now();
    run_generate(&config).unwrap();
    assert_eq!(server.count(), 2);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "did not wait for the stall"
    );

    // Always stalling: the run fails, saying the stream went idle.
    let server = FakeServer::start(move |_, _| stalled());
    let tmp = tempfile::tempdir().unwrap();
    let mut config = pool_config(&[&server.url], 1, tmp.path());
    teacher(&mut config).stream = true;
    teacher(&mut config).idle_timeout_secs = 0.3;
    teacher(&mut config).max_retries = 1;
    let message = run_generate(&config).unwrap_err().to_string();
    assert!(message.contains("idle"), "{message}");
    assert!(message.contains("after 2 attempt(s)"), "{message}");
}

#[test]
fn samples_carry_their_cost_and_the_summary_sums_it() {
    let server = FakeServer::start(|_, _| Reply::Respond(200, chat_body(2, 40, 30)));
    let tmp = tempfile::tempdir().unwrap();
    let mut config = pool_config(&[&server.url], 3, tmp.path());
    config.n = 2;
    teacher(&mut config).price_prompt_per_mtok = Some(1.0);
    teacher(&mut config).endpoints[0].price_completion_per_mtok = Some(2.0);
    let summary = run_generate(&config).unwrap();
    // Per request: 40 prompt tokens at 1 + 30 completion tokens at 2 = 100 per million.
    let expected = 3.0 * 100e-6;
    let total = summary.cost.unwrap();
    assert!((total - expected).abs() < 1e-12, "{total}");
    let rows = comparable_rows(tmp.path());
    let row_sum: f64 = rows.iter().map(|r| r.cost.unwrap()).sum();
    assert!((row_sum - expected).abs() < 1e-12, "{row_sum}");
    let endpoint = format!("{}/v1/chat/completions", server.url);
    let served = &summary.endpoints[&endpoint];
    assert_eq!((served.samples, served.completion_tokens), (6, 90));
    assert!(
        summary.human().contains("Cost: 0.0003"),
        "{}",
        summary.human()
    );

    // Without prices nothing is priced.
    let server = FakeServer::start(|_, _| Reply::Respond(200, chat_body(1, 40, 30)));
    let tmp = tempfile::tempdir().unwrap();
    let config = pool_config(&[&server.url], 1, tmp.path());
    let summary = run_generate(&config).unwrap();
    assert_eq!(summary.cost, None);
    assert!(comparable_rows(tmp.path()).iter().all(|r| r.cost.is_none()));
}

#[test]
fn tokens_are_paced_at_the_tokens_per_minute_limit() {
    // Every response uses 100 tokens; 120,000 a minute is 2,000 a second: 20 requests a second
    // once the bucket's first second of tokens is spent.
    let server = FakeServer::start(|_, _| Reply::Respond(200, chat_body(1, 20, 80)));
    let tmp = tempfile::tempdir().unwrap();
    let mut config = pool_config(&[&server.url], 60, tmp.path());
    teacher(&mut config).concurrency = 1;
    teacher(&mut config).tpm = Some(120_000.0);
    run_generate(&config).unwrap();
    let received = server.received.lock().unwrap().clone();
    assert_eq!(received.len(), 60);
    let span = received[59]
        .at
        .duration_since(received[30].at)
        .as_secs_f64();
    let rate = 29.0 / span;
    assert!((rate - 20.0).abs() <= 2.0, "{rate:.2} requests/s");
}

#[test]
fn the_command_line_takes_several_endpoints_with_limits() {
    let a = FakeServer::start(|_, _| Reply::Slow(Duration::from_millis(20), chat_body(1, 5, 6)));
    let b = FakeServer::start(|_, _| Reply::Slow(Duration::from_millis(20), chat_body(1, 5, 6)));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_distill"))
        .args([
            "generate",
            "--prompts",
            "synth:arith:difficulty=2:count=8:seed=5",
        ])
        .args([
            "--endpoint",
            &a.url,
            "--endpoint",
            &b.url,
            "--api-model",
            "r1",
        ])
        .args([
            "--concurrency",
            "2",
            "--rpm",
            "6000",
            "--price-completion-per-mtok",
            "1",
        ])
        .args(["--no-progress", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(a.count() >= 1 && b.count() >= 1, "both endpoints used");
    assert_eq!(a.count() + b.count(), 8);
    let served = rows_per_endpoint(&out, 8);
    assert_eq!(served.len(), 2, "{served:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Cost: 0.0000"), "{stdout}");

    // In a recipe, a list entry with a misspelt field is refused, naming the section and field.
    let section: toml::Table = toml::from_str(
        "[teacher]\nkind = \"openai\"\nmodel = \"r1\"\n\
         [[teacher.endpoints]]\nurl = \"http://a\"\nprice_per_mtok = 1\n",
    )
    .unwrap();
    let fixed = [("prompts", "p".into()), ("out", "o".into())];
    let error =
        distill::pipeline::recipe::stage_config::<GenerateConfig>("generate", &section, &fixed)
            .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("[generate]") && message.contains("price_per_mtok"),
        "{message}"
    );
}
