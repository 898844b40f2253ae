//! Starting and supervising one sandboxed process: limits applied in the child before exec,
//! its own session (so the whole group can be killed), death with the parent, stdin written
//! and closed, stdout/stderr and the report channel (fd 3) read concurrently with a byte cap
//! each, and a wall clock after which the whole group is killed.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Limits, SandboxError};

/// The most runs one process supervises at once (each gets its own user id, see
/// [`next_run_uid`]).
pub const MAX_CONCURRENCY: usize = 128;

/// The file descriptor of the report channel inside the program.
pub const REPORT_FD: i32 = 3;

/// Bytes of the report channel kept.
const REPORT_BYTES: usize = 1024 * 1024;

/// How long the output readers may still take once the process has exited and its group has
/// been killed (a process that escaped the group may hold a pipe open: it is then abandoned).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Exited with this status code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// Everything observed of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// How the supervised process ended.
    pub exit: ExitKind,
    /// Whether the wall clock ran out (the group was killed).
    pub timed_out: bool,
    /// The first [`Limits::output_bytes`] of stdout.
    pub stdout: Vec<u8>,
    /// The first [`Limits::output_bytes`] of stderr.
    pub stderr: Vec<u8>,
    /// Total bytes written to stdout (kept or not).
    pub stdout_total: u64,
    /// What the program wrote to the report channel (fd 3), capped at 1 MiB.
    pub report: Vec<u8>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

/// A fresh user id for a run: distinct for every live run of this process and, through the
/// process id, from other distill processes', so each run's `RLIMIT_NPROC` counts only its
/// own processes.
pub fn next_run_uid() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let run = COUNTER.fetch_add(1, Ordering::Relaxed) % MAX_CONCURRENCY as u32;
    0x4000_0000 + ((std::process::id() & 0x3f_ffff) << 7) + run
}

/// Captured bytes of one stream.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    total: u64,
}

/// Reads `source` to its end on a thread, keeping the first `cap` bytes.
fn capture(
    mut source: impl Read + Send + 'static,
    cap: usize,
    done: mpsc::Sender<()>,
) -> Arc<Mutex<Captured>> {
    let captured = Arc::new(Mutex::new(Captured::default()));
    let sink = Arc::clone(&captured);
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(read) = source.read(&mut buffer) {
            if read == 0 {
                break;
            }
            let mut captured = sink.lock().unwrap_or_else(|e| e.into_inner());
            let room = cap.saturating_sub(captured.kept.len()).min(read);
            captured.kept.extend_from_slice(&buffer[..room]);
            captured.total += read as u64;
        }
        let _ = done.send(());
    });
    captured
}

fn take(captured: &Arc<Mutex<Captured>>) -> (Vec<u8>, u64) {
    let mut captured = captured.lock().unwrap_or_else(|e| e.into_inner());
    (std::mem::take(&mut captured.kept), captured.total)
}

/// A pipe whose both ends close on exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError::Run(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs `program ARGS…` with `limits`, feeding `stdin`; `run_uid` names the user id the run's
/// processes get (its leftovers are killed afterwards), `None` when they keep the caller's.
pub fn run(
    program: &str,
    args: &[String],
    stdin: &[u8],
    limits: &Limits,
    run_uid: Option<u32>,
) -> Result<RunOutcome, SandboxError> {
    let (report_read, report_write) = pipe()?;
    let report_raw = report_write.as_raw_fd();
    let rlimits = limits.rlimits();
    let work = WorkDir::create()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", work.path())
        .env("LANG", "C.UTF-8")
        .current_dir(work.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only makes async-signal-safe system calls on values computed before
    // the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            for (resource, soft, hard) in rlimits {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if report_raw == REPORT_FD {
                libc::fcntl(REPORT_FD, libc::F_SETFD, 0);
            } else if libc::dup2(report_raw, REPORT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| SandboxError::Run(format!("cannot start `{program}`: {e}")))?;
    drop(report_write);
    let group = child.id() as i32;
    let (done_tx, done_rx) = mpsc::channel();
    let stdout = capture(
        child.stdout.take().expect("stdout is piped"),
        limits.output_bytes,
        done_tx.clone(),
    );
    let stderr = capture(
        child.stderr.take().expect("stderr is piped"),
        limits.output_bytes,
        done_tx.clone(),
    );
    let report = capture(std::fs::File::from(report_read), REPORT_BYTES, done_tx);
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    std::thread::spawn(move || {
        // A program that exits without reading its input closes the pipe: not an error.
        let _ = input.write_all(&stdin);
    });

    let deadline = started + limits.wall();
    let mut pause = Duration::from_millis(1);
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status, false),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(group);
                let _ = child.kill();
                let status = child
                    .wait()
                    .map_err(|e| SandboxError::Run(format!("wait: {e}")))?;
                break (status, true);
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(SandboxError::Run(format!("wait: {e}"))),
        }
    };
    let elapsed = started.elapsed();
    kill_group(group);
    if let Some(uid) = run_uid {
        kill_user(uid);
    }
    let grace = Instant::now() + DRAIN_GRACE;
    for _ in 0..3 {
        let left = grace.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let exit = match (status.code(), status.signal()) {
        (Some(code), _) => ExitKind::Exited(code),
        (None, Some(signal)) => ExitKind::Signaled(signal),
        (None, None) => ExitKind::Exited(-1),
    };
    let (stdout, stdout_total) = take(&stdout);
    let (stderr, _) = take(&stderr);
    let (report, _) = take(&report);
    Ok(RunOutcome {
        exit,
        timed_out,
        stdout,
        stderr,
        stdout_total,
        report,
        elapsed,
    })
}

/// A fresh empty directory the process starts in (inside bubblewrap it is not visible: the
/// program works in its private tmpfs), removed when dropped.
struct WorkDir(std::path::PathBuf);

impl WorkDir {
    fn create() -> Result<Self, SandboxError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "distill-sandbox-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)
            .map_err(|e| SandboxError::Run(format!("work directory {}: {e}", path.display())))?;
        Ok(WorkDir(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills every process left in the run's process group.
fn kill_group(group: i32) {
    // SAFETY: kill has no memory-safety preconditions; the group is the child's own session.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// Kills every process of the run's user id (belt and braces: the PID namespace already took
/// them down when its init exited).
fn kill_user(uid: u32) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let owned = std::fs::metadata(entry.path())
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid);
        if owned {
            // SAFETY: as above; the process belongs to the run's private user id.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
