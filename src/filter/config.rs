//! [`FilterConfig`]: every knob of the filter stage, deserialisable from a TOML recipe
//! section or JSON, with documented defaults, its validation and its recipe hash.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::hashing::sha256_hex;
use crate::data::prompt_source::prompt_files;
use crate::data::shards::{read_manifest, DEFAULT_ROWS_PER_SHARD};
use crate::sandbox::SandboxSettings;
use crate::verify::{ReadabilityConfig, VerifyOptions};

use super::policy::Policy;
use super::FilterError;

/// Version of the filter's decision rules; part of the recipe hash, so outputs written by
/// other rules are not silently resumed.
pub const FILTER_VERSION: u32 = 1;

/// The filter stage's configuration. Every field has a default, so a partial table
/// deserialises; `input` and `out` must be set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Directory of `distill generate` shards (with `manifest.json`).
    pub input: PathBuf,
    /// Output directory: `accepted/`, `rejected/`, `pass_rates.parquet`, `report.json`,
    /// `report.md`.
    pub out: PathBuf,
    /// Which clean correct traces to keep. Default `all`.
    pub policy: Policy,
    /// Evaluation sets (MATH-500 / GSM8K / AIME24 / AMC23 files, or `hf:` Hub datasets) to
    /// decontaminate against. Default none.
    pub decontaminate: Vec<PathBuf>,
    /// Words per n-gram for decontamination. Default 8.
    pub ngram: usize,
    /// Lowest pass rate of an RL candidate problem (inclusive). Default 0.2.
    pub min_pass_rate: f64,
    /// Highest pass rate of an RL candidate problem (inclusive). Default 0.8.
    pub max_pass_rate: f64,
    /// Readability thresholds (see [`ReadabilityConfig`] for their defaults).
    pub readability: ReadabilityConfig,
    /// A percentage also equals its fraction (`10\%` ≡ `0.1`). Default false.
    pub percent_as_fraction: bool,
    /// Rows per output shard. Default 1000.
    pub rows_per_shard: usize,
    /// Replace outputs written with another configuration instead of refusing. Default false.
    pub force: bool,
    /// Show a progress bar on stderr (drawn only on a terminal). Default false.
    pub progress: bool,
    /// Memory for sorting the output rows, in MiB of trace text: an input larger than this is
    /// sorted in runs spilled to disk and merged (same outputs either way). Default 256.
    pub sort_buffer_mb: f64,
    /// The sandbox code problems are graded in (started only when the input has code
    /// problems). Default bubblewrap with default limits.
    pub sandbox: SandboxSettings,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            input: PathBuf::new(),
            out: PathBuf::new(),
            policy: Policy::All,
            decontaminate: Vec::new(),
            ngram: 8,
            min_pass_rate: 0.2,
            max_pass_rate: 0.8,
            readability: ReadabilityConfig::default(),
            percent_as_fraction: false,
            rows_per_shard: DEFAULT_ROWS_PER_SHARD,
            force: false,
            progress: false,
            sort_buffer_mb: 256.0,
            sandbox: SandboxSettings::default(),
        }
    }
}

impl FilterConfig {
    /// A default configuration reading `input` and writing `out`.
    pub fn new(input: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        FilterConfig {
            input: input.into(),
            out: out.into(),
            ..FilterConfig::default()
        }
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), FilterError> {
        let bad = |message: &str| Err(FilterError::Config(message.to_string()));
        if self.input.as_os_str().is_empty() {
            return bad("`input` (the directory of generated shards) is required");
        }
        if self.out.as_os_str().is_empty() {
            return bad("`out` (the output directory) is required");
        }
        if self.ngram == 0 {
            return bad("`ngram` must be at least 1");
        }
        let band = 0.0..=1.0;
        if !band.contains(&self.min_pass_rate)
            || !band.contains(&self.max_pass_rate)
            || self.min_pass_rate > self.max_pass_rate
        {
            return bad("the pass-rate band needs 0 ≤ min_pass_rate ≤ max_pass_rate ≤ 1");
        }
        if self.rows_per_shard == 0 {
            return bad("`rows_per_shard` must be at least 1");
        }
        if !(self.sort_buffer_mb.is_finite() && self.sort_buffer_mb > 0.0) {
            return bad("`sort_buffer_mb` must be a positive number of MiB");
        }
        let r = &self.readability;
        if !band.contains(&r.min_script_share) {
            return bad("`min_script_share` is a share of words: it must be within 0..=1");
        }
        if !band.contains(&r.max_ngram_repeat_ratio) {
            return bad("`max_ngram_repeat_ratio` must be within 0..=1");
        }
        if r.ngram_size == 0 {
            return bad("`ngram_size` must be at least 1");
        }
        if r.min_completion_tokens > r.max_completion_tokens {
            return bad("`min_completion_tokens` is above `max_completion_tokens`");
        }
        Ok(())
    }

    /// The answer-equivalence options.
    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            percent_as_fraction: self.percent_as_fraction,
            ..VerifyOptions::default()
        }
    }

    /// The hash recorded in the output manifests: SHA-256 of the rules version, every
    /// setting that changes the outputs, the input manifest's shard checksums and the
    /// evaluation files' bytes (not the paths, `force` or `progress`), and the sandbox settings
    /// when they are not the defaults.
    pub fn recipe_hash(&self) -> Result<String, FilterError> {
        let input = read_manifest(&self.input)?;
        let mut eval_files = Vec::new();
        for source in &self.decontaminate {
            for file in prompt_files(&source.to_string_lossy())? {
                let path = &file.path;
                let bytes = std::fs::read(path).map_err(|e| crate::data::DataError::io(path, e))?;
                eval_files.push(sha256_hex(&bytes));
            }
        }
        let mut description = json!({
            "filter_version": FILTER_VERSION,
            "policy": self.policy.to_string(),
            "ngram": self.ngram,
            "min_pass_rate": self.min_pass_rate,
            "max_pass_rate": self.max_pass_rate,
            "readability": self.readability,
            "percent_as_fraction": self.percent_as_fraction,
            "rows_per_shard": self.rows_per_shard,
            "input_shards": input.shards.iter().map(|s| &s.sha256).collect::<Vec<_>>(),
            "eval_files": eval_files,
        });
        if self.sandbox != SandboxSettings::default() {
            description["sandbox"] = json!(self.sandbox);
        }
        Ok(sha256_hex(description.to_string().as_bytes()))
    }
}
