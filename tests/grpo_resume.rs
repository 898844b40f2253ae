//! GRPO checkpoints: a `distill grpo` run killed with SIGKILL and resumed with `--resume` ends with
//! the weights, reward curve and compute accounting of an uninterrupted run, bit for bit (CPU), with
//! μ = 2 updates per rollout batch and the KL term on.

mod common;

use std::path::Path;
use std::process::Command;

fn grpo_command(policy: &str, out: &Path, resume: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distill"));
    command.args([
        "grpo",
        "--policy",
        policy,
        "--prompts",
        "synth:arith:difficulty=1:count=64:seed=3",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "12",
        "--save-every",
        "3",
        "--group-size",
        "4",
        "--prompts-per-step",
        "2",
        "--max-new-tokens",
        "16",
        "--mu",
        "2",
        "--beta",
        "0.05",
        "--lr",
        "1e-3",
    ]);
    if resume {
        command.arg("--resume");
    }
    command
}

#[test]
fn kill_9_then_resume_gives_the_uninterrupted_runs_weights_and_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = common::synthetic_student(tmp.path(), 8);

    let straight = tmp.path().join("straight");
    let status = grpo_command(&policy, &straight, false).status().unwrap();
    assert!(status.success());

    let killed = tmp.path().join("killed");
    let mut child = grpo_command(&policy, &killed, false).spawn().unwrap();
    let marker = killed.join("checkpoints").join("step-000006");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !marker.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(marker.exists(), "the run reached its step-6 checkpoint");
    assert!(
        !killed.join("final").exists(),
        "the run was killed before it finished"
    );
    // The first six steps' lines carry their wall-clock timings: a resumed run keeps them as
    // they are, a run that silently started over would rewrite them.
    let first_six = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .take(6)
            .map(str::to_string)
            .collect()
    };
    let before_resume = first_six(&killed);
    assert_eq!(before_resume.len(), 6);
    let status = grpo_command(&policy, &killed, true).status().unwrap();
    assert!(status.success());
    assert_eq!(
        first_six(&killed),
        before_resume,
        "the resumed run continued after step 6"
    );

    let a = std::fs::read(straight.join("final/model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("final/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from an uninterrupted run's");
    let curve = |dir: &Path| -> Vec<String> {
        distill::train::metrics::MetricsLog::read(&dir.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|v| {
                format!(
                    "{} {} {} {} {}",
                    v["step"], v["reward"], v["loss"], v["kl"], v["rollout_tokens"]
                )
            })
            .collect()
    };
    assert_eq!(curve(&straight), curve(&killed));
    let summary = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
    };
    let (s, k) = (summary(&straight), summary(&killed));
    for field in [
        "steps",
        "rollout_tokens",
        "reference_tokens",
        "update_tokens",
        "flops",
    ] {
        assert_eq!(s[field], k[field], "summary field {field}");
    }
}
