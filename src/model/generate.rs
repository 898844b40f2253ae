//! Batched generation: one left-padded prefill per prompt (shared by its `n` samples), then one token
//! per row per step from a preallocated KV cache, with per-row positions, seeds and stop conditions.

use candle_core::{DType, Storage, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::attention_mask::AttentionMask;
use super::decoder::Decoder;
use super::error::{ModelError, Result};
use super::sampling::SamplerConfig;
use super::tokenizer::Tokenizer;

/// Everything about one generation call except the prompts.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    /// How tokens are drawn.
    pub sampler: SamplerConfig,
    /// Longest completion, in tokens.
    pub max_new_tokens: usize,
    /// Samples per prompt; they share the prompt's prefill.
    pub n: usize,
    /// Ids that end a completion (not included in its text).
    pub eos_token_ids: Vec<u32>,
    /// Strings that end a completion (the text is cut before them).
    pub stop_strings: Vec<String>,
}

/// A prompt and the seed its samples draw from.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Prompt token ids (non-empty).
    pub prompt: Vec<u32>,
    /// Sample `s` of this prompt draws from a generator seeded with (`seed`, `s`).
    pub seed: u64,
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS id or a stop string.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

impl FinishReason {
    /// `"stop"` or `"length"`, as OpenAI-compatible servers report it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }

    /// Parses `"stop"` or `"length"`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stop" => Some(FinishReason::Stop),
            "length" => Some(FinishReason::Length),
            _ => None,
        }
    }
}

/// One sampled continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Index of the request it answers.
    pub prompt_index: usize,
    /// Which of the request's `n` samples it is.
    pub sample_index: usize,
    /// Generated ids, without the EOS that ended it.
    pub tokens: Vec<u32>,
    /// The EOS id that ended it, when one did: with several EOS ids (Llama-3.x-Instruct's
    /// `[128001, 128008, 128009]`) the one actually sampled, which a trainer must append.
    pub eos_token: Option<u32>,
    /// Decoded text, cut before a stop string.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated, counting the EOS that ended it.
    pub completion_tokens: usize,
}

/// Stops generation on NaN/Inf logits (broken weights), naming the step, instead of sampling
/// garbage: a non-finite element makes the sum non-finite, one cheap reduction per step.
fn require_finite(logits: &Tensor, step: usize) -> Result<()> {
    let sum = logits.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    if sum.is_finite() {
        return Ok(());
    }
    Err(ModelError::Invalid(format!(
        "the model's logits hold NaN or Inf at generation step {step} (of {} rows): the weights \
         are broken (non-finite values in model.safetensors?) or overflowed in this dtype",
        logits.dim(0)?
    )))
}

