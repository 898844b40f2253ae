//! Training: the trainable decoder, token losses, AdamW and schedules, SFT data and loop, GRPO,
//! DPO (preference losses, pair data and loop), checkpoints and metrics, and the TRL engine that
//! runs SFT and GRPO under accelerate.

pub mod checkpoint;
pub mod compute;
mod config_checks;
pub mod dpo;
pub mod dpo_data;
pub mod grpo;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod precision;
pub mod preference_loss;
pub mod recompute;
pub mod rewards;
pub mod schedule;
pub mod sft;
pub mod sft_data;
pub mod token_store;
pub mod trainable;
pub mod trl;
