//! `engine = "trl"` for SFT: distill tokenises and splits the data exactly as its own trainer
//! would, writes the launch files into `OUT/trl/`, runs them, and turns TRL's outputs into the run
//! layout `distill eval` and `distill compare` read (`final/`, `metrics.jsonl`, `loss.svg`,
//! `summary.json`).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};

use super::launch::{accelerate_command, run_launch, write_launch};
use super::outputs::{
    absolute, complete_model_dir, has_checkpoint, hf_model_dir, read_trainer_state, write_metrics,
};
use super::python::{detect, interpreter};
use super::settings::{sft_settings, ScriptPaths};
use crate::model::save::write_atomic;
use crate::model::{ModelConfig, Tokenizer};
use crate::train::compute::estimated_flops;
use crate::train::sft::{load_dataset, write_loss_plot, SftConfig, SftSummary};
use crate::train::token_store::{StoredExample, TokenStore};

/// The training script the launch runs.
const SCRIPT: &str = include_str!("sft_train.py");

/// Writes `examples` as JSONL rows of `input_ids` and `completion_mask` (what the loss covers).
fn write_rows(path: &Path, store: &TokenStore, examples: &[StoredExample]) -> anyhow::Result<()> {
    let temp = crate::output_dir::temp_path_for(path);
    let file = std::fs::File::create(&temp).with_context(|| temp.display().to_string())?;
    let mut out = std::io::BufWriter::new(file);
    for stored in examples {
        let example = store.read(stored)?;
        let row = json!({"input_ids": example.tokens, "completion_mask": example.loss_mask});
        writeln!(out, "{row}").with_context(|| temp.display().to_string())?;
    }
    out.flush().with_context(|| temp.display().to_string())?;
    std::fs::rename(&temp, path).with_context(|| path.display().to_string())?;
    Ok(())
}

/// distill's `metrics.jsonl` records from TRL's log history: one per optimiser step with `step`,
/// `loss`, `lr`, `grad_norm`, `epoch`, `tokens` and `tokens_per_s`, and `eval_loss` on the steps
/// that evaluated.
pub fn metrics_from_log_history(history: &[Value]) -> Vec<Value> {
    let mut records: Vec<Value> = Vec::new();
    let mut tokens_before = 0u64;
    for entry in history {
        let Some(step) = entry.get("step").and_then(Value::as_u64) else {
            continue;
        };
        if let Some(loss) = entry.get("loss").and_then(Value::as_f64) {
            let seen = entry
                .get("num_input_tokens_seen")
                .and_then(Value::as_u64)
                .unwrap_or(tokens_before);
            let tokens = seen.saturating_sub(tokens_before);
            tokens_before = seen;
            let mut record = json!({
                "step": step, "loss": loss, "lr": entry.get("learning_rate"),
                "grad_norm": entry.get("grad_norm"), "epoch": entry.get("epoch"), "tokens": tokens,
            });
            if let Some(seconds) = entry.get("step_seconds").and_then(Value::as_f64) {
                record["tokens_per_s"] = json!(tokens as f64 / seconds.max(1e-9));
            }
            records.push(record);
        } else if let Some(eval_loss) = entry.get("eval_loss").and_then(Value::as_f64) {
            if let Some(record) = records.iter_mut().rev().find(|r| r["step"] == json!(step)) {
                record["eval_loss"] = json!(eval_loss);
            }
        }
    }
    records
}

