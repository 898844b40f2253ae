//! SFT examples: conversations rendered with the student's chat template, tokenised with a loss mask
//! over the assistant's tokens only, and arranged into batches (length buckets, or packing several
//! examples into one row with attention kept inside each example and positions restarting per example).

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::{AttentionMask, ChatOptions, Message, ModelError, Result, Tokenizer};

/// One tokenised conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftExample {
    /// Where the example came from: file and line or row, or shard directory, problem id and sample.
    pub id: String,
    /// Prompt and completion token ids.
    pub tokens: Vec<u32>,
    /// 1 for tokens the loss covers (the assistant's reply), 0 for prompt and system tokens.
    pub loss_mask: Vec<u8>,
}

/// What happens to an example longer than `max_length` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OverLength {
    /// Leave it out (counted in the log).
    Drop,
    /// Keep its first `max_length` tokens (counted in the log).
    Truncate,
}

/// Renders and tokenises a conversation whose last turn is the assistant's reply.
///
/// The prompt is the conversation without the reply, rendered with the generation prompt; the
/// completion is what the full rendering adds after it (the reply and the template's end-of-turn
/// marker). Templates that rewrite the last reply (R1-Distill's drops the reasoning) are not
/// prefix-stable; for them the completion is the reply itself — without a reasoning opener that the
/// generation prompt already contains — followed by the EOS token.
pub fn tokenize_conversation(
    tokenizer: &Tokenizer,
    messages: &[Message],
) -> Result<(Vec<u32>, Vec<u8>)> {
    let Some((reply, context)) = messages.split_last().filter(|(m, _)| m.role == "assistant")
    else {
        return Err(ModelError::Invalid(
            "an SFT conversation must end with an assistant turn".into(),
        ));
    };
    let with_prompt = ChatOptions {
        add_generation_prompt: true,
        enable_thinking: None,
    };
    let prompt = tokenizer.render_chat(context, &with_prompt)?;
    let full = tokenizer.render_chat(messages, &ChatOptions::default())?;
    let completion = match full.strip_prefix(&prompt) {
        Some(rest) => rest.to_string(),
        None => {
            let mut reply_text = reply.content.as_str();
            for opener in ["<think>\n", "<think>"] {
                if prompt.ends_with(opener) {
                    reply_text = reply_text.strip_prefix(opener).unwrap_or(reply_text);
                    break;
                }
            }
            format!("{reply_text}{}", tokenizer.eos_token().unwrap_or_default())
        }
    };
    let prompt_ids = tokenizer.encode(&prompt, false)?;
    let completion_ids = tokenizer.encode(&completion, false)?;
    let mut mask = vec![0u8; prompt_ids.len()];
    mask.resize(prompt_ids.len() + completion_ids.len(), 1);
    let mut tokens = prompt_ids;
    tokens.extend(completion_ids);
    Ok((tokens, mask))
}

/// Counts of examples dropped or truncated by the length policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LengthReport {
    /// Examples kept.
    pub kept: usize,
    /// Examples left out for being too long.
    pub dropped: usize,
    /// Examples cut to `max_length`.
    pub truncated: usize,
}

/// Applies the length policy to one tokenised example (`None`: dropped), counting in `report`.
pub fn apply_length_policy(
    mut example: SftExample,
    max_length: usize,
    policy: OverLength,
    report: &mut LengthReport,
) -> Option<SftExample> {
    if example.tokens.len() > max_length {
        match policy {
            OverLength::Drop => {
                report.dropped += 1;
                return None;
            }
            OverLength::Truncate => {
                example.tokens.truncate(max_length);
                example.loss_mask.truncate(max_length);
                report.truncated += 1;
            }
        }
    }
    report.kept += 1;
    Some(example)
}

/// Rows of a batch, each a list of example indices (one example per row unless packing).
pub type BatchPlan = Vec<Vec<usize>>;

/// How examples are grouped into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Rows per batch.
    pub batch_size: usize,
    /// Longest row in tokens.
    pub max_length: usize,
    /// Pack several examples into one row.
    pub pack: bool,
    /// Seed of the per-epoch shuffle.
    pub seed: u64,
}

/// Examples sorted into length buckets of this many batches before batching.
const BUCKET_BATCHES: usize = 16;

