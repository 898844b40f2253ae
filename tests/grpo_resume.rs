//! GRPO checkpoints: a `distill grpo` run killed with SIGKILL and resumed with `--resume` ends with
//! the weights, reward curve and compute accounting of an uninterrupted run, bit for bit (CPU), with
//! μ = 2 updates per rollout batch, the KL term on and a policy that learns from its first step (a
//! length reward that spreads in every group, rollouts at temperature 0.9): the optimiser's moments,
//! step count (bias correction) and learning-rate schedule must all resume where they were.

mod common;

use std::path::Path;
use std::process::Command;

fn grpo_command(policy: &str, config: &Path, out: &Path, resume: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distill"));
    command.args([
        "grpo",
        "--config",
        config.to_str().unwrap(),
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
    let policy = common::early_stopping_student(tmp.path(), 8);
    // Shorter completions earn more; a cosine schedule with warmup makes the learning rate depend
    // on the optimiser step too.
    let config = tmp.path().join("grpo.toml");
    std::fs::write(
        &config,
        "temperature = 0.9\nwarmup_steps = 4\ndecay = \"cosine\"\n\
         [rewards]\naccuracy = 0.0\nlength_penalty = 1.0\n",
    )
    .unwrap();

    let straight = tmp.path().join("straight");
    let status = grpo_command(&policy, &config, &straight, false)
        .status()
        .unwrap();
    assert!(status.success());
    let records =
        distill::train::metrics::MetricsLog::read(&straight.join("metrics.jsonl")).unwrap();
    let spread_steps = records
        .iter()
        .filter(|r| r["zero_std_group_fraction"].as_f64().unwrap() < 1.0)
        .count();
    assert_eq!(
        spread_steps,
        records.len(),
        "every step has groups with reward spread"
    );
    let weights = |dir: &Path| {
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
    };
    let (before, after) = (
        weights(Path::new(&policy)),
        weights(&straight.join("final")),
    );
    let moved = before
        .iter()
        .filter(|(name, t)| common::max_abs_diff(t, &after[name.as_str()]) > 1e-4)
        .count();
    assert_eq!(moved, before.len(), "every weight moved");

    let killed = tmp.path().join("killed");
    let mut child = grpo_command(&policy, &config, &killed, false)
        .spawn()
        .unwrap();
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
    let status = grpo_command(&policy, &config, &killed, true)
        .status()
        .unwrap();
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
