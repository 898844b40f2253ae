//! The bubblewrap command line of one run: what the program can see and do.
//!
//! Namespaces: PID (the program's tree dies with the run: `--die-with-parent`, and the
//! namespace's init takes every process with it when the program exits), network (only a
//! loopback that is down: no network at all), IPC, UTS and cgroup. Filesystem: `/usr` (and the
//! `/bin`, `/lib`… links or directories into it), the dynamic-linker cache and the Python
//! prefixes, all read-only; a fresh `/proc` and minimal `/dev`; a private size-capped tmpfs at
//! `/tmp`, which is the working directory. Nothing else of the host exists inside: no home, no
//! project directory, no other `/tmp` files. Inside, the program runs (via `setpriv`) as a fresh
//! unprivileged user id with no groups and no capabilities, so `RLIMIT_NPROC` is enforced and
//! root-only files would stay unreadable even if bound.

use std::path::Path;
use std::process::Command;

use super::python::Python;
use super::SandboxError;

/// The work directory inside the sandbox (a private tmpfs).
pub const WORK_DIR: &str = "/tmp";

/// Size of the private tmpfs in bytes.
const TMPFS_BYTES: u64 = 64 * 1024 * 1024;

/// Top-level directories that are links into `/usr` on merged-/usr systems, or real
/// directories of system binaries and libraries elsewhere.
const SYSTEM_DIRS: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// Files of `/etc` the interpreter may need (the dynamic linker's cache, time zone).
const ETC_FILES: [&str; 3] = ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"];

/// Checks that `bwrap` and `setpriv` can be run, by root (each run switches to its own user id).
pub fn check_available() -> Result<(), SandboxError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(SandboxError::Unavailable(
            "the bubblewrap sandbox gives every run its own unprivileged user id, which needs root; run distill as root (e.g. in a container)".into(),
        ));
    }
    for (tool, package) in [("bwrap", "bubblewrap"), ("setpriv", "util-linux")] {
        let status = Command::new(tool).arg("--version").output().map_err(|e| {
            SandboxError::Unavailable(format!(
                "`{tool}` cannot be run ({e}); it comes with the `{package}` package"
            ))
        })?;
        if !status.status.success() {
            return Err(SandboxError::Unavailable(format!(
                "`{tool} --version` failed ({})",
                status.status
            )));
        }
    }
    Ok(())
}

/// The arguments after `bwrap` up to (not including) the interpreter's command line: run as
/// user `uid`.
pub fn arguments(python: &Python, uid: u32) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "HOME",
        WORK_DIR,
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "PYTHONDONTWRITEBYTECODE",
        "1",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    .map(String::from)
    .to_vec();
    for dir in SYSTEM_DIRS {
        let path = Path::new(dir);
        match std::fs::read_link(path) {
            Ok(target) => args.extend([
                "--symlink".into(),
                target.to_string_lossy().into_owned(),
                dir.into(),
            ]),
            Err(_) if path.is_dir() => args.extend(["--ro-bind".into(), dir.into(), dir.into()]),
            Err(_) => {}
        }
    }
    for file in ETC_FILES.iter().filter(|f| Path::new(f).exists()) {
        args.extend(["--ro-bind".into(), file.to_string(), file.to_string()]);
    }
    for prefix in &python.prefixes {
        if !prefix.starts_with("/usr") {
            let prefix = prefix.to_string_lossy().into_owned();
            args.extend(["--ro-bind".into(), prefix.clone(), prefix]);
        }
    }
    args.extend(
        [
            "--size",
            &TMPFS_BYTES.to_string(),
            "--perms",
            "1777",
            "--tmpfs",
            WORK_DIR,
            "--chdir",
            WORK_DIR,
            "setpriv",
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
        .map(String::from),
    );
    args
}
