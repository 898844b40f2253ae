//! `engine = "trl"` for GRPO: distill renders the prompts as its own GRPO would, writes the launch
//! files into `OUT/trl/` (the reward function calls back into `distill rewards`), runs them, and
//! turns TRL's outputs into the run layout `distill eval` and `distill compare` read (`final/`,
//! `metrics.jsonl`, `reward.svg`, `summary.json` with the token counts the compute comparison uses).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::launch::{accelerate_command, run_launch, write_launch};
use super::outputs::{
    absolute, complete_model_dir, has_checkpoint, hf_model_dir, read_trainer_state, step_entries,
    write_metrics,
};
use super::python::{detect, interpreter};
use super::rewards_server::{PromptRow, RewardSettings};
use super::settings::{grpo_settings, ScriptPaths};
use crate::data::sources::Problem;
use crate::model::save::write_atomic;
use crate::model::{ModelConfig, Tokenizer};
use crate::train::compute::estimated_flops;
use crate::train::grpo::{render_prompt_text, GrpoConfig, GrpoSummary};
use crate::train::metrics::plot_metrics;

/// The training script the launch runs.
const SCRIPT: &str = include_str!("grpo_train.py");

/// TRL's GRPO log keys → distill's GRPO metrics keys.
const METRIC_NAMES: [(&str, &str); 12] = [
    ("reward", "reward"),
    ("reward_accuracy", "reward_accuracy"),
    ("reward_accuracy", "accuracy"),
    ("reward_std", "reward_std"),
    ("loss", "loss"),
    ("learning_rate", "lr"),
    ("grad_norm", "grad_norm"),
    ("kl", "kl"),
    ("entropy", "entropy"),
    ("clip_ratio/region_mean", "clip_fraction"),
    ("completions/mean_length", "completion_length_mean"),
    ("completions/clipped_ratio", "truncated_fraction"),
];

/// distill's `metrics.jsonl` records from TRL's GRPO log history: one per optimiser step.
pub fn grpo_metrics(entries: &[&Value]) -> Vec<Value> {
    entries
        .iter()
        .map(|entry| {
            let mut record = json!({"step": entry["step"]});
            for (theirs, ours) in METRIC_NAMES {
                if let Some(value) = entry.get(theirs) {
                    record[ours] = value.clone();
                }
            }
            record
        })
        .collect()
}

/// Writes the prompts, rendered with the policy's chat template, as JSONL rows of [`PromptRow`].
fn write_prompts(
    path: &Path,
    config: &GrpoConfig,
    tokenizer: &Tokenizer,
    problems: &[Problem],
) -> anyhow::Result<()> {
    let mut text = Vec::new();
    for (index, problem) in problems.iter().enumerate() {
        let prompt = render_prompt_text(
            tokenizer,
            problem,
            config.system_prompt.as_deref(),
            &config.instruction,
        )
        .with_context(|| format!("prompt {}", problem.id))?;
        writeln!(
            text,
            "{}",
            serde_json::to_string(&PromptRow::new(index, problem, prompt))?
        )?;
    }
    write_atomic(path, &text)?;
    Ok(())
}

