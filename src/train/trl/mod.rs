//! The TRL engine: a training stage's steps run by TRL's trainers under `accelerate launch` (one
//! process, DDP over CPUs or GPUs, FSDP or DeepSpeed across nodes) while distill keeps the data, the
//! recipe and the run-directory layout. This module owns the engine choice and launch settings;
//! [`python`] finds the interpreter and packages, [`settings`] maps a stage config onto TRL's
//! settings (refusing what TRL cannot do the same way), [`launch`] writes the readable launch script
//! and runs it, and [`sft_run`] turns TRL's outputs into distill's layout.

pub mod grpo_run;
pub mod launch;
pub mod outputs;
pub mod python;
pub mod rewards_server;
pub mod settings;
pub mod sft_run;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which trainer runs a training stage's steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// distill's own trainer: one process, one device.
    #[default]
    Distill,
    /// TRL's trainer launched by `accelerate launch` (see [`TrlLaunch`]).
    Trl,
}

impl Engine {
    /// Whether this is distill's own trainer (the default, left out of serialised configs so
    /// existing run hashes stay the same).
    pub fn is_distill(&self) -> bool {
        *self == Engine::Distill
    }
}

/// How the TRL engine is launched: the interpreter, the processes and nodes, and an optional
/// accelerate config file (FSDP, DeepSpeed). A `[sft.trl]` / `[grpo.trl]` recipe table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrlLaunch {
    /// The Python interpreter with torch, transformers, trl and accelerate (default: the
    /// `DISTILL_TRL_PYTHON` environment variable, else `python3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// Processes on this node (one per GPU; on the CPU, DDP over gloo). Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nproc_per_node: Option<usize>,
    /// Nodes taking part. Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nnodes: Option<usize>,
    /// This node's rank, 0 to `nnodes - 1`. Default 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_rank: Option<usize>,
    /// Rendezvous `HOST:PORT` of node 0 (needed with more than one node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdzv_endpoint: Option<String>,
    /// An accelerate config file (FSDP or DeepSpeed), passed to `accelerate launch --config_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accelerate_config: Option<PathBuf>,
}

impl TrlLaunch {
    /// Whether nothing is set (left out of serialised configs).
    pub fn is_default(&self) -> bool {
        *self == TrlLaunch::default()
    }

    /// Refuses launch settings given to the distill engine, and impossible ones.
    pub fn validate(&self, engine: Engine) -> anyhow::Result<()> {
        if engine.is_distill() && !self.is_default() {
            anyhow::bail!(
                "field trl: launch settings are for engine = \"trl\"; the distill engine is one process on one device"
            );
        }
        let processes = self.nproc_per_node.unwrap_or(1);
        let nodes = self.nnodes.unwrap_or(1);
        if processes == 0 || nodes == 0 {
            anyhow::bail!("field trl: nproc_per_node and nnodes must be at least 1");
        }
        if self.node_rank.unwrap_or(0) >= nodes {
            anyhow::bail!(
                "field trl.node_rank: {} is not below nnodes = {nodes}",
                self.node_rank.unwrap_or(0)
            );
        }
        if nodes > 1 && self.rdzv_endpoint.is_none() {
            anyhow::bail!(
                "field trl.rdzv_endpoint: {nodes} nodes need node 0's HOST:PORT to meet at"
            );
        }
        if let Some(endpoint) = &self.rdzv_endpoint {
            let port = endpoint.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                anyhow::bail!("field trl.rdzv_endpoint: {endpoint:?} is not HOST:PORT");
            }
        }
        if let Some(path) = &self.accelerate_config {
            if !path.is_file() {
                anyhow::bail!(
                    "field trl.accelerate_config: {}: no such file",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// Processes across all nodes.
    pub fn world_size(&self) -> usize {
        self.nproc_per_node.unwrap_or(1) * self.nnodes.unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_settings_are_checked() {
        let ok = TrlLaunch {
            nproc_per_node: Some(8),
            nnodes: Some(2),
            node_rank: Some(1),
            rdzv_endpoint: Some("node0:29500".into()),
            ..TrlLaunch::default()
        };
        ok.validate(Engine::Trl).unwrap();
        assert_eq!(ok.world_size(), 16);
        let refused = |launch: TrlLaunch, engine: Engine, field: &str| {
            let err = launch.validate(engine).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        };
        refused(ok.clone(), Engine::Distill, "engine = \"trl\"");
        let no_endpoint = TrlLaunch {
            rdzv_endpoint: None,
            ..ok.clone()
        };
        refused(no_endpoint, Engine::Trl, "trl.rdzv_endpoint");
        let bad_endpoint = TrlLaunch {
            rdzv_endpoint: Some("node0".into()),
            ..ok.clone()
        };
        refused(bad_endpoint, Engine::Trl, "not HOST:PORT");
        let bad_rank = TrlLaunch {
            node_rank: Some(2),
            ..ok.clone()
        };
        refused(bad_rank, Engine::Trl, "trl.node_rank");
        let no_processes = TrlLaunch {
            nproc_per_node: Some(0),
            ..TrlLaunch::default()
        };
        refused(no_processes, Engine::Trl, "at least 1");
        let missing_config = TrlLaunch {
            accelerate_config: Some("/no/such/fsdp.yaml".into()),
            ..TrlLaunch::default()
        };
        refused(missing_config, Engine::Trl, "no such file");
    }
}
