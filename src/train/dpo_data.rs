//! DPO examples: preference pairs (the shards `distill pairs` writes) with each side rendered
//! through the student's chat template and tokenised as an SFT example — prompt then reply, the
//! loss mask over the reply only — kept in the on-disk token store, split by problem into
//! training and held-out pairs, and laid out as batches of `[chosen rows…, rejected rows…]`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};

use super::sft_data::{
    apply_length_policy, tokenize_conversation, Batch, LengthReport, OverLength, SftExample,
};
use super::token_store::{StoredExample, TokenStore, TokenStoreWriter};
use crate::data::hashing::sha256_u64;
use crate::data::pair_schema::PairRow;
use crate::data::shards::{read_shard, shard_paths};
use crate::filter::pairs::PAIRS_DIR;
use crate::model::{Decoder, Message, Tokenizer};
use crate::train::loss::next_token_log_probs;

/// One tokenised preference pair.
#[derive(Debug, Clone)]
pub struct PreferencePair {
    /// The pair's key: problem id and pair index.
    pub key: (String, u32),
    /// The prompt followed by the chosen reply.
    pub chosen: StoredExample,
    /// The prompt followed by the rejected reply.
    pub rejected: StoredExample,
}

impl PreferencePair {
    /// Tokens of both sides.
    pub fn tokens(&self) -> usize {
        self.chosen.len() + self.rejected.len()
    }
}

/// Tokenised training and held-out pairs, kept on disk.
pub struct PreferenceData {
    /// Where the tokens are.
    pub store: TokenStore,
    /// Pairs trained on, in key order.
    pub train: Vec<PreferencePair>,
    /// Held-out pairs (whole problems), in key order.
    pub eval: Vec<PreferencePair>,
    /// Training pairs kept, dropped or truncated by the length policy.
    pub report: LengthReport,
}

/// How pairs are read and tokenised.
pub struct PairLoading<'a> {
    /// A `distill pairs` output directory, or its `pairs/` shard directory.
    pub data: &'a Path,
    /// The student's tokenizer and chat template.
    pub tokenizer: &'a Tokenizer,
    /// Longest side in tokens.
    pub max_length: usize,
    /// What happens to a longer side: a dropped side drops its pair.
    pub over_length: OverLength,
    /// Fraction of problems held out.
    pub eval_fraction: f64,
    /// The token store's file.
    pub store: &'a Path,
}

/// The shard directory of `data`: `data/pairs` when `data` is a `distill pairs` output directory.
fn pair_shards(data: &Path) -> PathBuf {
    let nested = data.join(PAIRS_DIR);
    if nested.is_dir() {
        nested
    } else {
        data.to_path_buf()
    }
}

/// One side of a pair: the prompt turns followed by the reply.
fn side(row: &PairRow, reply: &[Message], which: &str) -> anyhow::Result<Vec<Message>> {
    if reply.is_empty() {
        bail!("field {which}: no reply");
    }
    Ok(row.prompt.iter().chain(reply).cloned().collect())
}

