//! One owner per output directory: which verb's output a directory holds, and which process is
//! writing it now.
//!
//! Every verb claims its output directory before it writes anything ([`OutputDir::claim`]):
//! - **One writer.** A lock file (`.distill.lock`, created exclusively, holding the pid and host)
//!   stops a second process; the error names the holder. A lock left by a process that no longer
//!   runs on this host is stale: it is replaced, with a warning. The lock goes when the claim is
//!   dropped.
//! - **One kind.** A marker (`.distill-output`) records which verb's output the directory holds; a
//!   directory holding another kind (a training run given to `generate`, traces given to
//!   `model init`) is refused. Directories from earlier versions, which have no marker, are
//!   recognised by their files.
//!
//! Both files start with a dot, so Parquet readers that take the directory skip them.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name.
pub const LOCK_FILE: &str = ".distill.lock";
/// The marker file's name.
pub const KIND_FILE: &str = ".distill-output";

/// What a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// `distill generate`: trace shards.
    Traces,
    /// `distill filter`: accepted and rejected shards, report.
    Filtered,
    /// `distill pairs`: preference pairs.
    Pairs,
    /// `distill train`: an SFT run (checkpoints, metrics, `final/`).
    Sft,
    /// `distill grpo`: a GRPO run.
    Grpo,
    /// `distill dpo`: a DPO run.
    Dpo,
    /// `distill eval`: samples and scores.
    Eval,
    /// `distill compare`: the report.
    Report,
    /// `distill model init` / `export`: a model directory.
    Model,
    /// `distill run`: a whole recipe's stage directories.
    Recipe,
}

impl OutputKind {
    /// The verb whose output this is, as the marker records it.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Traces => "generate",
            OutputKind::Filtered => "filter",
            OutputKind::Pairs => "pairs",
            OutputKind::Sft => "train",
            OutputKind::Grpo => "grpo",
            OutputKind::Dpo => "dpo",
            OutputKind::Eval => "eval",
            OutputKind::Report => "compare",
            OutputKind::Model => "model",
            OutputKind::Recipe => "run",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            OutputKind::Traces,
            OutputKind::Filtered,
            OutputKind::Pairs,
            OutputKind::Sft,
            OutputKind::Grpo,
            OutputKind::Dpo,
            OutputKind::Eval,
            OutputKind::Report,
            OutputKind::Model,
            OutputKind::Recipe,
        ]
        .into_iter()
        .find(|k| k.as_str() == text.trim())
    }
}

/// Why a directory cannot be claimed.
#[derive(Debug, thiserror::Error)]
pub enum OutputDirError {
    /// Another live process writes there.
    #[error("{}: another distill process (pid {pid} on {host}) is writing this directory; wait for it, or stop it (its lock is {})", dir.display(), dir.join(LOCK_FILE).display())]
    Busy {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid.
        pid: u32,
        /// The holder's host.
        host: String,
    },
    /// The directory holds another verb's output.
    #[error("{}: holds `distill {found}` output, not `distill {wanted}`'s; choose another output directory", dir.display())]
    OtherKind {
        /// The directory.
        dir: PathBuf,
        /// What it holds.
        found: &'static str,
        /// What was to be written.
        wanted: &'static str,
    },
    /// The directory holds finished work that this invocation would replace.
    #[error("{}: {what}; {hint}", dir.display())]
    Finished {
        /// The directory.
        dir: PathBuf,
        /// What is there.
        what: String,
        /// What to do instead.
        hint: String,
    },
    /// The file system refused.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        cause: std::io::Error,
    },
}

/// A claimed output directory; its lock is released on drop.
#[derive(Debug)]
pub struct OutputDir {
    lock: PathBuf,
}