impl Batching {
    /// The batches of epoch `epoch` over examples of token counts `lengths`: a seeded shuffle,
    /// then either packing in shuffled order or length buckets (sort within groups of
    /// [`BUCKET_BATCHES`] batches, so rows of a batch have similar lengths), with the batch
    /// order shuffled again.
    pub fn plan(&self, lengths: &[usize], epoch: u64) -> Vec<BatchPlan> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.shuffle(&mut rng);
        let rows: Vec<Vec<usize>> = if self.pack {
            let mut rows = Vec::new();
            let mut current: Vec<usize> = Vec::new();
            let mut used = 0;
            for index in order {
                let len = lengths[index];
                if used + len > self.max_length && !current.is_empty() {
                    rows.push(std::mem::take(&mut current));
                    used = 0;
                }
                current.push(index);
                used += len;
            }
            if !current.is_empty() {
                rows.push(current);
            }
            rows
        } else {
            let group = self.batch_size * BUCKET_BATCHES;
            order
                .chunks(group)
                .flat_map(|chunk| {
                    let mut chunk = chunk.to_vec();
                    chunk.sort_by_key(|&i| (lengths[i], i));
                    chunk.into_iter().map(|i| vec![i]).collect::<Vec<_>>()
                })
                .collect()
        };
        let mut batches: Vec<BatchPlan> = rows.chunks(self.batch_size).map(<[_]>::to_vec).collect();
        batches.shuffle(&mut rng);
        batches
    }
}

/// Tensors of one batch, right-padded to its longest row.
#[derive(Debug)]
pub struct Batch {
    /// Token ids `[B, T]`.
    pub ids: Tensor,
    /// Positions `[B, T]`, restarting at 0 for each packed example.
    pub positions: Tensor,
    /// Attention mask: causal, and inside each example when packed.
    pub mask: AttentionMask,
    /// `[B, T]` f32: 1 where the token is a training target.
    pub loss_mask: Tensor,
    /// Segment (example) index of each position, `u32::MAX` for padding.
    pub segments: Vec<Vec<u32>>,
    /// Non-padding tokens.
    pub tokens: usize,
    /// Tokens the loss covers.
    pub target_tokens: usize,
    /// Token count of each example in the batch (a packed row holds several).
    pub example_lengths: Vec<usize>,
}

impl Batch {
    /// Builds the tensors for `plan` (pad id 0, never attended to or trained on).
    pub fn new(examples: &[SftExample], plan: &BatchPlan, device: &Device) -> Result<Self> {
        let width = plan
            .iter()
            .map(|row| row.iter().map(|&i| examples[i].tokens.len()).sum::<usize>())
            .max()
            .unwrap_or(0)
            .max(2);
        let (mut ids, mut positions, mut loss) = (Vec::new(), Vec::new(), Vec::new());
        let mut segments = Vec::with_capacity(plan.len());
        let mut example_lengths = Vec::new();
        let (mut tokens, mut target_tokens) = (0, 0);
        for row in plan {
            let mut row_segments = Vec::with_capacity(width);
            for (segment, &index) in row.iter().enumerate() {
                let example = &examples[index];
                ids.extend_from_slice(&example.tokens);
                positions.extend(0..example.tokens.len() as u32);
                // Token 0 of an example is never a target: nothing before it in its segment predicts it.
                loss.extend(example.loss_mask.iter().enumerate().map(|(t, &m)| {
                    if t == 0 {
                        0.0
                    } else {
                        f32::from(m)
                    }
                }));
                row_segments.extend(std::iter::repeat_n(segment as u32, example.tokens.len()));
                tokens += example.tokens.len();
                example_lengths.push(example.tokens.len());
                target_tokens += example
                    .loss_mask
                    .iter()
                    .skip(1)
                    .filter(|&&m| m == 1)
                    .count();
            }
            let pad = width - row_segments.len();
            ids.extend(std::iter::repeat_n(0u32, pad));
            positions.extend(std::iter::repeat_n(0u32, pad));
            loss.extend(std::iter::repeat_n(0.0f32, pad));
            row_segments.extend(std::iter::repeat_n(u32::MAX, pad));
            segments.push(row_segments);
        }
        let shape = (plan.len(), width);
        Ok(Batch {
            ids: Tensor::from_vec(ids, shape, device)?,
            positions: Tensor::from_vec(positions, shape, device)?,
            mask: AttentionMask::packed(&segments, device)?,
            loss_mask: Tensor::from_vec(loss, shape, device)?,
            segments,
            tokens,
            target_tokens,
            example_lengths,
        })
    }
}
