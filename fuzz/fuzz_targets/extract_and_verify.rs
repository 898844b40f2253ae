//! cargo-fuzz target: arbitrary bytes through extract + verify + readability.
//! Splits the input at the first NUL into (gold, trace). Needs nightly:
//! `cargo +nightly fuzz run extract_and_verify`.
#![no_main]

use distill::verify::{check_readability, extract_answer, verify, ReadabilityConfig, TraceInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (gold, trace) = text.split_once('\0').unwrap_or((&text, &text));
    let pred = extract_answer(trace).map(|e| e.answer).unwrap_or_default();
    let _ = verify(gold, &pred);
    let _ = verify(&pred, gold);
    let input = TraceInput {
        prompt: gold,
        generation: trace,
        finish_reason: "stop",
        completion_tokens: 64,
    };
    let _ = check_readability(&input, &ReadabilityConfig::default());
});
