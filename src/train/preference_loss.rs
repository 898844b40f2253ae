//! The DPO family of preference losses on whole-sequence log-probabilities: each pair's loss, its
//! gradient with respect to the policy's two log-probs, and the implicit rewards TRL logs.
//!
//! The math runs in f64 on per-pair scalars; the trainer backpropagates through the model with
//! the surrogate `Σ ∂L/∂logπ · logπ`, whose gradient is the loss's. With
//! `π_c, π_r` the policy's summed completion log-probs of the chosen and rejected replies,
//! `ρ_c, ρ_r` the frozen reference's, `ℓ_c, ℓ_r` the completion lengths in tokens, and
//! `Δ = (π_c − ρ_c) − (π_r − ρ_r)`:
//! - `sigmoid` (DPO, Rafailov et al. 2023): `−(1 − ε) log σ(βΔ) − ε log σ(−βΔ)`, ε the label
//!   smoothing (conservative DPO; ε = 0 is plain DPO, TRL's `loss_type="sigmoid"`; with ε the formula
//!   of TRL < 1.0's `sigmoid`, kept in its `CPOTrainer`);
//! - `robust` (Chowdhury et al. 2024): `(−(1 − ε) log σ(βΔ) + ε log σ(−βΔ)) / (1 − 2ε)`, an unbiased
//!   loss under label noise ε — TRL's `loss_type="robust"`;
//! - `ipo` (Azar et al. 2023): `(Δ̄ − 1/(2β))²` with `Δ̄ = (π_c − ρ_c)/ℓ_c − (π_r − ρ_r)/ℓ_r`
//!   (log-ratios averaged over tokens, as TRL's `loss_type="ipo"`);
//! - `simpo` (Meng et al. 2024): reference-free and length-normalised,
//!   `−(1 − ε) log σ(h) − ε log σ(−h)` with `h = β (π_c/ℓ_c − π_r/ℓ_r) − γ` (TRL's `CPOTrainer`
//!   with `loss_type="simpo"`, where `γ = simpo_gamma`).
//!
//! Rewards are `β (π − ρ)` (DPO, IPO) or `β π / ℓ` (SimPO), as TRL logs them.
//!
//! Any of them can be joined by a weighted negative log-likelihood of the chosen replies
//! ([`chosen_nll`]; RPO, Pang et al. 2024), TRL's `loss_type=[…, "sft"]`: DPO alone lowers the
//! likelihood of tokens the two replies share in other contexts, and the NLL term holds it up.

use serde::{Deserialize, Serialize};

/// Which preference loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PreferenceLoss {
    /// DPO's logistic loss on the reference-relative margin, with optional label smoothing.
    Sigmoid,
    /// Robust DPO: the logistic loss corrected for label noise ε.
    Robust,
    /// IPO's squared loss on the token-averaged margin.
    Ipo,
    /// SimPO: reference-free, length-normalised, with a target margin γ.
    Simpo,
}

impl PreferenceLoss {
    /// Whether the loss compares against a frozen reference model.
    pub fn needs_reference(self) -> bool {
        !matches!(self, PreferenceLoss::Simpo)
    }
}

/// The loss and its coefficients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PreferenceLossConfig {
    /// Which loss.
    pub kind: PreferenceLoss,
    /// β: the inverse temperature of the implicit reward (DPO, SimPO) or IPO's regulariser.
    pub beta: f64,
    /// ε: the probability that a pair's labels are flipped (`sigmoid`, `robust` and `simpo`; 0 = none).
    pub label_smoothing: f64,
    /// γ: SimPO's target reward margin (ignored by the other losses).
    pub simpo_gamma: f64,
}

/// One pair's sequence log-probabilities (sums over the completion's tokens) and lengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairLogProbs {
    /// The policy's log-prob of the chosen completion.
    pub policy_chosen: f64,
    /// The policy's log-prob of the rejected completion.
    pub policy_rejected: f64,
    /// The reference's log-prob of the chosen completion (unused by SimPO).
    pub reference_chosen: f64,
    /// The reference's log-prob of the rejected completion (unused by SimPO).
    pub reference_rejected: f64,
    /// Tokens of the chosen completion that were scored.
    pub chosen_tokens: usize,
    /// Tokens of the rejected completion that were scored.
    pub rejected_tokens: usize,
}

/// One pair's loss, gradient and rewards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairLoss {
    /// The pair's loss.
    pub loss: f64,
    /// ∂loss/∂(policy's chosen log-prob).
    pub grad_chosen: f64,
    /// ∂loss/∂(policy's rejected log-prob).
    pub grad_rejected: f64,
    /// The chosen completion's implicit reward.
    pub chosen_reward: f64,
    /// The rejected completion's implicit reward.
    pub rejected_reward: f64,
}

