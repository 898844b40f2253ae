//! The settings of one `distill generate` run ([`GenerateConfig`], deserialisable so a TOML
//! recipe section can hold it) and the recipe hash that ties an output directory to them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::hashing::sha256_hex;
use crate::data::schema::DEFAULT_INSTRUCTION;
use crate::data::shards::DEFAULT_ROWS_PER_SHARD;
use crate::teacher::endpoint::{EndpointConfig, Prices};
use crate::teacher::openai::ApiKind;
use crate::teacher::rate_limit::RateLimits;

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
    /// Samples per problem; with `until_verified`, samples per round.
    #[serde(default = "default_n")]
    pub n: usize,
    /// Sample each problem in rounds of `n` until this many samples pass the verifier and the
    /// readability checks (or `max_samples` were drawn), instead of a fixed `n`.
    #[serde(default)]
    pub until_verified: Option<usize>,
    /// With `until_verified`: the most samples drawn for one problem.
    #[serde(default)]
    pub max_samples: Option<usize>,
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
    /// One or more OpenAI-compatible HTTP endpoints.
    Openai(EndpointTeacherConfig),
}

/// An endpoint teacher: one `endpoint`, or a list of `endpoints` whose unset fields take the
/// values given here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTeacherConfig {
    /// Base URL or full endpoint URL of the one endpoint (exclusive with `endpoints`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The served model: the `model` of every request unless an endpoint names its own, and the
    /// teacher's identity in the recipe hash.
    pub model: String,
    /// `chat` or `completions`.
    #[serde(default = "default_api")]
    pub api: ApiKind,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Tokenizer (model directory, hub id or llama2.c `.bin`) whose chat template renders
    /// prompts; required for `completions`, optional for `chat` (then the `prompt` column
    /// holds the JSON messages sent).
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Requests in flight at once, per endpoint.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Requests per minute, per endpoint (unlimited when unset).
    #[serde(default)]
    pub rpm: Option<f64>,
    /// Prompt plus completion tokens per minute, per endpoint (unlimited when unset).
    #[serde(default)]
    pub tpm: Option<f64>,
    /// Price per million prompt tokens (rows then carry their cost).
    #[serde(default)]
    pub price_prompt_per_mtok: Option<f64>,
    /// Price per million completion tokens.
    #[serde(default)]
    pub price_completion_per_mtok: Option<f64>,
    /// Several endpoints, each with its own URL and optionally its own model, key variable,
    /// concurrency, limits and prices (exclusive with `endpoint`).
    #[serde(default)]
    pub endpoints: Vec<EndpointEntry>,
    /// Stream responses (server-sent events) with an idle timeout between chunks instead of a
    /// whole-request timeout.
    #[serde(default)]
    pub stream: bool,
    /// Whole-request timeout in seconds (without `stream`).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Longest silence between two streamed chunks, in seconds (with `stream`).
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: f64,
    /// Retries of a failed request (429, 5xx, connection errors, timeouts).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Upper bound of the first retry's wait, in seconds (doubles per retry, capped at 30 s).
    #[serde(default = "default_backoff_secs")]
    pub backoff_secs: f64,
}

impl Default for EndpointTeacherConfig {
    fn default() -> Self {
        EndpointTeacherConfig {
            endpoint: None,
            model: String::new(),
            api: default_api(),
            api_key_env: None,
            tokenizer: None,
            concurrency: default_concurrency(),
            rpm: None,
            tpm: None,
            price_prompt_per_mtok: None,
            price_completion_per_mtok: None,
            endpoints: Vec::new(),
            stream: false,
            timeout_secs: default_timeout_secs(),
            idle_timeout_secs: default_idle_timeout_secs(),
            max_retries: default_max_retries(),
            backoff_secs: default_backoff_secs(),
        }
    }
}

/// One endpoint of a list; unset fields take the teacher's values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointEntry {
    /// Base URL or full endpoint URL.
    pub url: String,
    /// The `model` of its requests.
    #[serde(default)]
    pub model: Option<String>,
    /// Environment variable holding its API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Requests in flight at once.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<f64>,
    /// Prompt plus completion tokens per minute.
    #[serde(default)]
    pub tpm: Option<f64>,
    /// Price per million prompt tokens.
    #[serde(default)]
    pub price_prompt_per_mtok: Option<f64>,
    /// Price per million completion tokens.
    #[serde(default)]
    pub price_completion_per_mtok: Option<f64>,
}

