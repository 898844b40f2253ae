//! GRPO rewards, composable with weights from the recipe: accuracy (the verifier), format
//! (`<think>…</think>` then an answer), language consistency (R1's share of target-script words),
//! a length penalty and DAPO's soft over-long punishment. Each term is reported separately.

use serde::{Deserialize, Serialize};

use crate::verify::{
    format_reward, grade_with, language_consistency_reward, Checker, VerifyOptions,
};

/// Weights of the reward terms (0 turns a term off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// 1 for a verified-correct answer, else 0.
    pub accuracy: f64,
    /// 1 for exactly one `<think>…</think>` followed by a non-empty answer.
    pub format: f64,
    /// Share of the prompt's script among the reasoning's words (R1's language reward).
    pub language: f64,
    /// Penalty per unit of `completion_tokens / max_new_tokens`.
    pub length_penalty: f64,
    /// Soft over-long punishment: completions within this many tokens of the limit are penalised
    /// linearly down to `-overlong_penalty` at the limit (0 = off).
    pub overlong_buffer: usize,
    /// Size of the over-long punishment at the limit.
    pub overlong_penalty: f64,
    /// Whether the chat template already opened `<think>` in the prompt (R1-Distill).
    pub think_prefilled: bool,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            accuracy: 1.0,
            format: 0.0,
            language: 0.0,
            length_penalty: 0.0,
            overlong_buffer: 0,
            overlong_penalty: 1.0,
            think_prefilled: false,
        }
    }
}

/// Every term of one completion's reward, unweighted, and the weighted total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RewardBreakdown {
    /// 1 if correct.
    pub accuracy: f64,
    /// 1 if well formatted.
    pub format: f64,
    /// Language consistency in [0, 1].
    pub language: f64,
    /// `completion_tokens / max_new_tokens`.
    pub length: f64,
    /// Over-long punishment in [-1, 0] (before its weight).
    pub overlong: f64,
    /// The weighted sum.
    pub total: f64,
}

/// One completion to score.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    /// The prompt text (for the language term).
    pub prompt: &'a str,
    /// The full completion text.
    pub completion: &'a str,
    /// The gold answer.
    pub gold: &'a str,
    /// How the problem's answers are checked (from its metadata).
    pub checker: &'a Checker,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// The generation limit.
    pub max_new_tokens: usize,
}

impl RewardConfig {
    /// Scores one completion.
    pub fn score(&self, item: &Scored<'_>) -> RewardBreakdown {
        let accuracy = f64::from(u8::from(
            grade_with(
                item.checker,
                item.gold,
                item.completion,
                &VerifyOptions::default(),
            )
            .correct,
        ));
        let format = if self.format != 0.0 {
            format_reward(item.completion, self.think_prefilled)
        } else {
            0.0
        };
        let language = if self.language != 0.0 {
            let reasoning = item
                .completion
                .split("</think>")
                .next()
                .unwrap_or(item.completion);
            language_consistency_reward(item.prompt, reasoning)
        } else {
            0.0
        };
        let length = item.completion_tokens as f64 / item.max_new_tokens.max(1) as f64;
        let overlong = if self.overlong_buffer > 0 {
            let start = item.max_new_tokens.saturating_sub(self.overlong_buffer);
            let over = item.completion_tokens.saturating_sub(start) as f64;
            -(over / self.overlong_buffer as f64).min(1.0)
        } else {
            0.0
        };
        let total = self.accuracy * accuracy + self.format * format + self.language * language
            - self.length_penalty * length
            + self.overlong_penalty * overlong;
        RewardBreakdown {
            accuracy,
            format,
            language,
            length,
            overlong,
            total,
        }
    }
}

/// How group-relative advantages are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageScaling {
    /// `(r − group mean) / (group std + ε)` (GRPO).
    Group,
    /// `(r − group mean) / (batch std + ε)`.
    Batch,
    /// `r − group mean` (Dr. GRPO).
    None,
}

/// Group-relative advantages for rewards laid out as consecutive groups of `group_size`; also
/// returns how many groups had zero reward spread (they carry no learning signal).
pub fn advantages(
    rewards: &[f64],
    group_size: usize,
    scaling: AdvantageScaling,
) -> (Vec<f64>, usize) {
    const EPS: f64 = 1e-4;
    let stats = |values: &[f64]| {
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let var =
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len().max(1) as f64;
        (mean, var.sqrt())
    };
    let (_, batch_std) = stats(rewards);
    let mut out = Vec::with_capacity(rewards.len());
    let mut flat_groups = 0;
    for group in rewards.chunks(group_size.max(1)) {
        let (mean, std) = stats(group);
        if std < 1e-12 {
            flat_groups += 1;
        }
        let scale = match scaling {
            AdvantageScaling::Group => std + EPS,
            AdvantageScaling::Batch => batch_std + EPS,
            AdvantageScaling::None => 1.0,
        };
        out.extend(group.iter().map(|r| (r - mean) / scale));
    }
    (out, flat_groups)
}
