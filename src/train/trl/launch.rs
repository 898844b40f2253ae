//! The TRL engine's launch: a readable `launch.sh` beside the settings JSON and the training
//! script, all in the run's `trl/` directory, so a user can rerun or edit it by hand; and running
//! it with the output shown as it comes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::TrlLaunch;
use crate::model::save::write_atomic;

/// The Python module the training scripts share (distill's schedule and weight-decay rule).
const SHARED_MODULE: (&str, &str) = ("distill_trl.py", include_str!("distill_trl.py"));

/// The files of one launch, in `dir`.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchFiles {
    /// The directory holding them (the run's `trl/`).
    pub dir: PathBuf,
    /// The shell script that runs `accelerate launch`.
    pub script: PathBuf,
}

/// Quotes `text` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The `accelerate launch` command line (without the training script and its argument); `cpu`
/// when the run is on the CPU.
pub fn accelerate_command(python: &str, launch: &TrlLaunch, cpu: bool) -> Vec<String> {
    let mut args: Vec<String> = vec![
        python.into(),
        "-m".into(),
        "accelerate.commands.launch".into(),
    ];
    if let Some(config) = &launch.accelerate_config {
        args.extend(["--config_file".into(), config.display().to_string()]);
    }
    let world = launch.world_size();
    args.extend([
        "--num_processes".into(),
        world.to_string(),
        "--num_machines".into(),
        launch.nnodes.unwrap_or(1).to_string(),
        "--machine_rank".into(),
        launch.node_rank.unwrap_or(0).to_string(),
    ]);
    if let Some((host, port)) = launch
        .rdzv_endpoint
        .as_deref()
        .and_then(|e| e.rsplit_once(':'))
    {
        args.extend([
            "--main_process_ip".into(),
            host.into(),
            "--main_process_port".into(),
            port.into(),
        ]);
    }
    // Several processes start through torchrun (`--multi_gpu`, which on the CPU gives DDP over gloo
    // since the script's settings say `use_cpu`); accelerate's `--cpu` launcher runs one process.
    if world > 1 && launch.accelerate_config.is_none() {
        args.push("--multi_gpu".into());
    } else if cpu {
        args.push("--cpu".into());
    }
    args
}

/// Writes `settings` (the JSON the script reads), the training script, the module it shares with
/// the other scripts and `launch.sh` into `dir`.
pub fn write_launch(
    dir: &Path,
    script_name: &str,
    script_source: &str,
    settings: &serde_json::Value,
    command: &[String],
) -> anyhow::Result<LaunchFiles> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let settings_name = script_name.replace(".py", ".json");
    write_atomic(
        &dir.join(&settings_name),
        serde_json::to_string_pretty(settings)?.as_bytes(),
    )?;
    write_atomic(&dir.join(script_name), script_source.as_bytes())?;
    write_atomic(&dir.join(SHARED_MODULE.0), SHARED_MODULE.1.as_bytes())?;
    let line = command
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" \\\n  ");
    let text = format!(
        "#!/usr/bin/env bash\n\
         # Written by distill (engine = \"trl\"). It trains with TRL under accelerate, reading the\n\
         # settings distill mapped from its config in {settings_name}; edit either and rerun by hand.\n\
         # Extra arguments go to the script: --resume continues from the newest checkpoint.\n\
         set -euo pipefail\n\
         cd \"$(dirname \"$0\")\"\n\
         exec {line} \\\n  {script_name} {settings_name} \"$@\"\n"
    );
    let script = dir.join("launch.sh");
    write_atomic(&script, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .with_context(|| script.display().to_string())?;
    }
    Ok(LaunchFiles {
        dir: dir.to_path_buf(),
        script,
    })
}

/// Runs `launch.sh` (with `--resume` when `resume`), its output going to the terminal.
pub fn run_launch(files: &LaunchFiles, resume: bool) -> anyhow::Result<()> {
    let mut command = Command::new("bash");
    command.arg(&files.script);
    if resume {
        command.arg("--resume");
    }
    let status = command
        .status()
        .with_context(|| format!("running {}", files.script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); its output is above, and it can be rerun by hand",
            files.script.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_carries_processes_nodes_and_config() {
        let launch = TrlLaunch {
            nproc_per_node: Some(8),
            nnodes: Some(2),
            node_rank: Some(1),
            rdzv_endpoint: Some("10.0.0.1:29500".into()),
            accelerate_config: Some("fsdp.yaml".into()),
            ..TrlLaunch::default()
        };
        let command = accelerate_command("py", &launch, false).join(" ");
        assert_eq!(
            command,
            "py -m accelerate.commands.launch --config_file fsdp.yaml --num_processes 16 \
             --num_machines 2 --machine_rank 1 --main_process_ip 10.0.0.1 --main_process_port 29500"
        );
        let cpu = TrlLaunch {
            nproc_per_node: Some(2),
            ..TrlLaunch::default()
        };
        let command = accelerate_command("py", &cpu, true).join(" ");
        assert!(
            command.ends_with("--num_processes 2 --num_machines 1 --machine_rank 0 --multi_gpu"),
            "{command}"
        );
        let one = accelerate_command("py", &TrlLaunch::default(), true).join(" ");
        assert!(
            one.ends_with("--num_processes 1 --num_machines 1 --machine_rank 0 --cpu"),
            "{one}"
        );
    }

    #[test]
    fn the_script_is_written_runnable_and_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_launch(
            dir.path(),
            "sft_train.py",
            "print('hi')\n",
            &serde_json::json!({"a": 1}),
            &["/my venv/python".into(), "-m".into(), "x".into()],
        )
        .unwrap();
        let text = std::fs::read_to_string(&files.script).unwrap();
        assert!(
            text.contains(
                "exec '/my venv/python' \\\n  -m \\\n  x \\\n  sft_train.py sft_train.json \"$@\""
            ),
            "{text}"
        );
        assert!(dir.path().join("sft_train.json").is_file());
        assert!(dir.path().join("sft_train.py").is_file());
        assert!(dir.path().join("distill_trl.py").is_file());
    }
}
