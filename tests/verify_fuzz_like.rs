//! A dependency-free fuzz-like test: 20k random byte / LaTeX-ish strings
//! through extract + verify + readability; no panic, bounded time.

use std::time::{Duration, Instant};

use distill::verify::{check_readability, extract_answer, verify, ReadabilityConfig, TraceInput};

const CASES: usize = 20_000;
const PER_CASE_LIMIT: Duration = Duration::from_millis(500);

const PIECES: &[&str] = &[
    "\\frac",
    "\\dfrac",
    "\\sqrt",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "\\{",
    "\\}",
    "^",
    "_",
    "1",
    "2",
    "9",
    "0.5",
    "x",
    "y",
    "e",
    "i",
    "\\pi",
    "\\infty",
    "+",
    "-",
    "*",
    "/",
    ",",
    "=",
    "<",
    "\\le",
    "\\in",
    "\\cup",
    "\\pm",
    "\\cdot",
    "\\times",
    "\\sin",
    "\\log",
    "\\ln",
    "!",
    "|",
    "\\text{",
    "\\boxed{",
    "\\boxed ",
    "</think>",
    "<think>",
    "####",
    "the answer is ",
    "$",
    "\\%",
    "\\circ",
    "\\left(",
    "\\right)",
    "\\begin{pmatrix}",
    "&",
    "\\\\",
    "\\end{pmatrix}",
    " ",
    "中",
    "é",
    "\\,",
    "\\!",
    "10^{",
    "e5",
    ".",
    "\\",
    "<answer>",
    "</answer>",
    "\n\n",
];

/// SplitMix64: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_string(rng: &mut Rng) -> String {
    let len = rng.below(40);
    if rng.below(4) == 0 {
        let bytes: Vec<u8> = (0..len * 3).map(|_| rng.next() as u8).collect();
        return String::from_utf8_lossy(&bytes).into_owned();
    }
    (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect()
}

#[test]
fn random_inputs_never_panic_and_finish_quickly() {
    let mut rng = Rng(0x5eed);
    let config = ReadabilityConfig::default();
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut matches = 0usize;
    for _ in 0..CASES {
        let (a, b) = (random_string(&mut rng), random_string(&mut rng));
        let case_start = Instant::now();
        let pred = extract_answer(&b).map(|e| e.answer).unwrap_or_default();
        matches += usize::from(verify(&a, &pred));
        let trace = TraceInput {
            prompt: &a,
            generation: &b,
            finish_reason: "stop",
            completion_tokens: Some(100),
        };
        let _ = check_readability(&trace, &config);
        let took = case_start.elapsed();
        slowest = slowest.max(took);
        assert!(took < PER_CASE_LIMIT, "case took {took:?}: {a:?} / {b:?}");
    }
    println!(
        "{CASES} random cases in {:.2?} (slowest {slowest:?}, {matches} matches)",
        start.elapsed()
    );
}

#[test]
fn random_expressions_match_rewrites_and_not_shifts() {
    let mut rng = Rng(42);
    let atoms = [
        "1",
        "2",
        "x",
        "y",
        "\\pi",
        "\\sqrt{2}",
        "\\frac{1}{3}",
        "(x+1)",
    ];
    let ops = ["+", "-", "\\cdot ", "/", "^"];
    for _ in 0..2_000 {
        let mut expr = atoms[rng.below(atoms.len())].to_string();
        for _ in 0..rng.below(5) {
            expr = format!(
                "{expr}{}{}",
                ops[rng.below(ops.len())],
                atoms[rng.below(atoms.len())]
            );
        }
        // Same value, different text: forces parsing and evaluation.
        let rewritten = format!("1 \\cdot \\left( {expr} \\right) + 0");
        assert!(verify(&expr, &rewritten), "{expr}");
        // A 0.1% change must be seen (unless the expression is zero).
        let scaled = format!("1.001 \\left( {expr} \\right)");
        assert!(verify(&expr, "0") || !verify(&expr, &scaled), "{expr}");
    }
}
