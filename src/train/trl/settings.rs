//! distill's training settings as TRL's: a pure mapping from a stage config to the JSON the launch
//! script reads (TRL's own config fields under `trl_config`, plus what distill keeps exact in the
//! script: its learning-rate schedule and weight-decay exemptions). Settings TRL cannot honour the
//! same way are refused with the field named, never dropped.

use anyhow::bail;
use serde_json::{json, Value};

use super::TrlLaunch;
use crate::train::grpo::{GrpoConfig, LossAggregation};
use crate::train::optim::AdamWConfig;
use crate::train::precision::Precision;
use crate::train::rewards::AdvantageScaling;
use crate::train::schedule::Decay;
use crate::train::sft::SftConfig;

/// Where the launch script reads and writes, all inside the run directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptPaths {
    /// The model to start from (an HF directory or hub id).
    pub model: String,
    /// Training examples (JSONL).
    pub train_file: String,
    /// Held-out examples (JSONL), when there are any.
    pub eval_file: Option<String>,
    /// TRL's `output_dir`: its checkpoints.
    pub checkpoints: String,
    /// Where the trained model is saved.
    pub final_dir: String,
    /// Where the final trainer state (TRL's log history) is saved.
    pub trainer_state: String,
}

/// Whether the run uses GPUs, and bf16, from distill's `device` and `precision`.
fn device_settings(device: &str, precision: Precision) -> anyhow::Result<Value> {
    let cuda = match device {
        "cpu" => false,
        "cuda" | "cuda:0" => true,
        other => bail!(
            "field device: {other:?} cannot be passed to accelerate, which places one process per GPU; \
             use cpu or cuda, and choose GPUs with CUDA_VISIBLE_DEVICES"
        ),
    };
    let bf16 = match precision {
        Precision::Auto => cuda,
        Precision::F32 => false,
        Precision::Bf16 => true,
    };
    Ok(json!({"use_cpu": !cuda, "bf16": bf16}))
}

/// AdamW's settings as TrainingArguments fields (the decay exemptions are applied by the script).
fn optimizer_settings(optimizer: &AdamWConfig) -> Value {
    json!({
        "optim": "adamw_torch",
        "adam_beta1": optimizer.beta1,
        "adam_beta2": optimizer.beta2,
        "adam_epsilon": optimizer.eps,
        "weight_decay": optimizer.weight_decay,
        "max_grad_norm": optimizer.max_grad_norm,
    })
}

/// distill's schedule, which the script applies as a `LambdaLR` with [`Schedule::lr`]'s formula
/// (transformers' warmup starts at 0, distill's at `peak / warmup_steps`).
///
/// [`Schedule::lr`]: crate::train::schedule::Schedule::lr
fn schedule_settings(warmup_steps: u64, decay: Decay, min_lr_ratio: f64) -> Value {
    json!({"warmup_steps": warmup_steps, "decay": decay, "min_lr_ratio": min_lr_ratio})
}

/// Adds `extra`'s fields to the object `base`.
fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

/// Refuses the SFT settings TRL cannot honour the same way (checked by `SftConfig::validate`, so a
/// recipe fails before any stage runs).
pub fn refuse_unmappable_sft(config: &SftConfig) -> anyhow::Result<()> {
    if config.peak_tflops.is_some() {
        bail!("field peak_tflops: the trl engine logs no MFU; remove it");
    }
    if config.pack && !config.device.starts_with("cuda") {
        bail!(
            "field pack: TRL packs padding-free, which keeps attention inside each example with \
             flash attention on a GPU; on the CPU leave pack off"
        );
    }
    device_settings(&config.device, config.precision).map(|_| ())
}