/// Runs GRPO on `problems` through TRL (see the module docs); with `resume`, TRL resumes from
/// the newest checkpoint under `OUT/checkpoints` when there is one.
pub fn run_trl_grpo(
    config: &GrpoConfig,
    problems: &[Problem],
    resume: bool,
) -> anyhow::Result<GrpoSummary> {
    let started = Instant::now();
    let python = detect(&interpreter(config.trl.python.as_deref()))?;
    if problems.is_empty() {
        bail!("GRPO needs at least one prompt");
    }
    let policy_dir = hf_model_dir("policy", &config.policy)?;
    let _claim =
        crate::output_dir::OutputDir::claim(&config.out, crate::output_dir::OutputKind::Grpo)?;
    let parameters = ModelConfig::from_file(&policy_dir.join("config.json"))?.parameter_count();
    let tokenizer = Tokenizer::from_dir(&policy_dir)?;
    let trl_dir = config.out.join("trl");
    let data_dir = trl_dir.join("data");
    std::fs::create_dir_all(&data_dir).with_context(|| data_dir.display().to_string())?;
    let prompts_file = data_dir.join("prompts.jsonl");
    write_prompts(&prompts_file, config, &tokenizer, problems)?;
    // A gold answer the verifier cannot read fails here, naming the problem, not inside TRL's
    // reward function.
    crate::verify::grade::checkers_for(problems, &config.sandbox, "prompt")?;
    let reward_settings = RewardSettings {
        terms: config.rewards.clone(),
        sandbox: config.sandbox.clone(),
        max_new_tokens: config.max_new_tokens,
        prompts_file: absolute(&prompts_file)?.into(),
    };
    let model_dir = config.out.join("final");
    let checkpoints = config.out.join("checkpoints");
    let state_file = trl_dir.join("trainer_state.json");
    let paths = ScriptPaths {
        model: absolute(&policy_dir)?,
        train_file: absolute(&prompts_file)?,
        eval_file: None,
        checkpoints: absolute(&checkpoints)?,
        final_dir: absolute(&model_dir)?,
        trainer_state: absolute(&state_file)?,
    };
    let settings_file = absolute(&trl_dir.join("grpo_train.json"))?;
    let exe = std::env::current_exe().context("finding the distill executable")?;
    let reward_command = vec![
        exe.display().to_string(),
        "rewards".into(),
        "--settings".into(),
        settings_file,
    ];
    let mut settings = grpo_settings(config, &config.trl, &paths, &reward_command, parameters)?;
    settings["rewards"] = serde_json::to_value(&reward_settings)?;
    let cpu = settings["trl_config"]["use_cpu"] == json!(true);
    let command = accelerate_command(&python.python, &config.trl, cpu);
    let files = write_launch(&trl_dir, "grpo_train.py", SCRIPT, &settings, &command)?;
    let _ = std::fs::remove_file(&state_file);
    run_launch(&files, resume && has_checkpoint(&checkpoints))?;

    complete_model_dir(&policy_dir, &model_dir)?;
    let state = read_trainer_state(&state_file)?;
    let records = grpo_metrics(&step_entries(&state));
    write_metrics(&config.out, &records)?;
    write_reward_plot(&config.out)?;
    let reward = |record: Option<&Value>| {
        record
            .and_then(|r| r["reward"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let tokens = state["num_input_tokens_seen"].as_u64().unwrap_or(0);
    let mu = config.mu.max(1) as u64;
    let reference_tokens = if config.beta > 0.0 { tokens } else { 0 };
    let summary = GrpoSummary {
        steps: state["global_step"].as_u64().unwrap_or(0) / mu,
        first_reward: reward(records.first()),
        last_reward: reward(records.last()),
        rollout_tokens: tokens,
        reference_tokens,
        update_tokens: tokens * mu,
        parameters,
        flops: estimated_flops(parameters, tokens * mu, tokens + reference_tokens),
        wall_seconds: started.elapsed().as_secs_f64(),
        model_dir,
    };
    let mut written = serde_json::to_value(&summary)?;
    written["engine"] = json!("trl");
    written["versions"] = json!(python.versions);
    written["processes"] = json!(config.trl.world_size());
    write_atomic(
        &config.out.join("summary.json"),
        &serde_json::to_vec_pretty(&written)?,
    )?;
    Ok(summary)
}

/// Draws `reward.svg` from the run's `metrics.jsonl`.
fn write_reward_plot(out: &Path) -> anyhow::Result<()> {
    plot_metrics(
        out,
        "reward.svg",
        "GRPO reward (TRL)",
        &[("reward", "reward"), ("accuracy", "accuracy")],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trl_grpo_logs_become_distill_metrics() {
        let state = json!({"log_history": [
            {"step": 1, "loss": 0.01, "reward": 0.25, "reward_accuracy": 0.25, "kl": 0.0,
             "learning_rate": 1e-4, "completions/mean_length": 40.0, "num_tokens": 900},
            {"step": 2, "loss": 0.02, "reward": 0.5, "reward_accuracy": 0.5, "kl": 0.1,
             "learning_rate": 1e-4, "completions/mean_length": 30.0},
            {"step": 2, "train_runtime": 3.0},
        ]});
        let records = grpo_metrics(&step_entries(&state));
        assert_eq!(records.len(), 2);
        assert_eq!(records[1]["step"], 2);
        assert_eq!(records[1]["reward"], 0.5);
        assert_eq!(records[1]["accuracy"], 0.5);
        assert_eq!(records[1]["lr"], 1e-4);
        assert_eq!(records[0]["completion_length_mean"], 40.0);
    }
}
