//! `distill rewards --settings FILE`: scores GRPO completions read from stdin (one JSON line each)
//! with distill's reward terms — the TRL engine's reward function.

use std::path::PathBuf;

use clap::Args;

use crate::train::trl::rewards_server::{read_settings, serve};

/// `distill rewards`.
#[derive(Debug, Args)]
pub struct RewardsArgs {
    /// A GRPO launch's settings file (`OUT/trl/grpo_train.json`), whose `rewards` object names the
    /// terms, weights, sandbox and prompts.
    #[arg(long)]
    pub settings: PathBuf,
}

/// Runs `distill rewards` until stdin ends.
pub fn run(args: &RewardsArgs) -> anyhow::Result<()> {
    let settings = read_settings(&args.settings)?;
    serve(&settings, std::io::stdin().lock(), std::io::stdout().lock())
}
