//! Building the configured teacher: the local model or the endpoint client, plus the tokenizer
//! whose chat template renders the prompts.

use std::time::Duration;

use candle_core::DType;

use super::config::TeacherConfig;
use super::GenerateError;
use crate::model::Tokenizer;
use crate::teacher::endpoint::Transfer;
use crate::teacher::local::LocalTeacher;
use crate::teacher::openai::{ApiKind, OpenAiConfig, OpenAiTeacher};
use crate::teacher::retry::RetryPolicy;
use crate::teacher::Teacher;

/// A teacher built from the config, with the tokenizer (if any) that renders its prompts.
pub(super) enum BuiltTeacher {
    Local(Box<LocalTeacher>),
    Openai(Box<OpenAiTeacher>, Option<Box<Tokenizer>>),
}

impl BuiltTeacher {
    /// The tokenizer that renders prompts, when there is one.
    pub(super) fn tokenizer(&self) -> Option<&Tokenizer> {
        match self {
            BuiltTeacher::Local(teacher) => Some(teacher.tokenizer()),
            BuiltTeacher::Openai(_, tokenizer) => tokenizer.as_deref(),
        }
    }

    /// The teacher, ready to sample, and the tokenizer that counts tokens an endpoint did not
    /// report (`None` for a local teacher, which counts its own).
    pub(super) fn into_parts(self) -> (Box<dyn Teacher>, Option<Box<Tokenizer>>) {
        match self {
            BuiltTeacher::Local(teacher) => (teacher, None),
            BuiltTeacher::Openai(teacher, tokenizer) => (teacher, tokenizer),
        }
    }
}

fn parse_dtype(name: &str) -> Result<DType, GenerateError> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(GenerateError::Config(format!(
            "unknown dtype `{other}`: use f32, bf16 or f16"
        ))),
    }
}

/// Loads only the tokenizer of a model reference (directory, hub id or llama2.c `.bin`).
fn load_tokenizer(spec: &str) -> Result<Tokenizer, GenerateError> {
    Ok(match crate::model::load::resolve(spec)? {
        crate::model::ModelSource::HfDir(dir) => Tokenizer::from_dir(&dir)?,
        crate::model::ModelSource::Llama2c { tokenizer, .. } => {
            Tokenizer::from_llama2c(&tokenizer)?
        }
    })
}

fn seconds(value: f64, flag: &str) -> Result<Duration, GenerateError> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        GenerateError::Config(format!(
            "{flag} must be a non-negative number of seconds, got {value}"
        ))
    })
}

/// A timeout flag's value, which must be above 0.
fn positive_seconds(value: f64, flag: &str) -> Result<Duration, GenerateError> {
    let duration = seconds(value, flag)?;
    if duration.is_zero() {
        return Err(GenerateError::Config(format!("{flag} must be above 0")));
    }
    Ok(duration)
}

/// Builds the teacher `config` describes (loads the model or reads the API key).
pub(super) fn build_teacher(config: &TeacherConfig) -> Result<BuiltTeacher, GenerateError> {
    match config {
        TeacherConfig::Local {
            model,
            device,
            dtype,
            batch_size,
        } => {
            if *batch_size == 0 {
                return Err(GenerateError::Config(
                    "--batch-size must be at least 1".into(),
                ));
            }
            let device = crate::runtime::parse_device(device)
                .map_err(|e| GenerateError::Config(format!("{e:#}")))?;
            let teacher = LocalTeacher::load(model, &device, parse_dtype(dtype)?, *batch_size)?;
            Ok(BuiltTeacher::Local(Box::new(teacher)))
        }
        TeacherConfig::Openai(teacher) => {
            let endpoints = teacher
                .endpoint_configs()
                .map_err(|e| GenerateError::Config(format!("endpoint teacher: {e}")))?;
            let transfer = if teacher.stream {
                Transfer::Stream(positive_seconds(
                    teacher.idle_timeout_secs,
                    "--idle-timeout-secs",
                )?)
            } else {
                Transfer::Whole(positive_seconds(teacher.timeout_secs, "--timeout-secs")?)
            };
            let tokenizer = teacher
                .tokenizer
                .as_deref()
                .map(load_tokenizer)
                .transpose()?;
            if teacher.api == ApiKind::Completions && tokenizer.is_none() {
                return Err(GenerateError::Config(
                    "--api completions sends the rendered prompt text: give --tokenizer (the served model's directory or hub id) so its chat template can render it".into(),
                ));
            }
            let built = OpenAiTeacher::new(&OpenAiConfig {
                endpoints,
                api: teacher.api,
                transfer,
                retry: RetryPolicy {
                    max_retries: teacher.max_retries,
                    initial_backoff: seconds(teacher.backoff_secs, "--backoff-secs")?,
                    ..RetryPolicy::default()
                },
            })?;
            Ok(BuiltTeacher::Openai(
                Box::new(built),
                tokenizer.map(Box::new),
            ))
        }
    }
}
