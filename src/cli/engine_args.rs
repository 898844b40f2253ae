//! The training-engine flags shared by `distill train` and `distill grpo`: `--engine trl` and how
//! accelerate launches it.

use std::path::PathBuf;

use clap::Args;

use super::config_table::{int, ConfigTable};
use crate::train::trl::Engine;

/// Which trainer runs the steps, and the TRL engine's launch settings.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// distill (its own trainer, one process) or trl (TRL under `accelerate launch`).
    #[arg(long, value_enum)]
    pub engine: Option<Engine>,
    /// Python interpreter with torch, transformers, trl, accelerate, datasets (trl engine;
    /// default $DISTILL_TRL_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<String>,
    /// Processes on this node: one per GPU, or DDP over gloo on the CPU (trl engine).
    #[arg(long)]
    pub nproc_per_node: Option<usize>,
    /// Nodes taking part (trl engine).
    #[arg(long)]
    pub nnodes: Option<usize>,
    /// This node's rank (trl engine).
    #[arg(long)]
    pub node_rank: Option<usize>,
    /// Node 0's HOST:PORT, where the nodes meet (trl engine, several nodes).
    #[arg(long)]
    pub rdzv_endpoint: Option<String>,
    /// An accelerate config file, e.g. FSDP or DeepSpeed ZeRO-3 (trl engine).
    #[arg(long)]
    pub accelerate_config: Option<PathBuf>,
}

impl EngineArgs {
    /// Sets the given flags in `table` (`engine`, and the `trl.*` launch settings).
    pub fn apply(&self, table: &mut ConfigTable) {
        table.set_enum("engine", self.engine);
        table.set("trl.python", self.python.clone());
        table.set("trl.nproc_per_node", int(self.nproc_per_node));
        table.set("trl.nnodes", int(self.nnodes));
        table.set("trl.node_rank", int(self.node_rank));
        table.set("trl.rdzv_endpoint", self.rdzv_endpoint.clone());
        table.set_path("trl.accelerate_config", self.accelerate_config.as_ref());
    }
}
