//! The one-sentence finding of the report: whether distillation (the run labelled `sft`) beats RL
//! (the run labelled `grpo`) at matched compute, stated only when the intervals support it.

use serde::{Deserialize, Serialize};

use super::bootstrap::Interval;
use super::report::RunReport;

/// How the finding is decided (also printed in the report).
pub const METHOD: &str = "pass@1 of `sft` vs `grpo`. When both were evaluated on the same \
problems, the 95% paired-bootstrap interval of the difference (same problems drawn for both runs \
in each replicate) must exclude 0; otherwise their 95% intervals must not overlap. Compute counts \
as matched when the better run used at most 2× the training FLOPs of the other.";

/// The most training compute the better run may use, as a multiple of the other's, for the
/// comparison to count as matched.
pub const MATCHED_COMPUTE_RATIO: f64 = 2.0;

/// The verdict on distillation vs RL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Whether the intervals (and compute) support a claim.
    pub supported: bool,
    /// `sft` or `grpo` when supported.
    pub winner: Option<String>,
    /// The paired-bootstrap interval of pass@1(sft) − pass@1(grpo), when computed.
    pub difference: Option<Interval>,
    /// The finding, or why the result is inconclusive.
    pub sentence: String,
}

fn inconclusive(difference: Option<Interval>, why: String) -> Finding {
    Finding {
        supported: false,
        winner: None,
        difference,
        sentence: format!("Inconclusive: {why}"),
    }
}

/// Decides the finding from the report rows and the paired difference (if the runs share problems).
pub fn decide(runs: &[RunReport], difference: Option<Interval>) -> Finding {
    let find = |label: &str| runs.iter().find(|r| r.label == label);
    let (Some(sft), Some(grpo)) = (find("sft"), find("grpo")) else {
        return inconclusive(
            difference,
            "the comparison needs runs labelled `sft` and `grpo`.".into(),
        );
    };
    for run in [sft, grpo] {
        if !run.trained() {
            return inconclusive(
                difference,
                format!(
                    "the training compute of `{}` is unknown (give --train {}=DIR).",
                    run.label, run.label
                ),
            );
        }
    }
    let (separated, evidence) = match &difference {
        Some(d) => (
            d.excludes_zero(),
            format!(
                "paired bootstrap 95% CI of the pass@1 difference (sft − grpo) [{:.3}, {:.3}]",
                d.low, d.high
            ),
        ),
        None => (
            !sft.pass_at_1.overlaps(&grpo.pass_at_1),
            format!(
                "pass@1 95% CIs [{:.3}, {:.3}] (sft) and [{:.3}, {:.3}] (grpo)",
                sft.pass_at_1.low, sft.pass_at_1.high, grpo.pass_at_1.low, grpo.pass_at_1.high
            ),
        ),
    };
    if !separated {
        let verdict = if difference.is_some() {
            "includes 0"
        } else {
            "overlap"
        };
        return inconclusive(
            difference,
            format!(
                "pass@1 is {:.3} (sft) vs {:.3} (grpo), but the {evidence} {verdict}.",
                sft.pass_at_1.mean, grpo.pass_at_1.mean
            ),
        );
    }
    let (winner, loser) = if sft.pass_at_1.mean > grpo.pass_at_1.mean {
        (sft, grpo)
    } else {
        (grpo, sft)
    };
    let ratio = winner.train_flops() / loser.train_flops().max(f64::MIN_POSITIVE);
    if ratio > MATCHED_COMPUTE_RATIO {
        return inconclusive(
            difference,
            format!(
                "`{}` scores higher ({evidence}) but used {ratio:.1}× the training FLOPs of `{}`, so compute is not matched.",
                winner.label, loser.label
            ),
        );
    }
    let name = |r: &RunReport| {
        if r.label == "sft" {
            "Distillation (SFT)"
        } else {
            "RL (GRPO)"
        }
    };
    let sentence = format!(
        "{} beats {} at matched compute: pass@1 {:.3} vs {:.3} ({evidence}; training FLOPs {:.3e} vs {:.3e}).",
        name(winner),
        name(loser).replace("Distillation", "distillation"),
        winner.pass_at_1.mean,
        loser.pass_at_1.mean,
        winner.train_flops(),
        loser.train_flops()
    );
    Finding {
        supported: true,
        winner: Some(winner.label.clone()),
        difference,
        sentence,
    }
}
