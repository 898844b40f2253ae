//! `distill model init | inspect | sample | export`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device};
use clap::{Args, Subcommand};

use crate::model::generate::{generate, GenerationConfig, GenerationRequest};
use crate::model::init::{random_weights, Preset};
use crate::model::load::{self, ModelSource};
use crate::model::safetensors_header::check_dir_weights;
use crate::model::save::{save_hf_dir, save_hf_dir_keeping, torch_dtype_name};
use crate::model::{Decoder, ModelConfig, SamplerConfig, Tokenizer};
use crate::output_dir::{refuse_replacing_model, OutputDir, OutputKind};
use crate::runtime::parse_device;

/// Model tools.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Create a random-initialised model of a real shape, saved as a Hugging Face directory.
    Init(InitArgs),
    /// Print architecture, parameter count, dtype, vocabulary and context length.
    Inspect(InspectArgs),
    /// Print a model's continuation of a prompt (temperature 0 = greedy).
    Sample(SampleArgs),
    /// Write a model (any form `--model` takes, e.g. a llama2.c .bin) as a Hugging Face directory.
    Export(ExportArgs),
}

/// `distill model export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Model directory, hub id (org/name) or llama2.c .bin file.
    pub model: String,
    /// Output directory (config.json, model.safetensors, generation_config.json, tokenizer files).
    #[arg(long)]
    pub out: PathBuf,
    /// dtype of the written weights.
    #[arg(long, value_enum, default_value_t = ExportDtype::F32)]
    pub dtype: ExportDtype,
    /// Replace a model already in --out instead of refusing.
    #[arg(long)]
    pub force: bool,
}

/// The dtypes `distill model export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportDtype {
    /// float32.
    F32,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
}

impl ExportDtype {
    fn dtype(self) -> DType {
        match self {
            ExportDtype::F32 => DType::F32,
            ExportDtype::Bf16 => DType::BF16,
            ExportDtype::F16 => DType::F16,
        }
    }
}

/// `distill model init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The shape to create.
    #[arg(long, value_enum)]
    pub preset: Preset,
    /// tokenizer.json, or a directory holding it (copied into the model, with tokenizer_config.json).
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a model already in --out instead of refusing.
    #[arg(long)]
    pub force: bool,
}

/// `distill model inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model directory, hub id (org/name) or llama2.c .bin file.
    pub model: String,
}

/// `distill model sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Model directory, hub id (org/name) or llama2.c .bin file.
    #[arg(long)]
    pub model: String,
    /// Text to continue (an empty prompt starts from BOS).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Render the prompt as a user turn with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs a model subcommand.
pub fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Init(args) => init(&args),
        ModelCommand::Inspect(args) => inspect(&args),
        ModelCommand::Sample(args) => sample(&args),
        ModelCommand::Export(args) => export(&args),
    }
}

/// Claims `out` for a model, refusing to replace one already there unless `force`.
fn claim_model_dir(out: &Path, force: bool) -> anyhow::Result<OutputDir> {
    refuse_replacing_model(out, force)?;
    Ok(OutputDir::claim(out, OutputKind::Model)?)
}

fn init(args: &InitArgs) -> anyhow::Result<()> {
    let _claim = claim_model_dir(&args.out, args.force)?;
    let tokenizer_path = if args.tokenizer.is_dir() {
        args.tokenizer.join("tokenizer.json")
    } else {
        args.tokenizer.clone()
    };
    let tokenizer = Tokenizer::from_tokenizer_json(&tokenizer_path)?;
    let mut config = args.preset.config(tokenizer.vocab_size())?;
    let eos: Vec<u32> = tokenizer.eos_token_id().into_iter().collect();
    config.eos_token_ids = eos.clone();
    let device = Device::Cpu;
    let weights = random_weights(&config, args.seed, &device)?;
    let model = Decoder::from_weights(&config, &weights, DType::F32, &device)?;
    save_hf_dir(&model, &tokenizer, &eos, &args.out)?;
    println!(
        "wrote {} ({} parameters, seed {}) to {}",
        config.architecture.hf_class(),
        config.parameter_count(),
        args.seed,
        args.out.display()
    );
    Ok(())
}

fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let _claim = claim_model_dir(&args.out, args.force)?;
    let loaded = load::load(&args.model, &Device::Cpu, args.dtype.dtype())?;
    save_hf_dir_keeping(
        &loaded.model,
        &loaded.tokenizer,
        &loaded.eos_token_ids,
        loaded.generation_config.as_ref(),
        &args.out,
    )?;
    println!(
        "wrote {} ({}) to {}",
        loaded.model.config().architecture.hf_class(),
        torch_dtype_name(args.dtype.dtype()),
        args.out.display()
    );
    Ok(())
}

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let (config, dtype, weights) = match load::resolve(&args.model)? {
        ModelSource::HfDir(dir) => {
            let config = ModelConfig::from_file(&dir.join("config.json"))?;
            let (dtype, weights) = checked_weights(&dir, &config)?;
            (config, dtype, weights)
        }
        source @ ModelSource::Llama2c { .. } => {
            let loaded = load::load_source(source, &Device::Cpu, DType::F32)?;
            (
                loaded.model.config().clone(),
                "float32 (llama2.c)".to_string(),
                "read and checked whole (llama2.c)".to_string(),
            )
        }
    };
    let c = &config;
    println!(
        "architecture:     {} ({})",
        c.architecture.model_type(),
        c.architecture.hf_class()
    );
    println!("parameters:       {}", c.parameter_count());
    println!("dtype:            {dtype}");
    println!("vocab:            {}", c.vocab_size);
    println!("context length:   {}", c.max_position_embeddings);
    println!("layers:           {}", c.num_hidden_layers);
    println!(
        "hidden size:      {} (MLP {})",
        c.hidden_size, c.intermediate_size
    );
    println!(
        "attention heads:  {} query, {} key/value, head_dim {}",
        c.num_attention_heads, c.num_key_value_heads, c.head_dim
    );
    println!("tied embeddings:  {}", c.tie_word_embeddings);
    println!("eos token ids:    {:?}", c.eos_token_ids);
    println!("weights:          {weights}");
    Ok(())
}

/// Checks the directory's safetensors headers against its config (without reading the
/// weights) and describes them: "N tensors in K file(s), dtypes …".
fn checked_weights(dir: &Path, config: &ModelConfig) -> anyhow::Result<(String, String)> {
    let checked = check_dir_weights(dir, config)?;
    let dtypes: std::collections::BTreeSet<&str> = checked
        .tensors
        .values()
        .map(|t| match t.dtype.as_str() {
            "F32" => torch_dtype_name(DType::F32),
            "BF16" => torch_dtype_name(DType::BF16),
            "F16" => torch_dtype_name(DType::F16),
            other => other,
        })
        .collect();
    let dtypes = dtypes.into_iter().collect::<Vec<_>>().join(", ");
    let summary = format!(
        "{} tensors in {} file(s), every one present with the shape config.json implies",
        checked.tensors.len(),
        checked.files.len()
    );
    Ok((dtypes, summary))
}

fn sample(args: &SampleArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let loaded = load::load(&args.model, &device, DType::F32)?;
    let tokenizer = &loaded.tokenizer;
    let prompt = if args.chat {
        let messages = [crate::model::Message::new("user", args.prompt.clone())];
        let options = crate::model::ChatOptions {
            add_generation_prompt: true,
            enable_thinking: None,
        };
        let text = tokenizer.render_chat(&messages, &options)?;
        tokenizer.encode(&text, false)?
    } else {
        let mut ids = tokenizer.encode(&args.prompt, true)?;
        if ids.is_empty() {
            ids.extend(loaded.model.config().bos_token_id);
        }
        ids
    };
    anyhow::ensure!(
        !prompt.is_empty(),
        "the prompt is empty and the model has no BOS token to start from; pass --prompt"
    );
    let config = GenerationConfig {
        sampler: SamplerConfig {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            min_p: 0.0,
        },
        max_new_tokens: args.max_new_tokens,
        n: 1,
        eos_token_ids: loaded.eos_token_ids.clone(),
        stop_strings: Vec::new(),
    };
    let request = GenerationRequest {
        prompt: prompt.clone(),
        seed: args.seed,
    };
    let completions = generate(&loaded.model, tokenizer, &[request], &config)?;
    let completion = completions
        .first()
        .context("generation returned no completion")?;
    let prompt_text = tokenizer.decode(&prompt, true)?;
    println!("{prompt_text}{}", completion.text);
    eprintln!(
        "[{} prompt tokens, {} generated, finish_reason={}]",
        completion.prompt_tokens,
        completion.completion_tokens,
        completion.finish_reason.as_str()
    );
    Ok(())
}
