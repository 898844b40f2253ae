//! [`CodeVerdict`]: what happened to one program, decided from the harness's events and the
//! sandbox's outcome.

use serde_json::Value;

use crate::sandbox::RunOutcome;

/// The verdict on one program. Its [`name`](CodeVerdict::name) is the filter's rejection reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CodeVerdict {
    /// Every test passed.
    Passed,
    /// The program ran, and some test's assertion failed or output differed.
    TestsFailed,
    /// The program (or a test calling it) raised, or the process died.
    RuntimeError,
    /// The wall clock or the CPU limit ran out.
    Timeout,
    /// An allocation failed under the address-space limit.
    MemoryLimit,
    /// No program could be extracted from the completion.
    NoCode,
    /// The sandbox or the interpreter could not start the harness.
    SandboxError,
}

impl CodeVerdict {
    /// Every verdict, in report order.
    pub const ALL: [CodeVerdict; 7] = [
        CodeVerdict::Passed,
        CodeVerdict::TestsFailed,
        CodeVerdict::RuntimeError,
        CodeVerdict::Timeout,
        CodeVerdict::MemoryLimit,
        CodeVerdict::NoCode,
        CodeVerdict::SandboxError,
    ];

    /// The verdict's name (`passed`, `tests_failed`, `runtime_error`, `timeout`,
    /// `memory_limit`, `no_code`, `sandbox_error`).
    pub fn name(self) -> &'static str {
        match self {
            CodeVerdict::Passed => "passed",
            CodeVerdict::TestsFailed => "tests_failed",
            CodeVerdict::RuntimeError => "runtime_error",
            CodeVerdict::Timeout => "timeout",
            CodeVerdict::MemoryLimit => "memory_limit",
            CodeVerdict::NoCode => "no_code",
            CodeVerdict::SandboxError => "sandbox_error",
        }
    }
}

/// Whether each of the `total` tests passed, and the verdict, of one run.
pub fn decide(outcome: &RunOutcome, total: usize) -> (Vec<bool>, CodeVerdict) {
    let events: Vec<Value> = String::from_utf8_lossy(&outcome.report)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let has = |name: &str| events.iter().any(|e| e["event"] == name);
    let mut passed = vec![false; total];
    let (mut memory, mut error) = (false, false);
    for event in &events {
        if event["event"] == "test" {
            if let Some(slot) = event["index"]
                .as_u64()
                .and_then(|i| passed.get_mut(i as usize))
            {
                *slot = event["ok"] == true;
            }
        }
        match event["kind"].as_str() {
            Some("memory") => memory = true,
            Some("error") => error = true,
            _ => {}
        }
    }
    let outcomes = passed;
    let passed = outcomes.iter().filter(|ok| **ok).count();
    let verdict = if !has("start") && !outcome.timed_out {
        CodeVerdict::SandboxError
    } else if has("done") && passed == total {
        CodeVerdict::Passed
    } else if outcome.timed_out || has("cpu_limit") {
        CodeVerdict::Timeout
    } else if memory {
        CodeVerdict::MemoryLimit
    } else if error || has("load_error") || !has("done") {
        CodeVerdict::RuntimeError
    } else {
        CodeVerdict::TestsFailed
    };
    (outcomes, verdict)
}
