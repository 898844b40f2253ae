//! Finding the Python 3 interpreter programs run with: `python3` on `PATH`, resolved to the real
//! binary (a pyenv shim is a shell script that needs the home directory, which the sandbox hides)
//! and the installation prefixes the sandbox binds read-only.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::SandboxError;

/// A resolved Python 3 installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Python {
    /// The real interpreter binary (`sys.executable`).
    pub executable: PathBuf,
    /// `sys.prefix` and `sys.base_prefix` (once when equal): the directories the interpreter
    /// needs, bound read-only inside the sandbox when they are outside `/usr`.
    pub prefixes: Vec<PathBuf>,
}

impl Python {
    /// Finds `python3` on `PATH` and asks it (a trusted, argument-free query) where it lives.
    pub fn find() -> Result<Self, SandboxError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let candidate = std::env::split_paths(&path)
            .map(|dir| dir.join("python3"))
            .find(|file| is_executable(file))
            .ok_or_else(|| SandboxError::NoPython("`python3` is not on PATH".into()))?;
        let output = Command::new(&candidate)
            .args([
                "-I",
                "-c",
                "import sys; print(sys.executable); print(sys.prefix); print(sys.base_prefix); print(sys.version_info[0])",
            ])
            .output()
            .map_err(|e| SandboxError::NoPython(format!("{}: {e}", candidate.display())))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = text.lines().collect();
        if !output.status.success() || lines.len() != 4 || lines[3] != "3" {
            return Err(SandboxError::NoPython(format!(
                "{} is not a working Python 3 ({}{})",
                candidate.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let executable = std::fs::canonicalize(lines[0])
            .map_err(|e| SandboxError::NoPython(format!("{}: {e}", lines[0])))?;
        let mut prefixes: Vec<PathBuf> = Vec::new();
        for prefix in [lines[1], lines[2]] {
            let prefix = std::fs::canonicalize(prefix)
                .map_err(|e| SandboxError::NoPython(format!("{prefix}: {e}")))?;
            if !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        Ok(Python {
            executable,
            prefixes,
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
