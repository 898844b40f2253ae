//! Finding the Python side of the TRL engine: the interpreter (the launch settings' `python`, else
//! `DISTILL_TRL_PYTHON`, else `python3`) and the versions of the packages it needs, so a missing
//! package fails at start with the command that installs it, not minutes into a launch.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context};

/// The packages the TRL engine imports.
pub const PACKAGES: [&str; 5] = ["torch", "transformers", "trl", "accelerate", "datasets"];

/// The environment variable naming the interpreter when the launch settings do not.
pub const PYTHON_ENV: &str = "DISTILL_TRL_PYTHON";

/// A found interpreter and the versions of [`PACKAGES`] it has.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonEnv {
    /// The interpreter, as it is run.
    pub python: String,
    /// Package → version.
    pub versions: BTreeMap<String, String>,
}

/// The interpreter to use: `configured`, else `$DISTILL_TRL_PYTHON`, else `python3`.
pub fn interpreter(configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var(PYTHON_ENV).ok().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| "python3".to_string())
}

/// Prints one `name version` line per package, `name -` for a missing one.
const PROBE: &str = r#"
import importlib.metadata as m, sys
for name in sys.argv[1:]:
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "-")
"#;

/// Runs `python` to read the versions of [`PACKAGES`]; a missing interpreter or package is an
/// error that says how to install it.
pub fn detect(python: &str) -> anyhow::Result<PythonEnv> {
    let output = Command::new(python)
        .arg("-c")
        .arg(PROBE)
        .args(PACKAGES)
        .output()
        .with_context(|| {
            format!(
                "engine trl: cannot run the Python interpreter {python:?}; set trl.python (or \
                 --python, or {PYTHON_ENV}) to one with {}",
                PACKAGES.join(", ")
            )
        })?;
    if !output.status.success() {
        bail!(
            "engine trl: {python} failed to report its packages: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let versions = parse_probe(&String::from_utf8_lossy(&output.stdout));
    let missing = missing_packages(&versions);
    if !missing.is_empty() {
        bail!(
            "engine trl: {python} lacks {}; install with: {}",
            missing.join(", "),
            install_command(python, &missing)
        );
    }
    Ok(PythonEnv {
        python: python.to_string(),
        versions,
    })
}

/// Package → version from the probe's output (missing packages left out).
fn parse_probe(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, version)| *version != "-")
        .map(|(name, version)| (name.to_string(), version.trim().to_string()))
        .collect()
}

/// The packages of [`PACKAGES`] that `versions` lacks, in order.
fn missing_packages(versions: &BTreeMap<String, String>) -> Vec<&'static str> {
    PACKAGES
        .into_iter()
        .filter(|name| !versions.contains_key(*name))
        .collect()
}

/// The command that installs `missing` into `python`'s environment.
pub fn install_command(python: &str, missing: &[&str]) -> String {
    format!("{python} -m pip install {}", missing.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_package_is_named_with_its_install_command() {
        let versions = parse_probe("torch 2.5.1\ntransformers 4.57.0\ntrl -\naccelerate 1.2.0\n");
        assert_eq!(versions["torch"], "2.5.1");
        let missing = missing_packages(&versions);
        assert_eq!(missing, ["trl", "datasets"]);
        assert_eq!(
            install_command("/venv/bin/python", &missing),
            "/venv/bin/python -m pip install trl datasets"
        );
    }

    #[test]
    fn a_missing_interpreter_says_what_to_set() {
        let err = detect("/nonexistent/python-for-distill").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("trl.python"), "{text}");
        assert!(text.contains(PYTHON_ENV), "{text}");
    }
}
