//! Shared helpers of the generate tests: configs with the stories260K local teacher, reading
//! rows back in a comparable form, and a scripted OpenAI-compatible HTTP server.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distill::data::schema::TraceRow;
use distill::data::shards::read_trace_rows;
use distill::generate::{GenerateConfig, TeacherConfig};

/// The shared real data, relative to the project root.
pub const DATA: &str = "../shared/data";

/// The stories260K checkpoint.
pub fn stories260k() -> String {
    format!("{DATA}/llama2c_stories260K/stories260K.bin")
}

/// A config sampling `prompts` with the stories260K local teacher (24 new tokens).
pub fn local_config(prompts: &str, out: &Path) -> GenerateConfig {
    GenerateConfig {
        prompts: prompts.to_string(),
        adapter: None,
        problem_column: None,
        answer_column: None,
        id_column: None,
        limit: None,
        exclude: Vec::new(),
        teacher: TeacherConfig::Local {
            model: stories260k(),
            device: "cpu".into(),
            dtype: "f32".into(),
            batch_size: 4,
        },
        system_prompt: None,
        instruction: distill::data::schema::DEFAULT_INSTRUCTION.to_string(),
        temperature: 0.8,
        top_p: 0.95,
        top_k: 0,
        n: 2,
        until_verified: None,
        max_samples: None,
        max_new_tokens: 24,
        seed: 7,
        out: out.to_path_buf(),
        rows_per_shard: 5,
        num_shards: 1,
        shard_index: 0,
        force: false,
        repair: false,
        flush_every_secs: 0,
        progress: false,
    }
}

/// The rows of a directory with `created_at` blanked, sorted by (id, sample index).
pub fn comparable_rows(dir: &Path) -> Vec<TraceRow> {
    let mut rows = read_trace_rows(dir).unwrap();
    normalise(&mut rows);
    rows
}

/// Blanks `created_at` (it differs between runs) and sorts by key.
pub fn normalise(rows: &mut [TraceRow]) {
    for row in rows.iter_mut() {
        row.created_at.clear();
    }
    rows.sort_by(|a, b| (&a.id, a.sample_index).cmp(&(&b.id, b.sample_index)));
}

/// Every file name under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(all_files(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// One request the fake server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Lower-cased header names to values.
    pub headers: HashMap<String, String>,
    /// The JSON body.
    pub body: serde_json::Value,
    /// When it arrived.
    pub at: Instant,
}

/// What the fake server does with a request.
pub enum Reply {
    /// Answer with this status and body.
    Respond(u16, String),
    /// Say nothing for this long, then hang up.
    Stall(Duration),
    /// Wait this long, then answer 200 with this body.
    Slow(Duration, String),
    /// Wait this long, then close the connection without answering (a server that died with
    /// the request in flight).
    HangUp(Duration),
    /// Answer with this status, these extra headers and this body.
    WithHeaders(u16, Vec<(String, String)>, String),
    /// Answer 200 with a server-sent-event stream: each chunk is written after its delay.
    Events(Vec<(Duration, String)>),
}

/// A scripted OpenAI-compatible server on 127.0.0.1; `script(n, request)` decides the reply
/// to the n-th request (0-based).
pub struct FakeServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Requests received, in arrival order.
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl FakeServer {
    /// Starts the server in a background thread (one thread per connection).
    pub fn start(script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(script);
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (script, log) = (script.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &*script, &log));
            }
        });
        FakeServer { url, received }
    }

    /// Number of requests received so far.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

fn serve(
    stream: TcpStream,
    script: &(dyn Fn(usize, &Received) -> Reply + Send + Sync),
    log: &Mutex<Vec<Received>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_lowercase(), value.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Received {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        at: Instant::now(),
    };
    let index = {
        let mut log = log.lock().unwrap();
        log.push(request.clone());
        log.len() - 1
    };
    let mut stream = stream;
    let reply = match script(index, &request) {
        Reply::Slow(duration, body) => {
            std::thread::sleep(duration);
            Reply::Respond(200, body)
        }
        other => other,
    };
    match reply {
        Reply::Slow(..) => {}
        Reply::Respond(status, body) => respond(&mut stream, status, &[], &body),
        Reply::WithHeaders(status, headers, body) => respond(&mut stream, status, &headers, &body),
        Reply::Stall(duration) => std::thread::sleep(duration),
        Reply::HangUp(duration) => {
            std::thread::sleep(duration);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        Reply::Events(chunks) => {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            for (delay, chunk) in chunks {
                std::thread::sleep(delay);
                if stream.write_all(chunk.as_bytes()).is_err() || stream.flush().is_err() {
                    return;
                }
            }
        }
    }
}

fn respond(stream: &mut TcpStream, status: u16, headers: &[(String, String)], body: &str) {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let response = format!(
        "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// A chat completion body with `n` choices (choice i says `answer {i}` after `thought {i}` in
/// `reasoning_content`) and the given usage.
pub fn chat_body(n: usize, prompt_tokens: u32, completion_tokens: u32) -> String {
    let choices: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "index": i,
                "message": {"role": "assistant", "content": format!("answer {i} \\boxed{{{i}}}"),
                            "reasoning_content": format!("thought {i}")},
                "finish_reason": if i == 0 { "stop" } else { "length" },
            })
        })
        .collect();
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "r1",
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })
    .to_string()
}

/// A chat completion body with one choice (index 0) whose answer names `seed`, as a server
/// that ignores `n` sends whatever `n` asked.
pub fn one_choice_naming_seed(seed: u64) -> String {
    serde_json::json!({
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": format!("seed {seed} \\boxed{{1}}"),
                        "reasoning_content": "thought"},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    })
    .to_string()
}