/// The seed of sample `sample` of a request seeded with `seed` (SplitMix64 of both).
pub fn sample_seed(seed: u64, sample: usize) -> u64 {
    let mut z = seed ^ (sample as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Row {
    prompt_index: usize,
    sample_index: usize,
    pad: usize,
    rng: ChaCha8Rng,
    tokens: Vec<u32>,
    text: String,
    finished: Option<FinishReason>,
    eos_token: Option<u32>,
}

/// Generates `config.n` completions for every request, all in one batch.
pub fn generate(
    model: &Decoder,
    tokenizer: &Tokenizer,
    requests: &[GenerationRequest],
    config: &GenerationConfig,
) -> Result<Vec<Completion>> {
    if requests.is_empty() || config.n == 0 {
        return Ok(Vec::new());
    }
    if let Some(i) = requests.iter().position(|r| r.prompt.is_empty()) {
        return Err(ModelError::Invalid(format!(
            "prompt {i} is empty: generation needs at least one token"
        )));
    }
    for (i, request) in requests.iter().enumerate() {
        model
            .check_fits(request.prompt.len(), config.max_new_tokens)
            .map_err(|e| ModelError::Invalid(format!("prompt {i}: {e}")))?;
    }
    let device = model.device();
    let prompt_len = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
    let pads: Vec<usize> = requests
        .iter()
        .map(|r| prompt_len - r.prompt.len())
        .collect();

    let mut ids = Vec::with_capacity(requests.len() * prompt_len);
    let mut positions = Vec::with_capacity(requests.len() * prompt_len);
    for (request, &pad) in requests.iter().zip(&pads) {
        ids.extend(std::iter::repeat_n(0u32, pad).chain(request.prompt.iter().copied()));
        positions.extend((0..prompt_len).map(|j| j.saturating_sub(pad) as u32));
    }
    let shape = (requests.len(), prompt_len);
    let ids = Tensor::from_vec(ids, shape, device)?;
    let positions = Tensor::from_vec(positions, shape, device)?;
    let mask = AttentionMask::left_padded(&pads, prompt_len, 0, device)?;
    let mut prefill_cache = model.new_cache(requests.len(), prompt_len + config.max_new_tokens)?;
    let hidden = model.forward(&ids, &positions, Some(&mask), Some(&mut prefill_cache))?;
    let last = hidden.narrow(1, prompt_len - 1, 1)?.squeeze(1)?;
    let mut logits = model.logits(&last)?;

    let mut rows: Vec<Row> = Vec::with_capacity(requests.len() * config.n);
    for (p, request) in requests.iter().enumerate() {
        for s in 0..config.n {
            rows.push(Row {
                prompt_index: p,
                sample_index: s,
                pad: pads[p],
                rng: ChaCha8Rng::seed_from_u64(sample_seed(request.seed, s)),
                tokens: Vec::new(),
                text: String::new(),
                finished: None,
                eos_token: None,
            });
        }
    }
    let mut cache = if config.n > 1 {
        let picks: Vec<u32> = rows.iter().map(|r| r.prompt_index as u32).collect();
        logits = logits.index_select(&Tensor::new(picks.as_slice(), device)?, 0)?;
        prefill_cache.select_rows(&picks)?
    } else {
        prefill_cache
    };
    let row_pads: Vec<usize> = rows.iter().map(|r| r.pad).collect();
    let padded = row_pads.iter().any(|&p| p > 0);

    for step in 0..config.max_new_tokens {
        require_finite(&logits, step)?;
        let tokens = sample_rows(&logits, &mut rows, &config.sampler)?;
        for (row, token) in rows.iter_mut().zip(tokens) {
            if let Some(token) = token {
                advance_row(row, token, requests, tokenizer, config)?;
            }
        }
        if rows.iter().all(|r| r.finished.is_some()) || step + 1 == config.max_new_tokens {
            break;
        }
        let next: Vec<u32> = rows
            .iter()
            .map(|r| r.tokens.last().copied().unwrap_or(0))
            .collect();
        let next_positions: Vec<u32> = rows
            .iter()
            .map(|r| (prompt_len + step - r.pad) as u32)
            .collect();
        let ids = Tensor::from_vec(next, (rows.len(), 1), device)?;
        let positions = Tensor::from_vec(next_positions, (rows.len(), 1), device)?;
        let mask = if padded {
            Some(AttentionMask::left_padded(
                &row_pads,
                1,
                prompt_len + step,
                device,
            )?)
        } else {
            None
        };
        let hidden = model.forward(&ids, &positions, mask.as_ref(), Some(&mut cache))?;
        logits = model.logits(&hidden.squeeze(1)?)?;
    }

    rows.into_iter()
        .map(|row| {
            let prompt = &requests[row.prompt_index].prompt;
            let cut_at_stop_string =
                row.finished == Some(FinishReason::Stop) && row.eos_token.is_none();
            let text = if cut_at_stop_string {
                row.text
            } else {
                tokenizer.decode_continuation(prompt, &row.tokens)?
            };
            Ok(Completion {
                prompt_index: row.prompt_index,
                sample_index: row.sample_index,
                completion_tokens: row.tokens.len() + usize::from(row.eos_token.is_some()),
                prompt_tokens: prompt.len(),
                tokens: row.tokens,
                eos_token: row.eos_token,
                text,
                finish_reason: row.finished.unwrap_or(FinishReason::Length),
            })
        })
        .collect()
}

/// Logits per step (rows × vocabulary) from which rows are sampled in parallel.
const PARALLEL_SAMPLING_MIN_LOGITS: usize = 1 << 17;

/// The next token of every unfinished row (`None` for finished rows), drawn from its own generator;
/// rows are sampled in parallel, reading the logits in place when they are f32 on the CPU. Greedy
/// decoding off the CPU takes each row's argmax on the device.
fn sample_rows(
    logits: &Tensor,
    rows: &mut [Row],
    sampler: &SamplerConfig,
) -> Result<Vec<Option<u32>>> {
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    if sampler.temperature <= 0.0 && !logits.device().is_cpu() {
        let tokens = super::sampling::argmax_rows(&logits)?;
        return Ok(rows
            .iter()
            .zip(tokens)
            .map(|(row, token)| row.finished.is_none().then_some(token))
            .collect());
    }
    let vocab = logits.dim(1)?;
    let sample = |(row, row_logits): (&mut Row, &[f32])| {
        row.finished
            .is_none()
            .then(|| sampler.sample(row_logits, &mut row.rng))
    };
    let draw = |table: &[f32], rows: &mut [Row]| -> Vec<Option<u32>> {
        if table.len() >= PARALLEL_SAMPLING_MIN_LOGITS {
            rows.par_iter_mut()
                .zip(table.par_chunks(vocab))
                .map(sample)
                .collect()
        } else {
            rows.iter_mut()
                .zip(table.chunks(vocab))
                .map(sample)
                .collect()
        }
    };
    let (storage, layout) = logits.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(cpu), Some((start, end))) => {
            Ok(draw(&cpu.as_slice::<f32>()?[start..end], rows))
        }
        _ => {
            drop(storage);
            Ok(draw(&logits.flatten_all()?.to_vec1::<f32>()?, rows))
        }
    }
}

/// Appends `token` to `row` and decides whether the row has finished.
fn advance_row(
    row: &mut Row,
    token: u32,
    requests: &[GenerationRequest],
    tokenizer: &Tokenizer,
    config: &GenerationConfig,
) -> Result<()> {
    if config.eos_token_ids.contains(&token) {
        row.eos_token = Some(token);
        row.finished = Some(FinishReason::Stop);
        return Ok(());
    }
    row.tokens.push(token);
    if config.stop_strings.iter().any(|s| !s.is_empty()) {
        let prompt = &requests[row.prompt_index].prompt;
        let text = tokenizer.decode_continuation(prompt, &row.tokens)?;
        let stop_at = config
            .stop_strings
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min();
        if let Some(at) = stop_at {
            row.finished = Some(FinishReason::Stop);
            row.text = text[..at].to_string();
        }
    }
    if row.finished.is_none() && row.tokens.len() >= config.max_new_tokens {
        row.finished = Some(FinishReason::Length);
    }
    Ok(())
}