impl EndpointTeacherConfig {
    /// The endpoints, each with the teacher's values where it sets none; the error names the
    /// field that is wrong.
    pub fn endpoint_configs(&self) -> Result<Vec<EndpointConfig>, String> {
        let entries: Vec<EndpointEntry> = match (&self.endpoint, self.endpoints.is_empty()) {
            (Some(url), true) => vec![EndpointEntry {
                url: url.clone(),
                ..EndpointEntry::default()
            }],
            (None, false) => self.endpoints.clone(),
            (Some(_), false) => {
                return Err("give `endpoint` (one) or `endpoints` (a list), not both".into())
            }
            (None, true) => {
                return Err(
                    "an endpoint teacher needs `endpoint` or `endpoints` (--endpoint)".into(),
                )
            }
        };
        entries
            .into_iter()
            .enumerate()
            .map(|(index, entry)| {
                let name = if self.endpoints.is_empty() {
                    "the endpoint".to_string()
                } else {
                    format!("endpoints[{index}] ({})", entry.url)
                };
                let concurrency = entry.concurrency.unwrap_or(self.concurrency);
                if concurrency == 0 {
                    return Err(format!("{name}: `concurrency` must be at least 1"));
                }
                let number = |value: Option<f64>, field: &str| match value {
                    Some(v) if !(v.is_finite() && v >= 0.0) => Err(format!(
                        "{name}: `{field}` must be a non-negative number, got {v}"
                    )),
                    _ => Ok(value),
                };
                let prompt_price = number(
                    entry.price_prompt_per_mtok.or(self.price_prompt_per_mtok),
                    "price_prompt_per_mtok",
                )?;
                let completion_price = number(
                    entry
                        .price_completion_per_mtok
                        .or(self.price_completion_per_mtok),
                    "price_completion_per_mtok",
                )?;
                let prices =
                    (prompt_price.is_some() || completion_price.is_some()).then(|| Prices {
                        prompt_per_mtok: prompt_price.unwrap_or(0.0),
                        completion_per_mtok: completion_price.unwrap_or(0.0),
                    });
                let limit = |value: Option<f64>, field: &str| match value {
                    Some(v) if !(v.is_finite() && v > 0.0) => Err(format!(
                        "{name}: `{field}` must be a positive number, got {v}"
                    )),
                    _ => Ok(value),
                };
                Ok(EndpointConfig {
                    url: entry.url,
                    model: entry.model.unwrap_or_else(|| self.model.clone()),
                    api_key_env: entry.api_key_env.or_else(|| self.api_key_env.clone()),
                    concurrency,
                    limits: RateLimits {
                        requests_per_minute: limit(entry.rpm.or(self.rpm), "rpm")?,
                        tokens_per_minute: limit(entry.tpm.or(self.tpm), "tpm")?,
                    },
                    prices,
                })
            })
            .collect()
    }
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
fn default_idle_timeout_secs() -> f64 {
    120.0
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
            TeacherConfig::Openai(endpoints) => serde_json::json!({
                "kind": "openai", "model": endpoints.model, "api": endpoints.api,
                "tokenizer": endpoints.tokenizer,
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
        let mut key = key;
        // Only when set, so directories written before these settings existed still resume.
        if let Some(target) = self.until_verified {
            key["until_verified"] = serde_json::json!(target);
            key["max_samples"] = serde_json::json!(self.max_samples);
        }
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
        let TeacherConfig::Openai(teacher) = &config.teacher else {
            panic!("{:?}", config.teacher)
        };
        assert_eq!((teacher.api, teacher.concurrency), (ApiKind::Chat, 8));
        assert_eq!(teacher.endpoint_configs().unwrap().len(), 1);
        let bad = toml::from_str::<GenerateConfig>(
            "prompts = \"x\"\nout = \"o\"\ntemp = 1\n[teacher]\nkind = \"local\"\nmodel = \"m\"\n",
        );
        assert!(bad.unwrap_err().to_string().contains("temp"));
    }

    #[test]
    fn a_list_of_endpoints_inherits_the_teachers_values_and_bad_fields_are_named() {
        let config: GenerateConfig = toml::from_str(
            r#"
            prompts = "p.jsonl"
            out = "o"
            [teacher]
            kind = "openai"
            model = "deepseek-ai/DeepSeek-R1"
            api_key_env = "R1_KEY"
            concurrency = 16
            price_prompt_per_mtok = 0.5
            [[teacher.endpoints]]
            url = "http://node1:8000/v1"
            [[teacher.endpoints]]
            url = "https://api.example.com/v1"
            model = "r1-api"
            api_key_env = "API_KEY"
            concurrency = 4
            rpm = 60
            tpm = 100000
            price_completion_per_mtok = 2.0
            "#,
        )
        .unwrap();
        let TeacherConfig::Openai(teacher) = &config.teacher else {
            panic!("{:?}", config.teacher)
        };
        let endpoints = teacher.endpoint_configs().unwrap();
        assert_eq!(endpoints[0].model, "deepseek-ai/DeepSeek-R1");
        assert_eq!(endpoints[0].api_key_env.as_deref(), Some("R1_KEY"));
        assert_eq!(endpoints[0].concurrency, 16);
        assert_eq!(endpoints[0].limits, RateLimits::default());
        let prices = |p: f64, c: f64| {
            Some(Prices {
                prompt_per_mtok: p,
                completion_per_mtok: c,
            })
        };
        assert_eq!(endpoints[0].prices, prices(0.5, 0.0));
        assert_eq!(endpoints[1].model, "r1-api");
        assert_eq!(endpoints[1].concurrency, 4);
        assert_eq!(endpoints[1].limits.requests_per_minute, Some(60.0));
        assert_eq!(endpoints[1].limits.tokens_per_minute, Some(100000.0));
        assert_eq!(endpoints[1].prices, prices(0.5, 2.0));

        let unknown = "prompts = \"p\"\nout = \"o\"\n[teacher]\nkind = \"openai\"\nmodel = \"m\"\n[[teacher.endpoints]]\nurl = \"http://a\"\nrpn = 5\n";
        let error = toml::from_str::<GenerateConfig>(unknown)
            .unwrap_err()
            .to_string();
        assert!(error.contains("rpn"), "{error}");
        let mut both = teacher.clone();
        both.endpoint = Some("http://b".into());
        assert!(both.endpoint_configs().unwrap_err().contains("not both"));
        let mut bad = teacher.clone();
        bad.endpoints[1].rpm = Some(0.0);
        let error = bad.endpoint_configs().unwrap_err();
        assert!(
            error.contains("endpoints[1]") && error.contains("`rpm`"),
            "{error}"
        );
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
