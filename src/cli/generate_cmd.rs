//! `distill generate`: the flags, turned into a [`GenerateConfig`] for
//! [`crate::generate::run_generate`], and the human summary on stdout.

use std::path::PathBuf;

use clap::Args;

use crate::data::schema::DEFAULT_INSTRUCTION;
use crate::data::shards::DEFAULT_ROWS_PER_SHARD;
use crate::generate::config::{EndpointEntry, EndpointTeacherConfig};
use crate::generate::{run_generate, GenerateConfig, TeacherConfig};
use crate::teacher::openai::ApiKind;

/// `distill generate`: sample long chain-of-thought traces from a teacher into Parquet shards.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("teacher_kind").required(true).args(["teacher", "endpoint"])))]
pub struct GenerateArgs {
    /// Prompt set: a .jsonl/.parquet file, a Hub dataset hf:ORG/NAME[:CONFIG][:SPLIT] (e.g.
    /// hf:openai/gsm8k:main:test; from the HF cache, downloaded unless HF_HUB_OFFLINE=1), or a
    /// synthetic spec such as synth:arith:difficulty=3:count=200:seed=1 (kinds: arith, linear,
    /// countdown).
    #[arg(long)]
    pub prompts: String,
    /// Built-in layout of the prompt file (gsm8k, math500, aime24, amc23); detected when omitted.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Column holding the problem text (a custom layout; needs --answer-column).
    #[arg(long)]
    pub problem_column: Option<String>,
    /// Column holding the gold answer (custom layout).
    #[arg(long)]
    pub answer_column: Option<String>,
    /// Column holding a stable problem id (custom layout; content-hash ids without it).
    #[arg(long)]
    pub id_column: Option<String>,
    /// Use only the first N problems of the set.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Leave out the problems of this prompt source (same problem text), e.g. the eval set;
    /// repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,

    /// Local teacher: a model directory, hub id (org/name) or llama2.c .bin.
    #[arg(long)]
    pub teacher: Option<String>,
    /// Local teacher's device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Local teacher's computation dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Local teacher: prompts per generation call.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,

    /// Endpoint teacher: base URL of an OpenAI-compatible server (http://host:8000/v1);
    /// repeat for several servers of the same model (requests go to the least-loaded healthy
    /// one; the per-endpoint flags below apply to each).
    #[arg(long)]
    pub endpoint: Vec<String>,
    /// Endpoint teacher: the model name sent in every request.
    #[arg(long, requires = "endpoint")]
    pub api_model: Option<String>,
    /// Endpoint teacher: chat (/v1/chat/completions) or completions (/v1/completions).
    #[arg(long, value_enum, default_value = "chat")]
    pub api: ApiKind,
    /// Endpoint teacher: environment variable holding the API key (never logged or stored).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Endpoint teacher: tokenizer whose chat template renders prompts (needed for
    /// --api completions; with chat, the prompt column then holds the rendered text).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Endpoint teacher: requests in flight at once, per endpoint.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Endpoint teacher: requests per minute, per endpoint (default: unlimited).
    #[arg(long)]
    pub rpm: Option<f64>,
    /// Endpoint teacher: prompt + completion tokens per minute, per endpoint (default: unlimited).
    #[arg(long)]
    pub tpm: Option<f64>,
    /// Endpoint teacher: price per million prompt tokens (rows and the summary then carry cost).
    #[arg(long)]
    pub price_prompt_per_mtok: Option<f64>,
    /// Endpoint teacher: price per million completion tokens.
    #[arg(long)]
    pub price_completion_per_mtok: Option<f64>,
    /// Endpoint teacher: stream responses (server-sent events) with --idle-timeout-secs between
    /// chunks instead of a whole-request timeout.
    #[arg(long)]
    pub stream: bool,
    /// Endpoint teacher: whole-request timeout, seconds (without --stream).
    #[arg(long, default_value_t = 600.0)]
    pub timeout_secs: f64,
    /// Endpoint teacher with --stream: longest silence between two chunks, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub idle_timeout_secs: f64,
    /// Endpoint teacher: retries of a request on 429, 5xx, connection errors and timeouts.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// Endpoint teacher: upper bound of the first retry's wait, seconds (doubles per retry).
    #[arg(long, default_value_t = 0.5)]
    pub backoff_secs: f64,