/// Runs SFT through TRL (see the module docs); with `resume`, TRL resumes from the newest
/// checkpoint under `OUT/checkpoints` when there is one.
pub fn run_trl_sft(config: &SftConfig, resume: bool) -> anyhow::Result<SftSummary> {
    let started = Instant::now();
    let python = detect(&interpreter(config.trl.python.as_deref()))?;
    let student_dir = hf_model_dir("student", &config.student)?;
    let _claim =
        crate::output_dir::OutputDir::claim(&config.out, crate::output_dir::OutputKind::Sft)?;
    let model_config = ModelConfig::from_file(&student_dir.join("config.json"))?;
    let tokenizer = Tokenizer::from_dir(&student_dir)?;
    let trl_dir = config.out.join("trl");
    let data_dir = trl_dir.join("data");
    std::fs::create_dir_all(&data_dir).with_context(|| data_dir.display().to_string())?;
    let dataset = load_dataset(config, &tokenizer)?;
    let train_file = data_dir.join("train.jsonl");
    write_rows(&train_file, &dataset.store, &dataset.train)?;
    let eval_file = (!dataset.eval.is_empty()).then(|| data_dir.join("eval.jsonl"));
    if let Some(path) = &eval_file {
        write_rows(path, &dataset.store, &dataset.eval)?;
    }
    let model_dir = config.out.join("final");
    let checkpoints = config.out.join("checkpoints");
    let state_file = trl_dir.join("trainer_state.json");
    let paths = ScriptPaths {
        model: absolute(&student_dir)?,
        train_file: absolute(&train_file)?,
        eval_file: eval_file.as_deref().map(absolute).transpose()?,
        checkpoints: absolute(&checkpoints)?,
        final_dir: absolute(&model_dir)?,
        trainer_state: absolute(&state_file)?,
    };
    let settings = sft_settings(config, &paths)?;
    let cpu = settings["trl_config"]["use_cpu"] == json!(true);
    let command = accelerate_command(&python.python, &config.trl, cpu);
    let files = write_launch(&trl_dir, "sft_train.py", SCRIPT, &settings, &command)?;
    let _ = std::fs::remove_file(&state_file);
    run_launch(&files, resume && has_checkpoint(&checkpoints))?;

    complete_model_dir(&student_dir, &model_dir)?;
    let state = read_trainer_state(&state_file)?;
    let history = state["log_history"].as_array().cloned().unwrap_or_default();
    let records = metrics_from_log_history(&history);
    write_metrics(&config.out, &records)?;
    write_loss_plot(&config.out)?;

    let tokens_seen = state["num_input_tokens_seen"].as_u64().unwrap_or(0);
    let parameters = model_config.parameter_count();
    let summary = SftSummary {
        steps: state["global_step"].as_u64().unwrap_or(0),
        examples: dataset.report,
        eval_examples: dataset.eval.len(),
        tokens_seen,
        final_loss: records
            .last()
            .and_then(|r| r["loss"].as_f64())
            .unwrap_or(f64::NAN),
        final_eval_loss: records.iter().rev().find_map(|r| r["eval_loss"].as_f64()),
        // TRL packs the rows itself (best fit decreasing as well); its rows are not seen here.
        packing_efficiency: None,
        wall_seconds: started.elapsed().as_secs_f64(),
        parameters,
        flops: estimated_flops(parameters, tokens_seen, 0),
        compute_dtype: if settings["trl_config"]["bf16"] == json!(true) {
            "BF16".into()
        } else {
            "F32".into()
        },
        mfu: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trl_log_history_becomes_distill_metrics() {
        let history = vec![
            json!({"step": 1, "loss": 2.5, "learning_rate": 1e-3, "grad_norm": 3.0, "epoch": 0.5,
                   "num_input_tokens_seen": 100, "step_seconds": 0.5}),
            json!({"step": 2, "loss": 2.0, "learning_rate": 5e-4, "grad_norm": 2.0, "epoch": 1.0,
                   "num_input_tokens_seen": 180, "step_seconds": 0.4}),
            json!({"step": 2, "eval_loss": 2.2, "epoch": 1.0}),
            json!({"step": 2, "train_runtime": 1.0, "train_loss": 2.25}),
        ];
        let records = metrics_from_log_history(&history);
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0],
            json!({"step": 1, "loss": 2.5, "lr": 1e-3, "grad_norm": 3.0, "epoch": 0.5,
                   "tokens": 100, "tokens_per_s": 200.0})
        );
        assert_eq!(records[1]["tokens"], json!(80));
        assert_eq!(records[1]["eval_loss"], json!(2.2));
        assert!(records[0].get("eval_loss").is_none());
    }
}
