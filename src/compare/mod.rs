//! `distill compare`: the distillation-vs-RL report. For every labelled run (e.g. `base`, `sft`,
//! `grpo`, `grpo_after_sft`) it gathers the evaluation directories (several = several eval seeds),
//! bootstraps 95% intervals of pass@1 and cons@k over problems and seeds, estimates training
//! compute (6·N·tokens for updates, 2·N·tokens for forward-only passes; teacher data generation
//! separately),
//! and states the finding only when the intervals support it (see [`finding`]).

pub mod bootstrap;
pub mod finding;
pub mod plots;
pub mod report;
pub mod runs;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use bootstrap::{bootstrap_mean, paired_difference};
use report::{CompareReport, RunReport};
use runs::{data_generation_flops, load_eval, load_train, train_dir_of_model, EvalRun, TrainRun};

/// One labelled run of the comparison (a `[[compare.runs]]` recipe entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The label: `base`, `sft`, `grpo`, `grpo_after_sft`, … (`sft` and `grpo` are compared).
    pub label: String,
    /// Evaluation directories (`distill eval` outputs); several = several eval seeds.
    pub eval: Vec<PathBuf>,
    /// Training run directories, summed when several (e.g. SFT then GRPO). Empty: the run whose
    /// `final/` (or directory) the evaluated model is, when there is one.
    #[serde(default)]
    pub train: Vec<PathBuf>,
    /// A teacher data-generation `summary.json` (reported as a separate compute column).
    #[serde(default)]
    pub data_generation: Option<PathBuf>,
}

/// Every knob of a comparison (a `[compare]` recipe section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    /// The runs, in report order.
    pub runs: Vec<RunSpec>,
    /// Output directory (`report.md`, `report.json`, plots).
    pub out: PathBuf,
    /// Seed of the bootstrap.
    #[serde(default)]
    pub seed: u64,
    /// Bootstrap replicates.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
}

fn default_bootstrap() -> usize {
    1000
}

/// Per-problem values `[seed][problem]` of pass@1 and of cons@k.
type SeedTables = (Vec<Vec<f64>>, Vec<Vec<f64>>);

/// `(pass@1, cons@k)` per-problem tables of a label's eval runs, aligned on the first run's
/// problem order; every run must cover the same problems.
fn seed_tables(label: &str, evals: &[EvalRun]) -> anyhow::Result<SeedTables> {
    let Some(first) = evals.first() else {
        bail!("run `{label}` has no evaluation directory");
    };
    let (mut pass, mut cons) = (Vec::new(), Vec::new());
    for run in evals {
        let index: BTreeMap<&str, usize> = run
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        if run.ids.len() != first.ids.len() {
            bail!(
                "run `{label}`: {} has {} problems but {} has {}; eval seeds of one run must cover the same problems",
                run.dir.display(), run.ids.len(), first.dir.display(), first.ids.len()
            );
        }
        let order = first
            .ids
            .iter()
            .map(|id| {
                index.get(id.as_str()).copied().with_context(|| {
                    format!(
                        "run `{label}`: problem {id} is missing from {}",
                        run.dir.display()
                    )
                })
            })
            .collect::<anyhow::Result<Vec<usize>>>()?;
        pass.push(order.iter().map(|&i| run.pass_at_1[i]).collect());
        cons.push(order.iter().map(|&i| run.cons_at_k[i]).collect());
    }
    Ok((pass, cons))
}

/// Builds the report of `config` and writes `report.md`, `report.json` and the plots into
/// `config.out`.
pub fn run_compare(config: &CompareConfig) -> anyhow::Result<CompareReport> {
    if config.runs.is_empty() {
        bail!("compare: give at least one --run label=DIR");
    }
    let _claim =
        crate::output_dir::OutputDir::claim(&config.out, crate::output_dir::OutputKind::Report)?;
    for (i, run) in config.runs.iter().enumerate() {
        if config.runs[..i].iter().any(|r| r.label == run.label) {
            bail!("compare: label `{}` is given twice", run.label);
        }
    }
    std::fs::create_dir_all(&config.out).with_context(|| config.out.display().to_string())?;
    let mut runs = Vec::new();
    let mut tables = BTreeMap::new();
    let mut curves = Vec::new();
    for (index, spec) in config.runs.iter().enumerate() {
        let label = &spec.label;
        let evals = spec
            .eval
            .iter()
            .map(|d| load_eval(d))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (pass, cons) = seed_tables(label, &evals)?;
        let seed = config.seed.wrapping_add(index as u64);
        let interval = |table: &[Vec<f64>]| {
            bootstrap_mean(table, config.bootstrap, seed).with_context(|| {
                format!("run `{label}`: its eval directories cover different numbers of problems")
            })
        };
        let train_dirs: Vec<PathBuf> = if spec.train.is_empty() {
            {
                let mut found: Vec<PathBuf> = evals
                    .iter()
                    .filter_map(|e| train_dir_of_model(&e.summary.model))
                    .collect();
                found.dedup();
                found
            }
        } else {
            spec.train.clone()
        };
        let trains = train_dirs
            .iter()
            .map(|d| load_train(d))
            .collect::<anyhow::Result<Vec<TrainRun>>>()?;
        let data_generation_flops = spec
            .data_generation
            .as_deref()
            .map(data_generation_flops)
            .transpose()?;
        for train in &trains {
            curves.push(plots::Curve {
                label: label.clone(),
                kind: train.kind,
                points: train.curve.clone(),
            });
        }
        runs.push(RunReport::new(
            label,
            &evals,
            interval(&pass)?,
            interval(&cons)?,
            &trains,
            data_generation_flops,
        ));
        tables.insert(label.clone(), (evals[0].ids.clone(), pass));
    }
    let difference = match (tables.get("sft"), tables.get("grpo")) {
        (Some((sft_ids, sft)), Some((grpo_ids, grpo))) if sft_ids == grpo_ids => {
            paired_difference(sft, grpo, config.bootstrap, config.seed ^ 0xD1FF)
        }
        _ => None,
    };
    // Every other run against `sft` on the same problems (e.g. SFT → DPO against SFT alone).
    let against_sft = match tables.get("sft") {
        Some((sft_ids, sft)) => runs
            .iter()
            .filter(|run| run.label != "sft")
            .filter_map(|run| {
                let (ids, table) = tables.get(&run.label)?;
                let difference = (ids == sft_ids).then(|| {
                    paired_difference(table, sft, config.bootstrap, config.seed ^ 0x5F7)
                })??;
                Some(report::AgainstSft {
                    label: run.label.clone(),
                    difference,
                })
            })
            .collect(),
        None => Vec::new(),
    };
    let report = CompareReport {
        finding: finding::decide(&runs, difference),
        against_sft,
        runs,
        seed: config.seed,
        bootstrap: config.bootstrap,
    };
    plots::accuracy_vs_compute(&config.out, &report.runs)?;
    plots::training_curves(&config.out, &curves)?;
    crate::model::save::write_atomic(
        &config.out.join("report.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    crate::model::save::write_atomic(&config.out.join("report.md"), report.markdown().as_bytes())?;
    Ok(report)
}
