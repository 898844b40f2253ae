//! The `--sandbox` flags shared by the stages that grade code problems (filter, eval, grpo).

use clap::Args;

use crate::sandbox::{SandboxKind, SandboxSettings};

/// How code problems' programs are run.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Isolation of model-written code: bwrap (bubblewrap, default) or none (unsafe: runs it as
    /// you, with only resource limits; warned about on every run).
    #[arg(long, value_parser = parse_kind)]
    pub sandbox: Option<SandboxKind>,
    /// Programs run at once (default: the number of cores).
    #[arg(long)]
    pub sandbox_concurrency: Option<usize>,
    /// Wall-clock seconds per program (default 10; the CPU limit follows it).
    #[arg(long)]
    pub code_timeout: Option<f64>,
}

fn parse_kind(text: &str) -> Result<SandboxKind, String> {
    text.parse()
        .map_err(|e: crate::sandbox::SandboxError| e.to_string())
}

impl SandboxArgs {
    /// `settings` with the flags applied.
    pub fn apply(&self, mut settings: SandboxSettings) -> SandboxSettings {
        if let Some(kind) = self.sandbox {
            settings.kind = kind;
        }
        if let Some(concurrency) = self.sandbox_concurrency {
            settings.concurrency = Some(concurrency);
        }
        if let Some(seconds) = self.code_timeout {
            settings.limits.wall_seconds = seconds;
            settings.limits.cpu_seconds = seconds.ceil().max(1.0) as u64;
        }
        settings
    }
}