impl OutputDir {
    /// Creates `dir` if needed, takes its lock and checks (or records) that it holds `kind`.
    pub fn claim(dir: &Path, kind: OutputKind) -> Result<Self, OutputDirError> {
        std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
        let claim = OutputDir {
            lock: take_lock(dir)?,
        };
        let marker = dir.join(KIND_FILE);
        let found = match std::fs::read_to_string(&marker) {
            Ok(text) => OutputKind::parse(&text),
            Err(_) => infer_kind(dir),
        };
        match found {
            Some(found) if found != kind => {
                return Err(OutputDirError::OtherKind {
                    dir: dir.to_path_buf(),
                    found: found.as_str(),
                    wanted: kind.as_str(),
                })
            }
            _ => {}
        }
        if !marker.exists() {
            std::fs::write(&marker, format!("{}\n", kind.as_str()))
                .map_err(|source| io(&marker, source))?;
        }
        Ok(claim)
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// Refuses to start a training run afresh over one that already started, unless `force`.
pub fn refuse_restarting(dir: &Path, resume: bool, force: bool) -> Result<(), OutputDirError> {
    if resume || force {
        return Ok(());
    }
    let started = TRAINING_OUTPUTS.iter().find(|name| dir.join(name).exists());
    match started {
        Some(name) => Err(OutputDirError::Finished {
            dir: dir.to_path_buf(),
            what: format!(
                "holds a training run ({name} exists) that starting afresh would replace"
            ),
            hint: "continue it with --resume, replace it with --force, or choose another --out"
                .into(),
        }),
        None => Ok(()),
    }
}

/// What a training run leaves in its directory: removed by `--force` before starting afresh, so
/// no old checkpoint can be resumed into the new run.
const TRAINING_OUTPUTS: [&str; 3] = ["final", "checkpoints", "metrics.jsonl"];

/// Removes an earlier training run's checkpoints, metrics and final model from `dir`.
pub fn clear_training_run(dir: &Path) -> Result<(), OutputDirError> {
    for name in TRAINING_OUTPUTS {
        let path = dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if path.exists() {
            std::fs::remove_file(&path)
        } else {
            Ok(())
        };
        removed.map_err(|source| io(&path, source))?;
    }
    Ok(())
}

/// Refuses to write a model over a model directory that holds weights, unless `force`.
pub fn refuse_replacing_model(dir: &Path, force: bool) -> Result<(), OutputDirError> {
    let weights = ["model.safetensors", "model.safetensors.index.json"]
        .iter()
        .find(|name| dir.join(name).exists());
    match weights {
        Some(name) if !force => Err(OutputDirError::Finished {
            dir: dir.to_path_buf(),
            what: format!("already holds a model ({name})"),
            hint: "replace it with --force, or choose another --out".into(),
        }),
        _ => Ok(()),
    }
}

/// What a directory written before markers existed holds, judged by its files.
/// A hidden temporary name beside `path`, unique to this process and call
/// (`.NAME.PID-N.tmp`), to be renamed onto `path` once complete: two writers never share a
/// temporary file even if the lock was bypassed, and every cleanup that removes `.*.tmp`
/// files still finds it.
pub fn temp_path_for(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{}-{call}.tmp", std::process::id()))
}

fn infer_kind(dir: &Path) -> Option<OutputKind> {
    let has = |name: &str| dir.join(name).exists();
    if has("checkpoints") || has("final") || has("metrics.jsonl") {
        // A training run (SFT, GRPO or DPO): older files do not say which, so neither verb is refused here.
        return None;
    }
    if has("config.json") && (has("model.safetensors") || has("model.safetensors.index.json")) {
        return Some(OutputKind::Model);
    }
    if has("accepted") && has("rejected") {
        return Some(OutputKind::Filtered);
    }
    None
}

fn io(path: &Path, source: std::io::Error) -> OutputDirError {
    OutputDirError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}

/// This host's name (for the lock; "localhost" when unknown).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether process `pid` is alive on this host.
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Creates `dir/.distill.lock` exclusively, replacing a stale one once.
fn take_lock(dir: &Path) -> Result<PathBuf, OutputDirError> {
    let path = dir.join(LOCK_FILE);
    let host = host_name();
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                writeln!(file, "{} {host}", std::process::id()).map_err(|e| io(&path, e))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let mut fields = text.split_whitespace();
                let pid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let holder_host = fields.next().unwrap_or("").to_string();
                let same_host = holder_host == host;
                if pid != 0 && (!same_host || alive(pid)) {
                    return Err(OutputDirError::Busy {
                        dir: dir.to_path_buf(),
                        pid,
                        host: holder_host,
                    });
                }
                eprintln!(
                    "warning: {}: removing a stale lock (pid {pid} is not running)",
                    path.display()
                );
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
            Err(e) => return Err(io(&path, e)),
        }
    }
    Err(OutputDirError::Busy {
        dir: dir.to_path_buf(),
        pid: 0,
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_hidden_and_never_repeat() {
        let target = Path::new("/runs/out/manifest.json");
        let (a, b) = (temp_path_for(target), temp_path_for(target));
        assert_ne!(a, b);
        for temp in [a, b] {
            assert_eq!(temp.parent(), target.parent());
            let name = temp.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.starts_with(".manifest.json.") && name.ends_with(".tmp"),
                "{name}"
            );
        }
    }
}