/// `log σ(x)`, stable for large |x|.
fn log_sigmoid(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

/// `σ(x)`, stable for large |x|.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The smoothed logistic loss `−(1 − ε) log σ(h) − ε log σ(−h)` and its derivative in `h`.
fn smoothed_logistic(h: f64, epsilon: f64) -> (f64, f64) {
    let loss = -(1.0 - epsilon) * log_sigmoid(h) - epsilon * log_sigmoid(-h);
    let slope = -(1.0 - epsilon) * sigmoid(-h) + epsilon * sigmoid(h);
    (loss, slope)
}

impl PreferenceLossConfig {
    /// The loss of one pair, its gradient with respect to the policy's log-probs, and its rewards.
    pub fn pair_loss(&self, pair: &PairLogProbs) -> PairLoss {
        let beta = self.beta;
        let chosen_len = pair.chosen_tokens.max(1) as f64;
        let rejected_len = pair.rejected_tokens.max(1) as f64;
        let chosen_ratio = pair.policy_chosen - pair.reference_chosen;
        let rejected_ratio = pair.policy_rejected - pair.reference_rejected;
        // DPO and robust DPO: a function of h = βΔ, whose slope gives both gradients.
        let of_margin = |(loss, slope): (f64, f64)| PairLoss {
            loss,
            grad_chosen: slope * beta,
            grad_rejected: -slope * beta,
            chosen_reward: beta * chosen_ratio,
            rejected_reward: beta * rejected_ratio,
        };
        let h = beta * (chosen_ratio - rejected_ratio);
        let epsilon = self.label_smoothing;
        match self.kind {
            PreferenceLoss::Sigmoid => of_margin(smoothed_logistic(h, epsilon)),
            PreferenceLoss::Robust => {
                let scale = 1.0 - 2.0 * epsilon;
                of_margin((
                    (-(1.0 - epsilon) * log_sigmoid(h) + epsilon * log_sigmoid(-h)) / scale,
                    (-(1.0 - epsilon) * sigmoid(-h) - epsilon * sigmoid(h)) / scale,
                ))
            }
            PreferenceLoss::Ipo => {
                let gap = chosen_ratio / chosen_len - rejected_ratio / rejected_len - 0.5 / beta;
                PairLoss {
                    loss: gap * gap,
                    grad_chosen: 2.0 * gap / chosen_len,
                    grad_rejected: -2.0 * gap / rejected_len,
                    chosen_reward: beta * chosen_ratio,
                    rejected_reward: beta * rejected_ratio,
                }
            }
            PreferenceLoss::Simpo => {
                let chosen_reward = beta * pair.policy_chosen / chosen_len;
                let rejected_reward = beta * pair.policy_rejected / rejected_len;
                let (loss, slope) =
                    smoothed_logistic(chosen_reward - rejected_reward - self.simpo_gamma, epsilon);
                PairLoss {
                    loss,
                    grad_chosen: slope * beta / chosen_len,
                    grad_rejected: -slope * beta / rejected_len,
                    chosen_reward,
                    rejected_reward,
                }
            }
        }
    }
}

/// The mean negative log-likelihood of the chosen replies' tokens over a batch of pairs,
/// `−Σ π_c / Σ ℓ_c` (TRL's `sft` loss type), and its derivative in each pair's `π_c` (the same
/// for every pair: `−1 / Σ ℓ_c`).
pub fn chosen_nll(pairs: &[PairLogProbs]) -> (f64, f64) {
    let tokens = pairs.iter().map(|p| p.chosen_tokens).sum::<usize>().max(1) as f64;
    let logp = pairs.iter().map(|p| p.policy_chosen).sum::<f64>();
    (-logp / tokens, -1.0 / tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> PairLogProbs {
        PairLogProbs {
            policy_chosen: -12.5,
            policy_rejected: -15.25,
            reference_chosen: -13.0,
            reference_rejected: -14.0,
            chosen_tokens: 7,
            rejected_tokens: 11,
        }
    }

    /// The analytic gradient equals a central finite difference of the loss, for every loss.
    #[test]
    fn gradients_match_finite_differences() {
        for kind in [
            PreferenceLoss::Sigmoid,
            PreferenceLoss::Robust,
            PreferenceLoss::Ipo,
            PreferenceLoss::Simpo,
        ] {
            let config = PreferenceLossConfig {
                kind,
                beta: 0.3,
                label_smoothing: 0.1,
                simpo_gamma: 0.5,
            };
            let base = pair();
            let analytic = config.pair_loss(&base);
            let h = 1e-6;
            let numeric = |shift: fn(&mut PairLogProbs, f64)| {
                let (mut up, mut down) = (base, base);
                shift(&mut up, h);
                shift(&mut down, -h);
                (config.pair_loss(&up).loss - config.pair_loss(&down).loss) / (2.0 * h)
            };
            let chosen = numeric(|p, d| p.policy_chosen += d);
            let rejected = numeric(|p, d| p.policy_rejected += d);
            assert!((analytic.grad_chosen - chosen).abs() < 1e-7, "{kind:?}");
            assert!((analytic.grad_rejected - rejected).abs() < 1e-7, "{kind:?}");
        }
    }

    #[test]
    fn log_sigmoid_is_stable_far_from_zero() {
        assert_eq!(log_sigmoid(800.0), 0.0);
        assert!((log_sigmoid(-800.0) + 800.0).abs() < 1e-12);
        assert!((log_sigmoid(0.0) + std::f64::consts::LN_2).abs() < 1e-15);
    }
}
