//! `distill filter`: the command-line face of [`crate::filter::run_filter`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::sandbox_args::SandboxArgs;
use crate::filter::{run_filter, FilterConfig, FilterSummary, Policy};
use crate::sandbox::SandboxSettings;
use crate::verify::ReadabilityConfig;

/// `distill filter`: keep traces whose final answer is verified correct and that are readable.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Directory of `distill generate` shards (with manifest.json).
    #[arg(long)]
    pub input: PathBuf,
    /// Output directory (accepted/, rejected/, pass_rates.parquet, report.json, report.md).
    #[arg(long)]
    pub out: PathBuf,
    /// `all` (every clean correct trace) or `shortest:K` (the K shortest per problem).
    #[arg(long, default_value = "all")]
    pub policy: Policy,
    /// An evaluation set (MATH-500 / GSM8K / AIME24 / AMC23 file) to decontaminate against;
    /// repeatable.
    #[arg(long)]
    pub decontaminate: Vec<PathBuf>,
    /// Words per n-gram for decontamination.
    #[arg(long, default_value_t = 8)]
    pub ngram: usize,
    /// Lowest pass rate of an RL candidate problem.
    #[arg(long, default_value_t = 0.2)]
    pub min_pass_rate: f64,
    /// Highest pass rate of an RL candidate problem.
    #[arg(long, default_value_t = 0.8)]
    pub max_pass_rate: f64,
    /// TOML file of readability thresholds (the fields of ReadabilityConfig; missing ones
    /// keep their defaults). The flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Minimum share of reasoning words in the problem's script (default 0.95).
    #[arg(long)]
    pub min_script_share: Option<f64>,
    /// Maximum word 4-gram repetition ratio (default 0.5).
    #[arg(long)]
    pub max_ngram_repeat_ratio: Option<f64>,
    /// Fewest completion tokens (default 16).
    #[arg(long)]
    pub min_completion_tokens: Option<usize>,
    /// Most completion tokens (default 32768).
    #[arg(long)]
    pub max_completion_tokens: Option<usize>,
    /// Longest paragraph in characters (default 3000).
    #[arg(long)]
    pub max_paragraph_chars: Option<usize>,
    /// Accept traces with ``` code blocks.
    #[arg(long)]
    pub allow_code_blocks: bool,
    /// The chat template opened `<think>` in the prompt: generations hold only `</think>`.
    #[arg(long)]
    pub think_prefilled: bool,
    /// Rows per output shard.
    #[arg(long, default_value_t = 1000)]
    pub rows_per_shard: usize,
    /// Replace outputs written with another configuration instead of refusing.
    #[arg(long)]
    pub force: bool,
    /// Memory for sorting the output, MiB of trace text; larger inputs spill sorted runs to disk.
    #[arg(long, default_value_t = 256.0)]
    pub sort_buffer_mb: f64,
    /// How code problems' programs are run.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

impl FilterArgs {
    /// The readability thresholds: the `--config` file, then the flags.
    fn readability(&self) -> anyhow::Result<ReadabilityConfig> {
        let mut config = match &self.config {
            Some(path) => read_readability(path)?,
            None => ReadabilityConfig::default(),
        };
        if let Some(value) = self.min_script_share {
            config.min_script_share = value;
        }
        if let Some(value) = self.max_ngram_repeat_ratio {
            config.max_ngram_repeat_ratio = value;
        }
        if let Some(value) = self.min_completion_tokens {
            config.min_completion_tokens = value;
        }
        if let Some(value) = self.max_completion_tokens {
            config.max_completion_tokens = value;
        }
        if let Some(value) = self.max_paragraph_chars {
            config.max_paragraph_chars = value;
        }
        if self.allow_code_blocks {
            config.reject_code_blocks = false;
        }
        if self.think_prefilled {
            config.think_prefilled = true;
        }
        Ok(config)
    }

    /// The library configuration these arguments describe.
    pub fn to_config(&self) -> anyhow::Result<FilterConfig> {
        Ok(FilterConfig {
            policy: self.policy,
            decontaminate: self.decontaminate.clone(),
            ngram: self.ngram,
            min_pass_rate: self.min_pass_rate,
            max_pass_rate: self.max_pass_rate,
            readability: self.readability()?,
            rows_per_shard: self.rows_per_shard,
            force: self.force,
            progress: true,
            sort_buffer_mb: self.sort_buffer_mb,
            sandbox: self.sandbox.apply(SandboxSettings::default()),
            ..FilterConfig::new(&self.input, &self.out)
        })
    }
}

/// Reads a readability TOML file: a flat table of [`ReadabilityConfig`] fields; an unknown
/// key (a typo) is an error naming it.
fn read_readability(path: &Path) -> anyhow::Result<ReadabilityConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?;
    let known = toml::Table::try_from(ReadabilityConfig::default())?;
    if let Some(key) = table.keys().find(|key| !known.contains_key(*key)) {
        let names: Vec<&str> = known.keys().map(String::as_str).collect();
        anyhow::bail!(
            "{}: unknown readability setting `{key}` (known: {})",
            path.display(),
            names.join(", ")
        );
    }
    table
        .try_into()
        .with_context(|| format!("{}: bad readability setting", path.display()))
}

/// Runs the filter and prints a short summary on stdout.
pub fn run(args: FilterArgs) -> anyhow::Result<()> {
    crate::runtime::tune_malloc_for_streaming();
    let config = args.to_config()?;
    let summary = run_filter(&config)?;
    print!("{}", human_summary(&summary, &args.out));
    Ok(())
}

/// A few lines for people: totals, the non-zero reasons, where the outputs are.
fn human_summary(summary: &FilterSummary, out: &Path) -> String {
    let mut text = format!(
        "filtered {} traces of {} problems: {} accepted ({:.1}%), {} rejected\n",
        summary.traces,
        summary.problems,
        summary.accepted,
        100.0 * summary.acceptance_rate,
        summary.rejected
    );
    let reasons = summary.nonzero_reasons();
    if !reasons.is_empty() {
        text.push_str(&format!("rejections: {}\n", reasons.join(", ")));
    }
    text.push_str(&format!(
        "rl candidates: {} problems; contaminated: {}\nwrote {}/{{accepted,rejected,pass_rates.parquet,report.json,report.md}}\n",
        summary.rl_candidates,
        summary.contaminated_problems,
        out.display()
    ));
    text
}
