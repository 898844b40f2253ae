//! [`Limits`]: the resources one sandboxed run may use, applied with `setrlimit` in the child
//! before exec (inherited by everything it starts) plus a wall clock and output caps enforced by
//! the supervising parent.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SandboxError;

/// Resource limits of one run. Every field has a default suited to grading test cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock seconds before the whole process tree is killed. Default 10.
    pub wall_seconds: f64,
    /// CPU seconds per process (`RLIMIT_CPU`). Default 10.
    pub cpu_seconds: u64,
    /// Address space per process in MiB (`RLIMIT_AS`). Default 1024.
    pub memory_mib: u64,
    /// Processes of the run's user (`RLIMIT_NPROC`; enforced under bubblewrap, where each run
    /// has its own unprivileged user id). Default 32.
    pub processes: u64,
    /// Largest file the program may write, in MiB (`RLIMIT_FSIZE`). Default 16.
    pub file_size_mib: u64,
    /// Open file descriptors per process (`RLIMIT_NOFILE`). Default 64.
    pub open_files: u64,
    /// Bytes of stdout and of stderr kept (the rest is read and dropped). Default 64 KiB.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_seconds: 10.0,
            cpu_seconds: 10,
            memory_mib: 1024,
            processes: 32,
            file_size_mib: 16,
            open_files: 64,
            output_bytes: 64 * 1024,
        }
    }
}

impl Limits {
    /// Checks every limit is positive and the wall clock is finite.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let bad = |what: &str| Err(SandboxError::Config(format!("`{what}` must be positive")));
        if !(self.wall_seconds.is_finite() && self.wall_seconds > 0.0) {
            return bad("wall_seconds");
        }
        for (name, value) in [
            ("cpu_seconds", self.cpu_seconds),
            ("memory_mib", self.memory_mib),
            ("processes", self.processes),
            ("file_size_mib", self.file_size_mib),
            ("open_files", self.open_files),
            ("output_bytes", self.output_bytes as u64),
        ] {
            if value == 0 {
                return bad(name);
            }
        }
        Ok(())
    }

    /// The wall-clock limit.
    pub fn wall(&self) -> Duration {
        Duration::from_secs_f64(self.wall_seconds)
    }

    /// `(resource, soft, hard)` for every rlimit a run gets. The CPU hard limit is one second
    /// above the soft one, so the program first gets `SIGXCPU` (which a harness can report).
    pub(crate) fn rlimits(&self) -> [(libc::__rlimit_resource_t, u64, u64); 6] {
        let mib = 1024 * 1024;
        [
            (libc::RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 1),
            (
                libc::RLIMIT_AS,
                self.memory_mib * mib,
                self.memory_mib * mib,
            ),
            (libc::RLIMIT_NPROC, self.processes, self.processes),
            (
                libc::RLIMIT_FSIZE,
                self.file_size_mib * mib,
                self.file_size_mib * mib,
            ),
            (libc::RLIMIT_NOFILE, self.open_files, self.open_files),
            (libc::RLIMIT_CORE, 0, 0),
        ]
    }
}
