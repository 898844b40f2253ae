//! Running untrusted Python programs (model-written code) in a sandbox.
//!
//! This module owns process isolation, resource limits and the raw outcome of one run; it knows
//! nothing about tests or verdicts (that is [`crate::verify::code`]). A [`Sandbox`] runs
//! `python3 ARGS…` with bytes on stdin and returns a [`RunOutcome`]: exit status, whether the
//! wall clock ran out, capped stdout/stderr and the capped *report channel* (file descriptor 3
//! inside the program, a pipe the caller's harness writes structured results to).
//!
//! With [`SandboxKind::Bwrap`] ([`bwrap`]) the program runs under bubblewrap: its own PID,
//! network, IPC and UTS namespaces (no network at all, nothing outlives the run), a read-only
//! view of `/usr` and the interpreter's prefix only (no home, no project directory), a private
//! `/tmp` tmpfs as its work directory, and a fresh unprivileged user id per run. Limits
//! ([`Limits`], applied with `setrlimit` before exec in [`process`]): CPU seconds, address space,
//! processes, file size, open files; a wall-clock timeout kills the whole tree. With
//! [`SandboxKind::None`] only the limits and the timeout apply — the program can read and write
//! whatever the user running distill can.

pub mod bwrap;
pub mod limits;
pub mod process;
pub mod python;

use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub use limits::Limits;
pub use process::{ExitKind, RunOutcome};
pub use python::Python;

/// Errors setting a sandbox up or starting a run (a program misbehaving is not an error: it is
/// in the [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// bubblewrap is not installed or does not work here.
    #[error("no sandbox available: {0}. Install bubblewrap (Debian/Ubuntu: `apt-get install -y bubblewrap`; Fedora: `dnf install bubblewrap`), or pass `--sandbox none` to run model-written code unsandboxed (unsafe)")]
    Unavailable(String),
    /// No usable Python 3 interpreter.
    #[error("no Python 3 interpreter: {0}")]
    NoPython(String),
    /// Starting or supervising the run failed.
    #[error("sandbox run failed: {0}")]
    Run(String),
    /// An unusable setting.
    #[error("invalid sandbox setting: {0}")]
    Config(String),
}

/// Which isolation runs the programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxKind {
    /// bubblewrap namespaces plus limits (the default).
    Bwrap,
    /// Limits and timeout only: the program runs as the current user (explicit opt-in).
    None,
}

impl std::str::FromStr for SandboxKind {
    type Err = SandboxError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "bwrap" | "bubblewrap" => Ok(SandboxKind::Bwrap),
            "none" => Ok(SandboxKind::None),
            other => Err(SandboxError::Config(format!(
                "unknown sandbox `{other}` (known: bwrap, none)"
            ))),
        }
    }
}

/// How a stage's sandbox is set up (a `[sandbox]` table in a recipe, or the `--sandbox` flags):
/// isolation, concurrency and limits. The sandbox starts only when a run has code problems.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSettings {
    /// `bwrap` (default) or `none` (unsandboxed, warned about on every run).
    pub kind: SandboxKind,
    /// Programs run at once; `None` (default) = the number of cores.
    pub concurrency: Option<usize>,
    /// Resource limits of each run.
    pub limits: Limits,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            kind: SandboxKind::Bwrap,
            concurrency: None,
            limits: Limits::default(),
        }
    }
}

impl SandboxSettings {
    /// Starts the sandbox these settings describe (see [`Sandbox::new`]).
    pub fn open(&self) -> Result<std::sync::Arc<Sandbox>, SandboxError> {
        Sandbox::new(self.kind, self.limits.clone(), self.concurrency).map(std::sync::Arc::new)
    }
}

/// The warning printed on every run with [`SandboxKind::None`].
pub const UNSANDBOXED_WARNING: &str = "warning: --sandbox none: model-written code runs WITHOUT isolation, as the current user, with only resource limits and a timeout; it can read, write and delete your files and use the network";

/// A configured sandbox: isolation kind, interpreter, limits and a concurrency limit shared by
/// every thread that calls [`Sandbox::run`].
#[derive(Debug)]
pub struct Sandbox {
    kind: SandboxKind,
    python: Python,
    limits: Limits,
    slots: Slots,
}

impl Sandbox {
    /// A sandbox of `kind` with `limits`, running at most `concurrency` programs at once
    /// (`None` = the number of cores). Checks that the isolation works here (one tiny run) and
    /// finds Python 3 on `PATH`; a [`SandboxKind::None`] sandbox prints [`UNSANDBOXED_WARNING`].
    pub fn new(
        kind: SandboxKind,
        limits: Limits,
        concurrency: Option<usize>,
    ) -> Result<Self, SandboxError> {
        limits.validate()?;
        let concurrency = concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if concurrency == 0 || concurrency > process::MAX_CONCURRENCY {
            return Err(SandboxError::Config(format!(
                "concurrency must be within 1..={}",
                process::MAX_CONCURRENCY
            )));
        }
        if kind == SandboxKind::Bwrap {
            bwrap::check_available()?;
        } else {
            eprintln!("{UNSANDBOXED_WARNING}");
        }
        let python = Python::find()?;
        let sandbox = Sandbox {
            kind,
            python,
            limits,
            slots: Slots::new(concurrency),
        };
        if kind == SandboxKind::Bwrap {
            let probe = sandbox.run(&["-c".into(), "print('ok')".into()], b"")?;
            if probe.stdout != b"ok\n" {
                return Err(SandboxError::Unavailable(format!(
                    "bubblewrap is installed but a test run failed ({:?}): {}",
                    probe.exit,
                    String::from_utf8_lossy(&probe.stderr).trim()
                )));
            }
        }
        Ok(sandbox)
    }

    /// The isolation kind.
    pub fn kind(&self) -> SandboxKind {
        self.kind
    }

    /// The limits every run gets.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs `python3 ARGS…` (isolated mode `-I`) with `stdin`, waiting for a free slot first.
    pub fn run(&self, args: &[String], stdin: &[u8]) -> Result<RunOutcome, SandboxError> {
        let _slot = self.slots.acquire();
        let mut argv = vec![self.python.executable.to_string_lossy().into_owned()];
        argv.push("-I".into());
        argv.extend(args.iter().cloned());
        let (program, full_args, run_uid) = match self.kind {
            SandboxKind::Bwrap => {
                let uid = process::next_run_uid();
                let mut command = bwrap::arguments(&self.python, uid);
                command.extend(argv);
                ("bwrap".to_string(), command, Some(uid))
            }
            SandboxKind::None => {
                let program = argv.remove(0);
                (program, argv, None)
            }
        };
        process::run(&program, &full_args, stdin, &self.limits, run_uid)
    }
}

/// A counting semaphore: at most N runs at once.
#[derive(Debug)]
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn new(count: usize) -> Self {
        Slots {
            free: Mutex::new(count),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *free -= 1;
        SlotGuard { slots: self }
    }
}

struct SlotGuard<'a> {
    slots: &'a Slots,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.slots.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.slots.freed.notify_one();
    }
}