/// The launch script's configuration for SFT: TRL `SFTConfig` fields for every SFT setting, or
/// an error naming the first setting TRL cannot honour.
///
/// distill tokenises the data itself (chat template, loss mask over the final reply, length
/// policy, held-out split) and hands TRL `input_ids` + `completion_mask` rows, so TRL trains on the
/// same tokens with `completion_only_loss`. `batch_size` is per process: a step sees
/// `batch_size × grad_accum × processes` rows.
pub fn sft_settings(config: &SftConfig, paths: &ScriptPaths) -> anyhow::Result<Value> {
    refuse_unmappable_sft(config)?;
    let save = if config.save_every > 0 {
        json!({"save_strategy": "steps", "save_steps": config.save_every})
    } else {
        json!({"save_strategy": "no"})
    };
    let eval = match (&paths.eval_file, config.eval_every) {
        (Some(_), every) if every > 0 => json!({"eval_strategy": "steps", "eval_steps": every}),
        _ => json!({"eval_strategy": "no"}),
    };
    let mut trl = json!({
        "output_dir": paths.checkpoints,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "constant",
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps.map_or(-1, |s| s as i64),
        "max_length": config.max_length,
        "packing": config.pack,
        "gradient_checkpointing": config.gradient_checkpointing,
        "completion_only_loss": true,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": 1,
        "report_to": "none",
        "include_num_input_tokens_seen": "non_padding",
        "average_tokens_across_devices": true,
        "dataloader_drop_last": false,
        "save_only_model": false,
    });
    if config.pack {
        trl["packing_strategy"] = json!("bfd");
    }
    for extra in [
        device_settings(&config.device, config.precision)?,
        optimizer_settings(&config.optimizer),
        save,
        eval,
    ] {
        trl = merge(trl, extra);
    }
    Ok(json!({
        "stage": "sft",
        "model": paths.model,
        "train_file": paths.train_file,
        "eval_file": paths.eval_file,
        "final_dir": paths.final_dir,
        "trainer_state": paths.trainer_state,
        "schedule": schedule_settings(config.warmup_steps, config.decay, config.min_lr_ratio),
        "no_decay_norms_biases_embeddings": config.optimizer.no_decay_norms_biases_embeddings,
        "trl_config": trl,
    }))
}

/// Refuses the GRPO settings TRL cannot honour the same way over `launch`'s processes (checked by
/// `GrpoConfig::validate`, so a recipe fails before any stage runs).
pub fn refuse_unmappable_grpo(config: &GrpoConfig, launch: &TrlLaunch) -> anyhow::Result<()> {
    let completions = config.prompts_per_step * config.group_size;
    let processes = launch.world_size();
    if !completions.is_multiple_of(processes) {
        bail!(
            "fields prompts_per_step × group_size: {completions} completions per step cannot be \
             split evenly over {processes} processes"
        );
    }
    device_settings(&config.device, config.precision).map(|_| ())
}

