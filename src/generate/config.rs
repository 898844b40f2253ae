//! The settings of one `distill generate` run ([`GenerateConfig`], deserialisable so a TOML
//! recipe section can hold it) and the recipe hash that ties an output directory to them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::hashing::sha256_hex;
use crate::data::schema::DEFAULT_INSTRUCTION;
use crate::data::shards::DEFAULT_ROWS_PER_SHARD;
use crate::teacher::openai::ApiKind;

/// Everything `distill generate` needs. Field defaults are the CLI's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// A `.jsonl`/`.parquet` prompt file, or a synthetic spec such as
    /// `synth:arith:difficulty=3:count=200:seed=1` (see [`crate::data::prompt_source::SynthSpec`]).
    pub prompts: String,
    /// Built-in adapter of the prompt file (`gsm8k`, `math500`, `aime24`, `amc23`); detected
    /// from the file when neither this nor `problem_column` is given.
    #[serde(default)]
    pub adapter: Option<String>,
    /// Column holding the problem text (a custom layout; needs `answer_column`).
    #[serde(default)]
    pub problem_column: Option<String>,
    /// Column holding the gold answer (custom layout).
    #[serde(default)]
    pub answer_column: Option<String>,
    /// Column holding a stable id (custom layout; content-hash ids without it).
    #[serde(default)]
    pub id_column: Option<String>,
    /// Take only the first `limit` problems of the set (after `exclude`, before the worker split).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Prompt sources (files or `synth:` specs) whose problems are left out of the set, matched by
    /// exact problem text: decontamination against held-out sets (`distill run` adds its eval set).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Which model samples.
    pub teacher: TeacherConfig,
    /// A system turn put before every problem.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Appended to every problem after a blank line; empty to disable.
    #[serde(default = "default_instruction")]
    pub instruction: String,
    /// Sampling temperature (DeepSeek recommends 0.6 for R1).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Nucleus threshold.
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    /// Keep only the k most likely tokens (0 = off; local teacher only).
    #[serde(default)]
    pub top_k: usize,
    /// Samples per problem.
    #[serde(default = "default_n")]
    pub n: usize,
    /// Longest completion, in tokens.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// The run seed; each problem's seed derives from it and the problem id.
    #[serde(default)]
    pub seed: u64,
    /// Output directory (a worker of a split run writes `out/worker-II-of-NN`).
    pub out: PathBuf,
    /// Rows per Parquet shard.
    #[serde(default = "default_rows_per_shard")]
    pub rows_per_shard: usize,
    /// Number of parallel workers the prompts are split across.
    #[serde(default = "default_num_shards")]
    pub num_shards: u32,
    /// This worker's index (`0..num_shards`).
    #[serde(default)]
    pub shard_index: u32,
    /// Resume into a directory written with a different config (its rows are kept).
    #[serde(default)]
    pub force: bool,
    /// Before resuming, drop listed shards that are missing or damaged from the manifest
    /// (their files move to `damaged/`) so their rows are sampled again.
    #[serde(default)]
    pub repair: bool,
    /// Write buffered rows as a (short) shard at least this often, in seconds, so a crash
    /// loses little work with a slow teacher; 0 = only full shards.
    #[serde(default = "default_flush_every_secs")]
    pub flush_every_secs: u64,
    /// Show a progress bar on stderr (only drawn when stderr is a terminal).
    #[serde(default = "default_true")]
    pub progress: bool,
}

/// Which teacher to run, with its own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TeacherConfig {
    /// Our decoder in this process.
    Local {
        /// Model directory, hub id or llama2.c `.bin`.
        model: String,
        /// `cpu` or `cuda:N`.
        #[serde(default = "default_device")]
        device: String,
        /// Computation dtype: `f32`, `bf16` or `f16`.
        #[serde(default = "default_dtype")]
        dtype: String,
        /// Prompts per generation call.
        #[serde(default = "default_batch_size")]
        batch_size: usize,
    },
    /// An OpenAI-compatible HTTP endpoint.
    Openai {
        /// Base URL or full endpoint URL.
        endpoint: String,
        /// The `model` of every request.
        model: String,
        /// `chat` or `completions`.
        #[serde(default = "default_api")]
        api: ApiKind,
        /// Environment variable holding the API key.
        #[serde(default)]
        api_key_env: Option<String>,
        /// Tokenizer (model directory, hub id or llama2.c `.bin`) whose chat template renders
        /// prompts; required for `completions`, optional for `chat` (then the `prompt` column
        /// holds the JSON messages sent).
        #[serde(default)]
        tokenizer: Option<String>,
        /// Requests in flight at once.
        #[serde(default = "default_concurrency")]
        concurrency: usize,
        /// Whole-request timeout in seconds.
        #[serde(default = "default_timeout_secs")]
        timeout_secs: f64,
        /// Retries of a failed request (429, 5xx, connection errors, timeouts).
        #[serde(default = "default_max_retries")]
        max_retries: u32,
        /// Upper bound of the first retry's wait, in seconds (doubles per retry, capped at 30 s).
        #[serde(default = "default_backoff_secs")]
        backoff_secs: f64,
    },
}

