//! Programs per second through the bubblewrap sandbox vs the same programs in a bare `python3`
//! subprocess (`--sandbox none`: no namespaces, no user switch, only `setrlimit`), both with the
//! concurrency limit at the number of cores: the sandbox's overhead ratio. The programs are the
//! 427 sanitized-MBPP reference solutions, each run with its tests by distill's harness. The two
//! kinds alternate for `ROUNDS` rounds and the best rate of each counts (the machine is shared).
//!
//! Run: `cargo bench --profile dev --bench sandbox_throughput` (reads `../shared/data/mbpp`).

use std::time::Instant;

use distill::data::prompt_source::load_prompts;
use distill::sandbox::{Limits, Sandbox, SandboxKind};
use distill::verify::code::{run_tests, CodeVerdict, TestSuite};
use rayon::prelude::*;

/// Rounds of (bare, sandboxed) runs.
const ROUNDS: usize = 3;

fn main() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/mbpp/sanitized-mbpp.json"
    );
    let jobs: Vec<(TestSuite, String)> = load_prompts(path)
        .expect("sanitized MBPP")
        .into_iter()
        .map(|p| {
            let code = p.metadata["reference"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (TestSuite::parse(&p.answer).expect("a test suite"), code)
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kinds = [SandboxKind::None, SandboxKind::Bwrap];
    let sandboxes: Vec<Sandbox> = kinds
        .iter()
        .map(|&kind| Sandbox::new(kind, Limits::default(), Some(cores)).expect("sandbox"))
        .collect();
    let mut best = [0.0f64; 2];
    for _ in 0..ROUNDS {
        for (index, sandbox) in sandboxes.iter().enumerate() {
            let started = Instant::now();
            let passed = jobs
                .par_iter()
                .filter(|(suite, code)| {
                    run_tests(sandbox, suite, code).verdict == CodeVerdict::Passed
                })
                .count();
            let seconds = started.elapsed().as_secs_f64();
            let rate = jobs.len() as f64 / seconds;
            println!(
                "{:?}: {} programs ({passed} passed) in {seconds:.1} s = {rate:.1} programs/s ({cores} cores)",
                sandbox.kind(),
                jobs.len()
            );
            best[index] = best[index].max(rate);
        }
    }
    println!(
        "best: bare {:.1} programs/s, bwrap {:.1} programs/s; sandbox overhead {:.2}x the time of a bare python3 subprocess",
        best[0],
        best[1],
        best[0] / best[1]
    );
}
