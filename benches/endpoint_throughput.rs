//! Can the endpoint teacher keep a big streaming server saturated, and what does it cost the
//! client? A local OpenAI-compatible server (this binary re-run as a child process, so its CPU
//! is not counted) serves at most `slots` streams at once, each emitting one token every
//! `1 / rate` seconds for `tokens` tokens (server limit: slots × rate tokens/s). The client is
//! `OpenAiTeacher` with `--stream` and concurrency = slots, given waves × slots prompts. Reported:
//! saturation (tokens received ÷ (server limit × wall time)), client CPU per million tokens
//! (user + system time of this process), and the client's peak RSS.
//!
//! `cargo bench --bench endpoint_throughput` (optional args: slots, default 2000; tokens per
//! second per stream, default 10; tokens per request, default 100; waves, default 3).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use distill::model::Message;
use distill::teacher::endpoint::{EndpointConfig, Transfer};
use distill::teacher::openai::{ApiKind, OpenAiConfig, OpenAiTeacher};
use distill::teacher::{PromptJob, SamplingParams, Teacher};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    if args.first().map(String::as_str) == Some("serve") {
        let number = |i: usize| args[i].parse::<u64>();
        return serve(number(1)? as usize, number(2)?, number(3)?);
    }
    let number = |i: usize, default: u64| args.get(i).map_or(Ok(default), |a| a.parse());
    let slots = number(0, 2000)? as usize;
    let rate = number(1, 10)?;
    let tokens = number(2, 100)?;
    let waves = number(3, 3)? as usize;

    let mut server = Command::new(std::env::current_exe()?)
        .args([
            "serve",
            &slots.to_string(),
            &rate.to_string(),
            &tokens.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut port = String::new();
    BufReader::new(server.stdout.take().expect("piped")).read_line(&mut port)?;
    let url = format!("http://127.0.0.1:{}", port.trim());

    let mut teacher = OpenAiTeacher::new(&OpenAiConfig {
        endpoints: vec![EndpointConfig {
            url,
            model: "bench".into(),
            api_key_env: None,
            concurrency: slots,
            limits: Default::default(),
            prices: None,
        }],
        api: ApiKind::Chat,
        transfer: Transfer::Stream(Duration::from_secs(30)),
        retry: Default::default(),
    })?;
    let jobs: Vec<PromptJob> = (0..waves * slots)
        .map(|i| PromptJob {
            messages: vec![Message::user(format!("problem {i}"))],
            prompt: format!("problem {i}"),
            seed: i as u64,
        })
        .collect();
    let params = SamplingParams {
        temperature: 0.6,
        top_p: 0.95,
        top_k: 0,
        n: 1,
        max_new_tokens: tokens as usize,
    };
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut received = 0u64;
    let mut samples = 0usize;
    teacher.sample_streaming(&jobs, &params, &mut |done| {
        samples += done.len();
        received += done
            .iter()
            .map(|s| u64::from(s.completion_tokens.unwrap_or(0)))
            .sum::<u64>();
        true
    })?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds();
    let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let cpu = user + system;
    server.kill()?;
    server.wait()?;

    let limit = slots as f64 * rate as f64;
    let throughput = received as f64 / wall;
    println!(
        "server: {slots} concurrent streams × {rate} tokens/s = {limit:.0} tokens/s; {} requests of {tokens} tokens",
        jobs.len()
    );
    println!(
        "client: {samples} samples, {received} tokens in {wall:.2} s = {throughput:.0} tokens/s; saturation {:.3}",
        throughput / limit
    );
    println!(
        "client CPU: {cpu:.2} s ({user:.2} user, {system:.2} system) = {:.2} CPU-seconds per million tokens; peak RSS {:.0} MiB",
        cpu / received.max(1) as f64 * 1e6,
        distill::bench::peak_rss_mib()
    );
    Ok(())
}

/// User and system CPU time of this process, in seconds.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: `getrusage` only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

/// The server: prints its port, then streams every request in its own thread, at most `slots`
/// at once (a request waits for a free slot, as a saturated inference server queues it).
fn serve(slots: usize, rate: u64, tokens: u64) -> anyhow::Result<()> {
    let listener = listen_with_backlog(4096)?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let free = Arc::new((Mutex::new(slots), Condvar::new()));
    for stream in listener.incoming().flatten() {
        let free = free.clone();
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                let _ = stream_one(stream, &free, rate, tokens);
            })?;
    }
    Ok(())
}

/// A listener on 127.0.0.1 with room for `backlog` pending connections. The standard library
/// asks for 128: when thousands of streams end together and their next requests connect at
/// once, the kernel drops the SYNs beyond that, and the clients retry only after a second —
/// an artefact of the test server, not of the client being measured.
fn listen_with_backlog(backlog: i32) -> std::io::Result<TcpListener> {
    use std::os::fd::FromRawFd;
    let check = |result: libc::c_int| {
        if result < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(result)
        }
    };
    // SAFETY: plain socket calls on a descriptor this function owns; `addr` outlives `bind`.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        check(libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            length,
        ))?;
        check(libc::listen(fd, backlog))?;
        Ok(TcpListener::from_raw_fd(fd))
    }
}

fn stream_one(
    stream: TcpStream,
    free: &(Mutex<usize>, Condvar),
    rate: u64,
    tokens: u64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    {
        let (lock, ready) = free;
        let mut slots = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *slots == 0 {
            slots = ready.wait(slots).unwrap_or_else(|e| e.into_inner());
        }
        *slots -= 1;
    }
    let result = emit(stream, rate, tokens);
    let (lock, ready) = free;
    *lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    ready.notify_one();
    result
}

/// Streams `tokens` one-word deltas, one every `1 / rate` s on a fixed schedule, then the usage.
fn emit(mut stream: TcpStream, rate: u64, tokens: u64) -> std::io::Result<()> {
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
    )?;
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for token in 0..tokens {
        let due = start + interval * (token as u32 + 1);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let finish = if token + 1 == tokens {
            "\"length\""
        } else {
            "null"
        };
        let chunk = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{token} \"}},\"finish_reason\":{finish}}}]}}\n\n"
        );
        stream.write_all(chunk.as_bytes())?;
    }
    let usage = format!(
        "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":8,\"completion_tokens\":{tokens}}}}}\n\ndata: [DONE]\n\n"
    );
    stream.write_all(usage.as_bytes())
}
