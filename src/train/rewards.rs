//! GRPO rewards, composable with weights from the recipe: accuracy (the verifier), code tests
//! (the share of a code problem's tests its program passes in the sandbox, or all-or-nothing), format
//! (`<think>…</think>` then an answer), language consistency (R1's share of target-script words),
//! a length penalty, a cosine-scaled length reward, an n-gram repetition penalty and DAPO's soft
//! over-long punishment. Each term is reported separately.

use serde::{Deserialize, Serialize};

use crate::generate::prompts::full_generation;
use crate::verify::readability::ngram_repetition;
use crate::verify::{
    format_reward, grade_with, language_consistency_reward, Checker, VerifyOptions,
};

/// Weights of the reward terms (0 turns a term off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// 1 for a verified-correct answer, else 0.
    pub accuracy: f64,
    /// Weight of the `code_tests` reward of code problems (0 for other problems): the share of
    /// tests passed, or 1/0 for all/not all with `code_tests_all_or_nothing`.
    pub code_tests: f64,
    /// Whether `code_tests` is 1 only when every test passes (else the share passed).
    pub code_tests_all_or_nothing: bool,
    /// 1 for exactly one `<think>…</think>` followed by a non-empty answer.
    pub format: f64,
    /// Share of the prompt's script among the reasoning's words (R1's language reward).
    pub language: f64,
    /// Penalty per unit of `completion_tokens / max_new_tokens`.
    pub length_penalty: f64,
    /// Weight of the cosine-scaled length reward (Yeo et al. 2025, "Demystifying Long
    /// Chain-of-Thought Reasoning in LLMs"), which folds correctness in: usually set `accuracy = 0`
    /// when it is on.
    pub cosine_length: f64,
    /// The cosine reward of a correct answer at length 0 and at the length limit: short right
    /// answers earn most.
    pub cosine_correct: [f64; 2],
    /// The cosine reward of a wrong answer at length 0 and at the length limit: short wrong
    /// answers are punished most (the model is pushed to think longer when it is wrong).
    pub cosine_wrong: [f64; 2],
    /// Weight of the repetition penalty: `−(share of repeated word n-grams)` of the completion.
    pub repetition_penalty: f64,
    /// The n of the repetition penalty's word n-grams.
    pub repetition_ngram: usize,
    /// Soft over-long punishment: completions within this many tokens of the limit are penalised
    /// linearly down to `-overlong_penalty` at the limit (0 = off).
    pub overlong_buffer: usize,
    /// Size of the over-long punishment at the limit.
    pub overlong_penalty: f64,
    /// Whether the scored text lacks a `<think>` that the prompt opened, for the format term. Rarely
    /// needed: a prefill the template ends with (R1-Distill's `<think>\n`) is detected and graded
    /// with the completion (see [`Scored::prefill`]).
    pub think_prefilled: bool,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            accuracy: 1.0,
            code_tests: 0.0,
            code_tests_all_or_nothing: false,
            format: 0.0,
            language: 0.0,
            length_penalty: 0.0,
            cosine_length: 0.0,
            cosine_correct: [1.0, 0.5],
            cosine_wrong: [-1.0, -0.5],
            repetition_penalty: 0.0,
            repetition_ngram: 3,
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
    /// Code problems: the share of tests passed (or 1/0 all-or-nothing); 0 for other problems.
    pub code_tests: f64,
    /// 1 if well formatted.
    pub format: f64,
    /// Language consistency in [0, 1].
    pub language: f64,
    /// `completion_tokens / max_new_tokens`.
    pub length: f64,
    /// The cosine-scaled length reward (see [`RewardConfig::cosine_length`]).
    pub cosine_length: f64,
    /// Repetition in [-1, 0]: minus the share of repeated word n-grams.
    pub repetition: f64,
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
    /// What the chat template opened the assistant turn with (`<think>\n` for R1-Distill, see
    /// [`crate::generate::prompts::think_prefill`]); empty for most templates. The terms grade
    /// prefill + completion, as generate/filter do, so a completion cut off mid-thought has no answer.
    pub prefill: &'a str,
    /// The sampled completion text (without the prefill).
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
    /// Scores one completion (its prefill and text).
    pub fn score(&self, item: &Scored<'_>) -> RewardBreakdown {
        let generation = full_generation(item.prefill, item.completion);
        let grade = grade_with(
            item.checker,
            item.gold,
            &generation,
            &VerifyOptions::default(),
        );
        let accuracy = f64::from(u8::from(grade.correct));
        let code_tests = match &grade.code {
            Some(code) if self.code_tests_all_or_nothing => f64::from(u8::from(code.correct())),
            Some(code) => code.fraction(),
            None => 0.0,
        };
        let format = if self.format != 0.0 {
            format_reward(&generation, self.think_prefilled && item.prefill.is_empty())
        } else {
            0.0
        };
        let language = if self.language != 0.0 {
            let reasoning = generation.split("</think>").next().unwrap_or_default();
            let reasoning = reasoning.trim_start();
            let reasoning = reasoning.strip_prefix("<think>").unwrap_or(reasoning);
            language_consistency_reward(item.prompt, reasoning)
        } else {
            0.0
        };
        let length = item.completion_tokens as f64 / item.max_new_tokens.max(1) as f64;
        let cosine_length = if self.cosine_length != 0.0 {
            let [short, long] = if accuracy > 0.0 {
                self.cosine_correct
            } else {
                self.cosine_wrong
            };
            // 1 at length 0, falling along a half cosine to 0 at the limit.
            let closeness = 0.5 * (1.0 + (std::f64::consts::PI * length.min(1.0)).cos());
            long + (short - long) * closeness
        } else {
            0.0
        };
        let repetition = if self.repetition_penalty != 0.0 {
            -ngram_repetition(item.completion, self.repetition_ngram)
        } else {
            0.0
        };
        let overlong = if self.overlong_buffer > 0 {
            let start = item.max_new_tokens.saturating_sub(self.overlong_buffer);
            let over = item.completion_tokens.saturating_sub(start) as f64;
            -(over / self.overlong_buffer as f64).min(1.0)
        } else {
            0.0
        };
        let total = self.accuracy * accuracy
            + self.code_tests * code_tests
            + self.format * format
            + self.language * language
            - self.length_penalty * length
            + self.cosine_length * cosine_length
            + self.repetition_penalty * repetition
            + self.overlong_penalty * overlong;
        RewardBreakdown {
            accuracy,
            code_tests,
            format,
            language,
            length,
            cosine_length,
            repetition,
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
///
/// The standard deviations are the unbiased ones (Bessel's n − 1, torch's default), as TRL's
/// `GRPOTrainer` computes them (`trl.trainer.utils.nanstd`), so that distill's advantages — and a
/// run's updates — are the ones users compare with; a group (or batch) of one has std 0. With
/// group size G the advantages are those of the population std scaled by `sqrt((G − 1) / G)`
/// (up to the 1e-4 in the denominator). Checked against TRL in `tests/training_reference.rs`.
pub fn advantages(
    rewards: &[f64],
    group_size: usize,
    scaling: AdvantageScaling,
) -> (Vec<f64>, usize) {
    const EPS: f64 = 1e-4;
    let stats = |values: &[f64]| {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        if n < 2 {
            return (mean, 0.0);
        }
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn score(config: &RewardConfig, completion: &str, tokens: usize) -> RewardBreakdown {
        config.score(&Scored {
            prompt: "What is 2+2?",
            prefill: "",
            completion,
            gold: "4",
            checker: &Checker::Gold,
            completion_tokens: tokens,
            max_new_tokens: 100,
        })
    }

    #[test]
    fn the_cosine_reward_prefers_short_right_answers_and_long_wrong_ones() {
        let config = RewardConfig {
            accuracy: 0.0,
            cosine_length: 1.0,
            ..Default::default()
        };
        let right = |tokens| score(&config, "\\boxed{4}", tokens).total;
        let wrong = |tokens| score(&config, "\\boxed{5}", tokens).total;
        assert!((right(0) - 1.0).abs() < 1e-12 && (right(100) - 0.5).abs() < 1e-12);
        assert!((right(50) - 0.75).abs() < 1e-12, "half way down the cosine");
        assert!(right(20) > right(60) && right(60) > right(90));
        assert!((wrong(0) + 1.0).abs() < 1e-12 && (wrong(100) + 0.5).abs() < 1e-12);
        assert!(
            wrong(20) < wrong(60),
            "a wrong answer is punished less when it thought longer"
        );
        assert!(
            wrong(100) < right(100),
            "any right answer beats any wrong one"
        );
        assert_eq!(
            right(400),
            right(100),
            "lengths past the limit count as the limit"
        );
    }

    #[test]
    fn the_repetition_penalty_is_the_share_of_repeated_ngrams() {
        let config = RewardConfig {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let varied = score(&config, "we add two and two to get four so \\boxed{4}", 12);
        assert_eq!(varied.repetition, 0.0);
        assert_eq!(varied.total, 1.0);
        // "a b c" repeated: 10 trigrams (of 12 words), 3 distinct: 1 - 3/10 = 0.7 repeated.
        let looping = score(&config, "a b c a b c a b c a b c", 12);
        assert!(
            (looping.repetition + 0.7).abs() < 1e-12,
            "{}",
            looping.repetition
        );
        assert!((looping.total + 1.4).abs() < 1e-12);
        assert_eq!(score(&config, "too short", 2).repetition, 0.0);
    }
}
