//! The local teacher: our decoder (any model [`crate::model::load`] reads) on the CPU or a CUDA
//! GPU. One [`Teacher::sample`] call is one batched [`generate`] call: every prompt is
//! prefilled once and its `n` samples share that prefill; each (prompt seed, sample index) has
//! its own generator, so a sample does not depend on which other prompts share its batch.

use candle_core::{DType, Device};

use super::{PromptJob, SamplingParams, Teacher, TeacherError, TeacherInfo, TeacherSample};
use crate::model::generate::{generate, sample_seed, GenerationConfig, GenerationRequest};
use crate::model::{LoadedModel, SamplerConfig, Tokenizer};

/// A model loaded in this process.
pub struct LocalTeacher {
    loaded: LoadedModel,
    name: String,
    batch_size: usize,
}

impl LocalTeacher {
    /// Loads `spec` (model directory, hub id or llama2.c `.bin`) onto `device`, computing in
    /// `dtype`; `batch_size` prompts go into one generation call.
    pub fn load(
        spec: &str,
        device: &Device,
        dtype: DType,
        batch_size: usize,
    ) -> Result<Self, TeacherError> {
        let loaded = crate::model::load(spec, device, dtype)?;
        Ok(LocalTeacher {
            loaded,
            name: spec.to_string(),
            batch_size: batch_size.max(1),
        })
    }

    /// The teacher's tokenizer (its chat template renders the prompts).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.loaded.tokenizer
    }
}

impl Teacher for LocalTeacher {
    fn describe(&self) -> TeacherInfo {
        TeacherInfo {
            name: self.name.clone(),
            batch_size: self.batch_size,
            parameters: Some(self.loaded.model.config().parameter_count()),
        }
    }

    fn check_prompt(&self, prompt: &str, max_new_tokens: usize) -> Result<(), TeacherError> {
        let tokens = self.loaded.tokenizer.encode(prompt, false)?;
        Ok(self.loaded.model.check_fits(tokens.len(), max_new_tokens)?)
    }

    fn sample(
        &mut self,
        batch: &[PromptJob],
        params: &SamplingParams,
    ) -> Result<Vec<TeacherSample>, TeacherError> {
        let tokenizer = &self.loaded.tokenizer;
        let mut requests = Vec::with_capacity(batch.len());
        for job in batch {
            requests.push(GenerationRequest {
                prompt: tokenizer.encode(&job.prompt, false)?,
                seed: job.seed,
            });
        }
        let config = GenerationConfig {
            sampler: SamplerConfig {
                temperature: params.temperature as f32,
                top_p: params.top_p as f32,
                top_k: params.top_k,
                min_p: 0.0,
            },
            max_new_tokens: params.max_new_tokens,
            n: params.n,
            eos_token_ids: self.loaded.eos_token_ids.clone(),
            stop_strings: Vec::new(),
        };
        let completions = generate(&self.loaded.model, tokenizer, &requests, &config)?;
        Ok(completions
            .into_iter()
            .map(|c| TeacherSample {
                job_index: c.prompt_index,
                sample_index: c.sample_index as u32,
                seed: sample_seed(batch[c.prompt_index].seed, c.sample_index),
                text: c.text,
                finish_reason: c.finish_reason,
                prompt_tokens: Some(saturating_u32(c.prompt_tokens)),
                completion_tokens: Some(saturating_u32(c.completion_tokens)),
                endpoint: None,
                cost: None,
            })
            .collect())
    }
}

/// `value` as u32, saturating (token counts never get near the limit).
fn saturating_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
