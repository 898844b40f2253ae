//! Throughput of extract + verify on traces built from MATH-500, plus an
//! optional dump of (gold, pred) pairs for the Python `math-verify`
//! agreement baseline (`benches/baselines/math_verify_agreement.py`).
//!
//! Run: `cargo bench --bench verify_throughput [-- --dump PATH]`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use distill::verify::{extract_answer, verify};

#[path = "../tests/support/pairs.rs"]
mod pairs;

const MATH500: &str = "../shared/data/math500/test.jsonl";
const GSM8K: &str = "../shared/data/gsm8k/test.jsonl";
const MIN_BENCH_TIME: Duration = Duration::from_secs(2);

/// A (gold, trace, label) case.
struct Case {
    gold: String,
    trace: String,
    label: bool,
}

fn read_jsonl(path: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn field(v: &serde_json::Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn r1_trace(reasoning: &str, answer: &str) -> String {
    format!("<think>\n{reasoning}\n</think>\nThe final answer is $\\boxed{{{answer}}}$.")
}

/// Value-preserving rewrites of an answer (label true) and simple wrong
/// variants (label false), built mechanically from the text.
fn variants(answer: &str) -> Vec<(String, bool)> {
    let mut out = vec![(answer.to_string(), true)];
    if answer.contains("\\frac") {
        out.push((answer.replace("\\frac", "\\dfrac"), true));
    }
    let compact: String = answer.chars().filter(|c| !c.is_whitespace()).collect();
    if compact != answer {
        out.push((compact, true));
    }
    if let Ok(n) = answer.parse::<i64>() {
        out.push(((n + 1).to_string(), false));
        out.push(((-n - 1).to_string(), false));
        if n >= 1000 {
            out.push((with_thousands(n), true));
        }
        out.push((format!("x = {n}"), true));
        out.push((format!("x > {n}"), false));
    }
    if let Some((num, den)) = simple_fraction(answer) {
        out.push((format!("{num}/{den}"), true));
        out.push((format!("\\frac{{{den}}}{{{num}}}"), num == den));
    }
    out
}

fn with_thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `\frac{a}{b}` with integer a, b.
fn simple_fraction(answer: &str) -> Option<(i64, i64)> {
    let rest = answer.strip_prefix("\\frac{")?;
    let (num, rest) = rest.split_once("}{")?;
    let den = rest.strip_suffix('}')?;
    Some((num.parse().ok()?, den.parse().ok()?))
}

fn math500_cases() -> Vec<Case> {
    let rows = read_jsonl(MATH500);
    let mut cases = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let (gold, solution) = (field(row, "answer"), field(row, "solution"));
        for (pred, label) in variants(&gold) {
            cases.push(Case {
                gold: gold.clone(),
                trace: r1_trace(&solution, &pred),
                label,
            });
        }
        // Neighbouring answers are assumed different; one MATH-500 pair
        // (`5` / `x=5`) is in fact equal and shows up as the one disagreement.
        let other = field(&rows[(i + 1) % rows.len()], "answer");
        if other != gold {
            cases.push(Case {
                gold: gold.clone(),
                trace: r1_trace(&solution, &other),
                label: false,
            });
        }
    }
    cases
}

fn gsm8k_cases() -> Vec<Case> {
    read_jsonl(GSM8K)
        .iter()
        .map(|row| {
            let answer = field(row, "answer");
            let gold = answer
                .rsplit("####")
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            Case {
                gold,
                trace: answer,
                label: true,
            }
        })
        .collect()
}

/// Runs extract + verify over `cases` repeatedly for at least
/// [`MIN_BENCH_TIME`]; returns (verdicts of the first pass, traces/s).
fn measure(cases: &[Case]) -> (Vec<(String, bool)>, f64) {
    let run = || -> Vec<(String, bool)> {
        cases
            .iter()
            .map(|c| {
                let pred = extract_answer(&c.trace)
                    .map(|e| e.answer)
                    .unwrap_or_default();
                let ok = verify(&c.gold, &pred);
                (pred, ok)
            })
            .collect()
    };
    let first = run();
    let start = Instant::now();
    let mut passes = 0u32;
    while start.elapsed() < MIN_BENCH_TIME {
        std::hint::black_box(run());
        passes += 1;
    }
    let per_sec = f64::from(passes) * cases.len() as f64 / start.elapsed().as_secs_f64();
    (first, per_sec)
}

fn report(name: &str, cases: &[Case]) -> (Vec<(String, bool)>, f64) {
    let (verdicts, per_sec) = measure(cases);
    let agree = cases
        .iter()
        .zip(&verdicts)
        .filter(|(c, (_, v))| c.label == *v)
        .count();
    println!(
        "{name}: {} traces, label agreement {agree}/{} ({:.2}%), {per_sec:.0} verified traces/s",
        cases.len(),
        cases.len(),
        100.0 * agree as f64 / cases.len() as f64
    );
    for (c, (pred, v)) in cases
        .iter()
        .zip(&verdicts)
        .filter(|(c, (_, v))| c.label != *v)
        .take(10)
    {
        println!(
            "  disagreement: gold {:?} pred {pred:?} label {} got {v}",
            c.gold, c.label
        );
    }
    (verdicts, per_sec)
}

/// Writes the MATH-500 pairs (with the extracted prediction) and the
/// labelled table of `tests/support/pairs.rs` as JSONL, plus a sidecar
/// `PATH.meta.json` with the Rust throughput.
fn dump(
    path: &str,
    cases: &[Case],
    verdicts: &[(String, bool)],
    per_sec: f64,
) -> std::io::Result<()> {
    let mut out = String::new();
    for (c, (pred, v)) in cases.iter().zip(verdicts) {
        let line = serde_json::json!({"set": "math500", "gold": c.gold, "pred": pred, "label": c.label, "rust": v});
        let _ = writeln!(out, "{line}");
    }
    for (gold, pred, label) in pairs::PAIRS {
        let line = serde_json::json!({"set": "table", "gold": gold, "pred": pred, "label": label, "rust": verify(gold, pred)});
        let _ = writeln!(out, "{line}");
    }
    std::fs::write(path, out)?;
    let meta = serde_json::json!({"rust_pairs_per_sec": per_sec, "pairs": cases.len()});
    std::fs::write(format!("{path}.meta.json"), meta.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dump_path = args
        .iter()
        .position(|a| a == "--dump")
        .and_then(|i| args.get(i + 1));
    let math = math500_cases();
    let (verdicts, per_sec) = report("MATH-500 R1-style traces", &math);
    report("GSM8K test traces", &gsm8k_cases());
    if let Some(path) = dump_path {
        match dump(path, &math, &verdicts, per_sec) {
            Ok(()) => println!(
                "dumped {} + {} pairs to {path}",
                math.len(),
                pairs::PAIRS.len()
            ),
            Err(e) => eprintln!("cannot write {path}: {e}"),
        }
    }
}