impl PairLoading<'_> {
    /// Reads every pair shard a shard at a time, tokenising both sides into the token store.
    pub fn load(&self) -> anyhow::Result<PreferenceData> {
        let dir = pair_shards(self.data);
        let mut writer = TokenStoreWriter::create(self.store)?;
        let (mut report, mut eval_report) = (LengthReport::default(), LengthReport::default());
        let mut loaded: Vec<(bool, PreferencePair)> = Vec::new();
        for path in shard_paths(&dir).with_context(|| {
            format!(
                "{}: not a `distill pairs` output (run `distill pairs` on the filter's output)",
                dir.display()
            )
        })? {
            for (row_index, row) in read_shard::<PairRow>(&path)?.into_iter().enumerate() {
                let origin = format!(
                    "{} row {row_index} (id {}, pair {})",
                    path.display(),
                    row.id,
                    row.pair_index
                );
                let held_out =
                    (sha256_u64(row.id.as_bytes()) % 10_000) as f64 / 10_000.0 < self.eval_fraction;
                let counted = if held_out {
                    &mut eval_report
                } else {
                    &mut report
                };
                let mut sides = Vec::with_capacity(2);
                for (which, reply) in [("chosen", &row.chosen), ("rejected", &row.rejected)] {
                    let messages = side(&row, reply, which).with_context(|| origin.clone())?;
                    let (tokens, loss_mask) = tokenize_conversation(self.tokenizer, &messages)
                        .with_context(|| format!("{origin}: field {which}"))?;
                    sides.push(SftExample {
                        id: format!("{origin} {which}"),
                        tokens,
                        loss_mask,
                    });
                }
                let Some((chosen, rejected)) = self.length_policy(sides, counted) else {
                    continue;
                };
                let pair = PreferencePair {
                    key: (row.id.clone(), row.pair_index),
                    chosen: writer.append(&chosen)?,
                    rejected: writer.append(&rejected)?,
                };
                loaded.push((held_out, pair));
            }
        }
        if loaded.is_empty() && report.dropped + eval_report.dropped == 0 {
            bail!(
                "{}: no preference pairs to train on (a pair needs an accepted and a rejected trace \
                 of one problem: sample more per problem, or at a higher temperature)",
                dir.display()
            );
        }
        loaded.sort_by(|a, b| a.1.key.cmp(&b.1.key));
        let (eval, train): (Vec<_>, Vec<_>) = loaded.into_iter().partition(|(held, _)| *held);
        let train: Vec<PreferencePair> = train.into_iter().map(|(_, p)| p).collect();
        if train.is_empty() {
            bail!(
                "{}: every pair was held out or dropped by max_length {}",
                dir.display(),
                self.max_length
            );
        }
        Ok(PreferenceData {
            store: writer.finish()?,
            train,
            eval: eval.into_iter().map(|(_, p)| p).collect(),
            report,
        })
    }

    /// Applies the length policy to both sides of a pair, counting the pair once in `report`
    /// (dropped when either side is, truncated when either side is) and both sides' loss tokens
    /// (a dropped pair loses all of them).
    fn length_policy(
        &self,
        sides: Vec<SftExample>,
        report: &mut LengthReport,
    ) -> Option<(SftExample, SftExample)> {
        let mut sides_report = LengthReport::default();
        let mut kept = sides.into_iter().filter_map(|side| {
            apply_length_policy(side, self.max_length, self.over_length, &mut sides_report)
        });
        let (chosen, rejected) = (kept.next(), kept.next());
        report.loss_tokens += sides_report.loss_tokens;
        if sides_report.dropped > 0 {
            report.dropped += 1;
            report.lost_loss_tokens += sides_report.loss_tokens;
            return None;
        }
        report.lost_loss_tokens += sides_report.lost_loss_tokens;
        if sides_report.truncated > 0 {
            report.truncated += 1;
        }
        report.kept += 1;
        Some((chosen?, rejected?))
    }
}

/// A model's summed reply log-probs of the rows of a batch.
#[derive(Debug)]
pub struct SequenceLogProbs {
    /// One per row — for a [`pair_batch`], the chosen sides then the rejected sides
    /// (differentiable through the model).
    pub logps: Tensor,
    /// Reply tokens scored per row, in the same order.
    pub tokens: Vec<usize>,
    /// Tokens of the batch (prompt and reply, no padding).
    pub batch_tokens: usize,
}

/// The batch of `pairs` of `store`: the chosen sides' rows, then the rejected sides'.
pub fn pair_batch(
    store: &TokenStore,
    pairs: &[&PreferencePair],
    device: &Device,
) -> anyhow::Result<Batch> {
    let examples: Vec<StoredExample> = pairs
        .iter()
        .map(|p| p.chosen.clone())
        .chain(pairs.iter().map(|p| p.rejected.clone()))
        .collect();
    let plan: Vec<Vec<usize>> = (0..examples.len()).map(|i| vec![i]).collect();
    store.batch(&examples, &plan, device)
}

/// Scores every row of `batch` with `model`: the summed log-prob of its loss-masked tokens (the
/// reply given the prompt).
pub fn sequence_log_probs(model: &Decoder, batch: &Batch) -> anyhow::Result<SequenceLogProbs> {
    let hidden = model.forward(&batch.ids, &batch.positions, Some(&batch.mask), None)?;
    let per_token = next_token_log_probs(&hidden, model.lm_head(), &batch.ids, &batch.loss_mask)?;
    let width = batch.loss_mask.dim(1)?;
    let tokens = batch
        .loss_mask
        .narrow(1, 1, width - 1)?
        .sum(1)?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|n| n as usize)
        .collect();
    Ok(SequenceLogProbs {
        logps: per_token.sum(1)?,
        tokens,
        batch_tokens: batch.tokens,
    })
}
