//! Peak extra memory and time of the fused selective log-softmax (forward + backward through
//! `sft_loss`) against `candle_nn::loss::cross_entropy` on the full `h Wᵀ` logits, on the CPU.
//!
//! Each (method, N) case runs in a fresh child process (this binary re-executed with
//! `--case <method> <n>`), which reports the rise of its peak RSS (`VmHWM` in
//! `/proc/self/status`) above its RSS once the inputs exist, and the wall time of one
//! forward + backward.

use candle_core::{Device, Tensor, Var};
use distill::ops::{sft_loss, DEFAULT_VOCAB_CHUNK};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::process::Command;
use std::time::Instant;

const VOCAB: usize = 151_936;
const HIDDEN: usize = 128;
const ROWS: [usize; 3] = [512, 2048, 4096];
/// Cases whose estimated peak exceeds this many bytes are skipped.
const MEMORY_LIMIT: f64 = 16e9;

#[derive(Clone, Copy)]
enum Method {
    Fused,
    CrossEntropy,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Fused => "fused",
            Method::CrossEntropy => "cross_entropy",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Method::Fused, Method::CrossEntropy]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// Rough estimate of cross-entropy's peak extra bytes (it keeps ~10 `N × V` f32 buffers).
fn cross_entropy_estimated_peak(n: usize) -> f64 {
    4.0 * 10.0 * (n * VOCAB) as f64
}

/// Reads a `kB` field of `/proc/self/status`.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Runs one case in this process; prints `RESULT <peak extra kB> <seconds>`.
fn run_case(method: Method, n: usize) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
    let mut uniform =
        |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-0.2f32..0.2)).collect() };
    let h = Var::from_tensor(&Tensor::from_vec(uniform(n * HIDDEN), (n, HIDDEN), &dev)?)?;
    let w = Var::from_tensor(&Tensor::from_vec(
        uniform(VOCAB * HIDDEN),
        (VOCAB, HIDDEN),
        &dev,
    )?)?;
    let targets: Vec<u32> = (0..n).map(|i| ((i * 997) % VOCAB) as u32).collect();
    let targets = Tensor::from_vec(targets, n, &dev)?;
    let baseline = status_kb("VmRSS:");
    let start = Instant::now();
    let loss = match method {
        Method::Fused => sft_loss(h.as_tensor(), w.as_tensor(), &targets, DEFAULT_VOCAB_CHUNK)?,
        Method::CrossEntropy => {
            let logits = h.as_tensor().matmul(&w.as_tensor().t()?)?;
            candle_nn::loss::cross_entropy(&logits, &targets)?
        }
    };
    let grads = loss.backward()?;
    let elapsed = start.elapsed().as_secs_f64();
    let grad_norm = grads
        .get(w.as_tensor())
        .expect("grad of lm_head")
        .sqr()?
        .sum_all()?
        .to_scalar::<f32>()?;
    let peak = status_kb("VmHWM:");
    println!(
        "RESULT {} {elapsed} {} {grad_norm}",
        peak.saturating_sub(baseline),
        loss.to_scalar::<f32>()?
    );
    Ok(())
}

struct Measured {
    peak_extra_mb: f64,
    seconds: f64,
    loss: f64,
    lm_head_grad_sq_norm: f64,
}

fn spawn_case(method: Method, n: usize) -> Option<Measured> {
    let exe = std::env::current_exe().expect("current exe");
    let output = Command::new(exe)
        .args(["--case", method.name(), &n.to_string()])
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("RESULT "));
    let Some(line) = line else {
        eprintln!(
            "{} N={n} failed: {}{}",
            method.name(),
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    };
    let fields: Vec<f64> = line[7..]
        .split_whitespace()
        .map(|f| f.parse().expect("numeric field"))
        .collect();
    Some(Measured {
        peak_extra_mb: fields[0] / 1024.0,
        seconds: fields[1],
        loss: fields[2],
        lm_head_grad_sq_norm: fields[3],
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--case") {
        let method = Method::parse(&args[pos + 1]).expect("method name");
        let n = args[pos + 2].parse().expect("row count");
        run_case(method, n).expect("case failed");
        return;
    }
    println!(
        "selective log-softmax, V = {VOCAB}, d = {HIDDEN}, f32, chunk = {DEFAULT_VOCAB_CHUNK}, {} rayon threads",
        rayon::current_num_threads()
    );
    println!(
        "{:>6} | {:>9} {:>8} {:>9} {:>11} | {:>9} {:>8} {:>9} {:>11} | {:>9} {:>10}",
        "N",
        "fused MB",
        "fused s",
        "loss",
        "|dW|^2",
        "ce MB",
        "ce s",
        "loss",
        "|dW|^2",
        "mem ratio",
        "time ratio"
    );
    println!("(MB = peak RSS rise over the RSS with inputs allocated; s = one forward + backward)");
    for n in ROWS {
        let fused = spawn_case(Method::Fused, n);
        let ce = if cross_entropy_estimated_peak(n) > MEMORY_LIMIT {
            println!(
                "  (N={n}: cross_entropy skipped, estimated peak {:.1} GB > {:.0} GB)",
                cross_entropy_estimated_peak(n) / 1e9,
                MEMORY_LIMIT / 1e9
            );
            None
        } else {
            spawn_case(Method::CrossEntropy, n)
        };
        let cell = |m: &Option<Measured>| match m {
            Some(m) => format!(
                "{:>9.1} {:>8.3} {:>9.6} {:>11.4e}",
                m.peak_extra_mb, m.seconds, m.loss, m.lm_head_grad_sq_norm
            ),
            None => format!("{:>9} {:>8} {:>9} {:>11}", "-", "-", "-", "-"),
        };
        let ratios = match (&fused, &ce) {
            (Some(f), Some(c)) => format!(
                "{:>10.3} {:>10.3}",
                f.peak_extra_mb / c.peak_extra_mb,
                f.seconds / c.seconds
            ),
            _ => format!("{:>10} {:>10}", "-", "-"),
        };
        println!("{n:>6} | {} | {} | {ratios}", cell(&fused), cell(&ce));
    }
}