fn default_instruction() -> String {
    DEFAULT_INSTRUCTION.to_string()
}
fn default_temperature() -> f64 {
    0.6
}
fn default_top_p() -> f64 {
    0.95
}
fn default_n() -> usize {
    1
}
fn default_max_new_tokens() -> usize {
    4096
}
fn default_rows_per_shard() -> usize {
    DEFAULT_ROWS_PER_SHARD
}
fn default_num_shards() -> u32 {
    1
}
fn default_flush_every_secs() -> u64 {
    300
}
fn default_true() -> bool {
    true
}
fn default_device() -> String {
    "cpu".to_string()
}
fn default_dtype() -> String {
    "f32".to_string()
}
fn default_batch_size() -> usize {
    8
}
fn default_api() -> ApiKind {
    ApiKind::Chat
}
fn default_concurrency() -> usize {
    8
}
fn default_timeout_secs() -> f64 {
    600.0
}
fn default_max_retries() -> u32 {
    5
}
fn default_backoff_secs() -> f64 {
    0.5
}

impl GenerateConfig {
    /// The hash recorded in the manifest: SHA-256 of everything that decides the rows' content
    /// (prompt set and mapping, rendering, teacher identity, sampling, seed). Settings that only
    /// change speed or layout (batch size, concurrency, timeouts, device, endpoint URL, `limit`,
    /// shard size, worker split, output path) are left out, so a run can resume on other
    /// hardware or another server of the same model, with a larger `limit`, or split
    /// differently.
    pub fn recipe_hash(&self) -> String {
        let teacher = match &self.teacher {
            TeacherConfig::Local { model, dtype, .. } => {
                serde_json::json!({"kind": "local", "model": model, "dtype": dtype})
            }
            TeacherConfig::Openai {
                model,
                api,
                tokenizer,
                ..
            } => serde_json::json!({
                "kind": "openai", "model": model, "api": api, "tokenizer": tokenizer,
            }),
        };
        let key = serde_json::json!({
            "prompts": self.prompts,
            "adapter": self.adapter,
            "problem_column": self.problem_column,
            "answer_column": self.answer_column,
            "id_column": self.id_column,
            "exclude": self.exclude,
            "teacher": teacher,
            "system_prompt": self.system_prompt,
            "instruction": self.instruction,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "n": self.n,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        });
        sha256_hex(key.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_recipe_section_drives_the_config_with_defaults() {
        let config: GenerateConfig = toml::from_str(
            r#"
            prompts = "synth:arith:count=10"
            out = "traces"
            n = 4
            [teacher]
            kind = "openai"
            endpoint = "http://gpu:8000/v1"
            model = "deepseek-ai/DeepSeek-R1"
            api_key_env = "R1_KEY"
            "#,
        )
        .unwrap();
        assert_eq!(config.n, 4);
        assert_eq!((config.temperature, config.top_p), (0.6, 0.95));
        assert_eq!(config.instruction, DEFAULT_INSTRUCTION);
        assert!(matches!(
            config.teacher,
            TeacherConfig::Openai {
                api: ApiKind::Chat,
                concurrency: 8,
                ..
            }
        ));
        let bad = toml::from_str::<GenerateConfig>(
            "prompts = \"x\"\nout = \"o\"\ntemp = 1\n[teacher]\nkind = \"local\"\nmodel = \"m\"\n",
        );
        assert!(bad.unwrap_err().to_string().contains("temp"));
    }

    #[test]
    fn the_recipe_hash_ignores_speed_and_layout_but_not_sampling() {
        let base: GenerateConfig = toml::from_str(
            "prompts = \"p.jsonl\"\nout = \"o\"\n[teacher]\nkind = \"local\"\nmodel = \"m\"\n",
        )
        .unwrap();
        let mut faster = base.clone();
        faster.teacher = TeacherConfig::Local {
            model: "m".into(),
            device: "cuda:0".into(),
            dtype: "f32".into(),
            batch_size: 64,
        };
        faster.limit = Some(5);
        faster.num_shards = 4;
        faster.rows_per_shard = 10;
        assert_eq!(base.recipe_hash(), faster.recipe_hash());
        let mut hotter = base.clone();
        hotter.temperature = 1.0;
        assert_ne!(base.recipe_hash(), hotter.recipe_hash());
        let mut reseeded = base.clone();
        reseeded.seed = 1;
        assert_ne!(base.recipe_hash(), reseeded.recipe_hash());
    }
}