    /// A system turn put before every problem.
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// Instruction appended to every problem after a blank line ("" to disable).
    #[arg(long, default_value = DEFAULT_INSTRUCTION)]
    pub instruction: String,

    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Keep only the k most likely tokens (0 = off; local teacher only).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Samples per problem.
    #[arg(short = 'n', long = "samples", default_value_t = 1)]
    pub n: usize,
    /// Sample each problem in rounds of -n until K samples pass the verifier and the
    /// readability checks (or --max-samples were drawn), instead of a fixed -n.
    #[arg(long, value_name = "K", requires = "max_samples")]
    pub until_verified: Option<usize>,
    /// With --until-verified: the most samples drawn for one problem.
    #[arg(long, value_name = "M")]
    pub max_samples: Option<usize>,
    /// Longest completion, in tokens.
    #[arg(long, default_value_t = 4096)]
    pub max_new_tokens: usize,
    /// Run seed; each problem's seed derives from it and the problem id.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Output directory of the shards, manifest.json and summary.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Rows per Parquet shard.
    #[arg(long, default_value_t = DEFAULT_ROWS_PER_SHARD)]
    pub rows_per_shard: usize,
    /// Split the problems across this many workers (each writes OUT/worker-II-of-NN).
    #[arg(long, default_value_t = 1)]
    pub num_shards: u32,
    /// This worker's index, 0-based.
    #[arg(long, default_value_t = 0)]
    pub shard_index: u32,
    /// Resume into a directory written with different settings (its rows are kept).
    #[arg(long)]
    pub force: bool,
    /// Drop listed shards that are missing or damaged (moved to damaged/) and sample their rows again.
    #[arg(long)]
    pub repair: bool,
    /// Write buffered rows as a short shard at least this often, seconds (0 = only full shards).
    #[arg(long, default_value_t = 300)]
    pub flush_every_secs: u64,
    /// Do not show the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl GenerateArgs {
    /// The library config these flags describe.
    pub fn to_config(&self) -> anyhow::Result<GenerateConfig> {
        let teacher = match (&self.teacher, self.endpoint.as_slice()) {
            (Some(model), []) => TeacherConfig::Local {
                model: model.clone(),
                device: self.device.clone(),
                dtype: self.dtype.clone(),
                batch_size: self.batch_size,
            },
            (None, [_, ..]) => TeacherConfig::Openai(EndpointTeacherConfig {
                endpoint: (self.endpoint.len() == 1).then(|| self.endpoint[0].clone()),
                endpoints: if self.endpoint.len() > 1 {
                    self.endpoint
                        .iter()
                        .map(|url| EndpointEntry {
                            url: url.clone(),
                            ..EndpointEntry::default()
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                model: self.api_model.clone().ok_or_else(|| {
                    anyhow::anyhow!("--endpoint needs --api-model (the served model's name)")
                })?,
                api: self.api,
                api_key_env: self.api_key_env.clone(),
                tokenizer: self.tokenizer.clone(),
                concurrency: self.concurrency,
                rpm: self.rpm,
                tpm: self.tpm,
                price_prompt_per_mtok: self.price_prompt_per_mtok,
                price_completion_per_mtok: self.price_completion_per_mtok,
                stream: self.stream,
                timeout_secs: self.timeout_secs,
                idle_timeout_secs: self.idle_timeout_secs,
                max_retries: self.max_retries,
                backoff_secs: self.backoff_secs,
            }),
            _ => anyhow::bail!("give exactly one teacher: --teacher MODEL or --endpoint URL"),
        };
        Ok(GenerateConfig {
            prompts: self.prompts.clone(),
            adapter: self.adapter.clone(),
            problem_column: self.problem_column.clone(),
            answer_column: self.answer_column.clone(),
            id_column: self.id_column.clone(),
            limit: self.limit,
            exclude: self.exclude.clone(),
            teacher,
            system_prompt: self.system_prompt.clone(),
            instruction: self.instruction.clone(),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            n: self.n,
            until_verified: self.until_verified,
            max_samples: self.max_samples,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            out: self.out.clone(),
            rows_per_shard: self.rows_per_shard,
            num_shards: self.num_shards,
            shard_index: self.shard_index,
            force: self.force,
            repair: self.repair,
            flush_every_secs: self.flush_every_secs,
            progress: !self.no_progress,
        })
    }
}

/// Runs `distill generate`.
pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let summary = run_generate(&args.to_config()?)?;
    println!("{}", summary.human());
    Ok(())
}
