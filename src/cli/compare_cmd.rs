//! `distill compare --run base=DIR --run sft=DIR --run grpo=DIR --out DIR`: the distillation-vs-RL
//! report.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::compare::{run_compare, CompareConfig, RunSpec};

/// `distill compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// `label=EVAL_DIR` (repeat; a label given several times has several eval seeds).
    #[arg(long = "run", required = true)]
    pub runs: Vec<String>,
    /// `label=TRAIN_DIR`: the training run behind a label (repeat to sum, e.g. SFT then GRPO).
    /// Default: the run whose `final/` the evaluated model is.
    #[arg(long = "train")]
    pub train: Vec<String>,
    /// `label=SUMMARY_JSON`: the teacher data-generation summary behind a label.
    #[arg(long = "data-gen")]
    pub data_generation: Vec<String>,
    /// Output directory (report.md, report.json, plots).
    #[arg(long, default_value = "compare")]
    pub out: PathBuf,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap replicates.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
}

fn split(flag: &str, value: &str) -> anyhow::Result<(String, PathBuf)> {
    let (label, path) = value
        .split_once('=')
        .filter(|(l, p)| !l.is_empty() && !p.is_empty())
        .with_context(|| format!("--{flag} {value}: expected label=PATH"))?;
    Ok((label.to_string(), PathBuf::from(path)))
}

impl CompareArgs {
    /// The comparison's configuration.
    pub fn config(&self) -> anyhow::Result<CompareConfig> {
        let mut runs: Vec<RunSpec> = Vec::new();
        for value in &self.runs {
            let (label, dir) = split("run", value)?;
            match runs.iter_mut().find(|r| r.label == label) {
                Some(run) => run.eval.push(dir),
                None => runs.push(RunSpec {
                    label,
                    eval: vec![dir],
                    train: Vec::new(),
                    data_generation: None,
                }),
            }
        }
        let find = |flag: &str, value: &str| -> anyhow::Result<(usize, PathBuf)> {
            let (label, path) = split(flag, value)?;
            let index = runs
                .iter()
                .position(|r| r.label == label)
                .with_context(|| format!("--{flag} {value}: no --run {label}=DIR"))?;
            Ok((index, path))
        };
        let mut trains = Vec::new();
        for value in &self.train {
            trains.push(find("train", value)?);
        }
        let mut generations = Vec::new();
        for value in &self.data_generation {
            generations.push(find("data-gen", value)?);
        }
        for (index, path) in trains {
            runs[index].train.push(path);
        }
        for (index, path) in generations {
            runs[index].data_generation = Some(path);
        }
        Ok(CompareConfig {
            runs,
            out: self.out.clone(),
            seed: self.seed,
            bootstrap: self.bootstrap,
        })
    }
}

/// Runs `distill compare` and prints the finding.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let report = run_compare(&args.config()?)?;
    println!("{}", report.finding.sentence);
    println!("report: {}", args.out.join("report.md").display());
    Ok(())
}
