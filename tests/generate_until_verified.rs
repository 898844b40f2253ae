//! `--until-verified K --max-samples M` against a scripted teacher: each problem is sampled in
//! rounds of `n` until K samples pass the verifier and the readability checks or M were drawn;
//! the number of samples drawn per problem is exact, rows carry their round, and a run that
//! crashed mid-way resumes to the same rows.

mod generate_common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use distill::generate::config::EndpointTeacherConfig;
use distill::generate::prompts::problem_seed;
use distill::generate::rounds::round_seed;
use distill::generate::{run_generate, GenerateConfig, TeacherConfig};
use generate_common::{comparable_rows, FakeServer, Received, Reply};

/// Three problems whose gold answer is 1: `always` is answered right every time, `never`
/// never, `later` wrong in its first request and right after.
fn prompts(dir: &Path) -> String {
    let path = dir.join("prompts.jsonl");
    let lines: Vec<String> = ["always", "never", "later"]
        .iter()
        .map(|id| {
            serde_json::json!({"id": id, "question": format!("Problem {id}: what is one?"), "gold": "1"})
                .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.display().to_string()
}

/// A scripted teacher: `n` readable choices, right or wrong by the problem and how often it
/// was asked; the request numbers per problem are counted in `asked`.
fn teacher(asked: Arc<Mutex<HashMap<String, usize>>>) -> impl Fn(usize, &Received) -> Reply {
    move |_, request| {
        let text = request.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_string();
        let id = ["always", "never", "later"]
            .into_iter()
            .find(|id| text.contains(&format!("Problem {id}:")))
            .unwrap();
        let count = {
            let mut asked = asked.lock().unwrap();
            let count = asked.entry(id.to_string()).or_default();
            *count += 1;
            *count
        };
        let right = id == "always" || (id == "later" && count > 1);
        let n = request.body["n"].as_u64().unwrap() as usize;
        let choices: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({
                    "index": i,
                    "message": {
                        "role": "assistant",
                        "content": format!("So the answer is $\\boxed{{{}}}$.", if right { 1 } else { 2 }),
                        "reasoning_content": format!(
                            "We need to work out the problem, sample {i}. First I restate the \
                             question in my own words, then I compute the value step by step and \
                             check the arithmetic twice. Each step follows from the previous one, \
                             so the result is consistent."
                        ),
                    },
                    "finish_reason": "stop",
                })
            })
            .collect();
        let body = serde_json::json!({
            "choices": choices,
            "usage": {"prompt_tokens": 20, "completion_tokens": 60 * n},
        });
        Reply::Respond(200, body.to_string())
    }
}

fn config(server: &FakeServer, prompts: &str, out: &Path) -> GenerateConfig {
    GenerateConfig {
        problem_column: Some("question".into()),
        answer_column: Some("gold".into()),
        id_column: Some("id".into()),
        teacher: TeacherConfig::Openai(EndpointTeacherConfig {
            endpoint: Some(server.url.clone()),
            model: "r1".into(),
            concurrency: 1,
            max_retries: 0,
            ..EndpointTeacherConfig::default()
        }),
        n: 2,
        until_verified: Some(2),
        max_samples: Some(6),
        ..generate_common::local_config(prompts, out)
    }
}

/// (id, sample index, round, seed) of every row.
fn keys(out: &Path) -> Vec<(String, u32, Option<u32>, u64)> {
    comparable_rows(out)
        .into_iter()
        .map(|r| (r.id, r.sample_index, r.round, r.seed))
        .collect()
}

#[test]
fn problems_are_sampled_in_rounds_until_enough_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = prompts(tmp.path());
    let asked = Arc::new(Mutex::new(HashMap::new()));
    let server = FakeServer::start(teacher(asked.clone()));
    let out = tmp.path().join("out");
    let config = config(&server, &prompts, &out);
    let summary = run_generate(&config).unwrap();

    // always: one round passes both; later: round 0 fails, round 1 passes; never: M = 6.
    let drawn = |id: &str| keys(&out).iter().filter(|k| k.0.ends_with(id)).count();
    assert_eq!((drawn("always"), drawn("later"), drawn("never")), (2, 4, 6));
    assert_eq!(summary.samples_generated, 12);
    assert_eq!(summary.problems_verified, Some(2));
    assert_eq!(server.count(), 6, "one request per round: 1 + 2 + 3");
    for (id, sample_index, round, seed) in keys(&out) {
        let round = round.unwrap();
        assert_eq!(round, sample_index / 2, "{id} {sample_index}");
        assert_eq!(seed, round_seed(problem_seed(config.seed, &id), round));
    }

    // Rerun: everything is done, nothing is asked again.
    let again = run_generate(&config).unwrap();
    assert_eq!((again.rows_written, again.rows_skipped), (0, 12));
    assert_eq!(server.count(), 6);
}

#[test]
fn a_run_that_failed_mid_way_resumes_to_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = prompts(tmp.path());
    let straight_server = FakeServer::start(teacher(Arc::default()));
    let straight = tmp.path().join("straight");
    run_generate(&config(&straight_server, &prompts, &straight)).unwrap();

    // The fourth request (round 1 of `never`) is refused: round 0 is kept.
    let asked = Arc::new(Mutex::new(HashMap::new()));
    let script = teacher(asked);
    let failing = FakeServer::start(move |index, request| match index {
        3 => Reply::Respond(400, r#"{"error":"refused"}"#.into()),
        _ => script(index, request),
    });
    let resumed = tmp.path().join("resumed");
    let config = config(&failing, &prompts, &resumed);
    assert!(run_generate(&config).is_err());
    assert_eq!(keys(&resumed).len(), 6, "round 0 kept");
    let summary = run_generate(&config).unwrap();
    assert_eq!((summary.rows_skipped, summary.rows_written), (6, 6));
    assert_eq!(keys(&resumed), keys(&straight));
}