/// The launch script's configuration for GRPO: TRL `GRPOConfig` fields for every GRPO setting, or
/// an error naming the first setting TRL cannot honour.
///
/// distill renders each prompt with the chat template (system prompt, instruction, `<think>`
/// prefill) as it would, and the rewards are distill's own: the script's reward function asks a
/// `distill rewards` process (`reward_command`) to score every completion with the recipe's terms
/// and weights. A rollout step is one TRL optimiser step per update (`mu` = `num_iterations`);
/// `max_flops` stops the run once TRL's token counts reach it (by the same 6·P / 2·P rule as distill).
pub fn grpo_settings(
    config: &GrpoConfig,
    launch: &TrlLaunch,
    paths: &ScriptPaths,
    reward_command: &[String],
    parameters: usize,
) -> anyhow::Result<Value> {
    refuse_unmappable_grpo(config, launch)?;
    let per_process = config.prompts_per_step * config.group_size / launch.world_size();
    let loss_type = match config.loss {
        LossAggregation::Grpo => "grpo",
        LossAggregation::DrGrpo => "dr_grpo",
        LossAggregation::Dapo => "dapo",
    };
    let scale_rewards = match config.advantage_scaling {
        AdvantageScaling::Group => "group",
        AdvantageScaling::Batch => "batch",
        AdvantageScaling::None => "none",
    };
    let save = if config.save_every > 0 {
        json!({"save_strategy": "steps", "save_steps": config.save_every * config.mu as u64})
    } else {
        json!({"save_strategy": "no"})
    };
    let mut trl = json!({
        "output_dir": paths.checkpoints,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "constant",
        "num_generations": config.group_size,
        "per_device_train_batch_size": per_process,
        "gradient_accumulation_steps": 1,
        "max_steps": config.steps * config.mu as u64,
        "max_completion_length": config.max_new_tokens,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "epsilon": config.epsilon_low,
        "epsilon_high": config.epsilon_high,
        "beta": config.beta,
        "num_iterations": config.mu,
        "loss_type": loss_type,
        "scale_rewards": scale_rewards,
        "mask_truncated_completions": config.mask_truncated,
        "gradient_checkpointing": config.gradient_checkpointing,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": 1,
        "report_to": "none",
        "save_only_model": false,
    });
    for extra in [
        device_settings(&config.device, config.precision)?,
        optimizer_settings(&config.optimizer),
        save,
    ] {
        trl = merge(trl, extra);
    }
    Ok(json!({
        "stage": "grpo",
        "model": paths.model,
        "train_file": paths.train_file,
        "final_dir": paths.final_dir,
        "trainer_state": paths.trainer_state,
        "schedule": schedule_settings(config.warmup_steps, config.decay, config.min_lr_ratio),
        "no_decay_norms_biases_embeddings": config.optimizer.no_decay_norms_biases_embeddings,
        "reward_command": reward_command,
        "max_flops": config.max_flops,
        "parameters": parameters,
        "trl_config": trl,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SftConfig {
        toml::from_str(
            r#"
            student = "m"
            data = "d"
            out = "o"
            learning_rate = 2e-3
            warmup_steps = 20
            min_lr_ratio = 0.1
            batch_size = 8
            grad_accum = 2
            max_length = 256
            epochs = 3
            save_every = 50
            eval_every = 10
            seed = 7
            gradient_checkpointing = true
            [optimizer]
            beta2 = 0.98
            weight_decay = 0.1
            max_grad_norm = 0.5
            "#,
        )
        .unwrap()
    }

    fn paths() -> ScriptPaths {
        ScriptPaths {
            model: "m".into(),
            train_file: "train.jsonl".into(),
            eval_file: Some("eval.jsonl".into()),
            checkpoints: "checkpoints".into(),
            final_dir: "final".into(),
            trainer_state: "trainer_state.json".into(),
        }
    }

    #[test]
    fn every_sft_setting_reaches_trl() {
        let settings = sft_settings(&config(), &paths()).unwrap();
        let trl = &settings["trl_config"];
        for (key, want) in [
            ("learning_rate", json!(2e-3)),
            ("per_device_train_batch_size", json!(8)),
            ("gradient_accumulation_steps", json!(2)),
            ("num_train_epochs", json!(3)),
            ("max_steps", json!(-1)),
            ("max_length", json!(256)),
            ("packing", json!(false)),
            ("gradient_checkpointing", json!(true)),
            ("completion_only_loss", json!(true)),
            ("seed", json!(7)),
            ("save_strategy", json!("steps")),
            ("save_steps", json!(50)),
            ("eval_strategy", json!("steps")),
            ("eval_steps", json!(10)),
            ("use_cpu", json!(true)),
            ("bf16", json!(false)),
            ("adam_beta1", json!(0.9)),
            ("adam_beta2", json!(0.98)),
            ("adam_epsilon", json!(1e-8)),
            ("weight_decay", json!(0.1)),
            ("max_grad_norm", json!(0.5)),
        ] {
            assert_eq!(trl[key], want, "{key}");
        }
        assert_eq!(
            settings["schedule"],
            json!({"warmup_steps": 20, "decay": "cosine", "min_lr_ratio": 0.1})
        );
        assert_eq!(settings["no_decay_norms_biases_embeddings"], json!(true));
    }

    #[test]
    fn steps_precision_and_checkpoints_follow_the_config() {
        let mut c = config();
        c.max_steps = Some(40);
        c.save_every = 0;
        c.device = "cuda".into();
        let settings = sft_settings(&c, &paths()).unwrap();
        let trl = &settings["trl_config"];
        assert_eq!(trl["max_steps"], json!(40));
        assert_eq!(trl["save_strategy"], json!("no"));
        assert_eq!(trl["bf16"], json!(true), "auto is bf16 on a GPU");
        assert_eq!(trl["use_cpu"], json!(false));
        let no_eval = ScriptPaths {
            eval_file: None,
            ..paths()
        };
        let settings = sft_settings(&config(), &no_eval).unwrap();
        assert_eq!(settings["trl_config"]["eval_strategy"], json!("no"));
    }

    #[test]
    fn settings_trl_cannot_honour_are_refused_by_name() {
        let mut c = config();
        c.peak_tflops = Some(100.0);
        let err = sft_settings(&c, &paths()).unwrap_err();
        assert!(err.to_string().contains("peak_tflops"), "{err}");
        let mut c = config();
        c.device = "cuda:3".into();
        let err = sft_settings(&c, &paths()).unwrap_err();
        assert!(err.to_string().contains("field device"), "{err}");
        let mut c = config();
        c.pack = true;
        let err = sft_settings(&c, &paths()).unwrap_err();
        assert!(err.to_string().contains("field pack"), "{err}");
        c.device = "cuda".into();
        let settings = sft_settings(&c, &paths()).unwrap();
        assert_eq!(settings["trl_config"]["packing_strategy"], json!("bfd"));
    }

    fn grpo_config() -> GrpoConfig {
        toml::from_str(
            r#"
            policy = "m"
            out = "o"
            group_size = 8
            prompts_per_step = 4
            steps = 100
            max_new_tokens = 96
            temperature = 0.9
            top_p = 0.95
            epsilon_low = 0.2
            epsilon_high = 0.28
            beta = 0.04
            mu = 2
            loss = "dr_grpo"
            advantage_scaling = "batch"
            mask_truncated = true
            save_every = 10
            max_flops = 1e12
            "#,
        )
        .unwrap()
    }

    #[test]
    fn every_grpo_setting_reaches_trl() {
        let launch = TrlLaunch {
            nproc_per_node: Some(2),
            ..TrlLaunch::default()
        };
        let command = vec!["distill".to_string(), "rewards".to_string()];
        let settings = grpo_settings(&grpo_config(), &launch, &paths(), &command, 1000).unwrap();
        let trl = &settings["trl_config"];
        for (key, want) in [
            ("num_generations", json!(8)),
            ("per_device_train_batch_size", json!(16)),
            ("max_steps", json!(200)),
            ("max_completion_length", json!(96)),
            ("temperature", json!(0.9f32)),
            ("top_p", json!(0.95f32)),
            ("epsilon", json!(0.2)),
            ("epsilon_high", json!(0.28)),
            ("beta", json!(0.04)),
            ("num_iterations", json!(2)),
            ("loss_type", json!("dr_grpo")),
            ("scale_rewards", json!("batch")),
            ("mask_truncated_completions", json!(true)),
            ("save_steps", json!(20)),
            ("use_cpu", json!(true)),
        ] {
            assert_eq!(trl[key], want, "{key}");
        }
        assert_eq!(settings["max_flops"], json!(1e12));
        assert_eq!(settings["reward_command"], json!(command));
        assert_eq!(settings["parameters"], json!(1000));
    }

    #[test]
    fn a_step_that_cannot_be_split_over_the_processes_is_refused() {
        let launch = TrlLaunch {
            nproc_per_node: Some(3),
            ..TrlLaunch::default()
        };
        let err = grpo_settings(&grpo_config(), &launch, &paths(), &[], 1).unwrap_err();
        assert!(
            err.to_string().contains("prompts_per_step × group_size"),
            "{err}"
        );
    }
}
