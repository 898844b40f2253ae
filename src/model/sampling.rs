//! Choosing the next token from logits: greedy, or temperature with top-k, top-p and min-p filtering,
//! drawn from a per-row seeded generator so results do not depend on batch composition.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// How next tokens are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Drop tokens less likely than `min_p` times the most likely one (0 = off).
    pub min_p: f32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// The next token for one row of logits. Filters apply in the order temperature, top-k, top-p, min-p.
    pub fn sample(&self, logits: &[f32], rng: &mut ChaCha8Rng) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv_t = 1.0 / self.temperature;
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp()))
            .filter(|&(_, p)| p > 0.0)
            .collect();
        let filtering = (self.top_k > 0 && self.top_k < candidates.len()) || self.top_p < 1.0;
        if filtering {
            candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if self.top_k > 0 {
                candidates.truncate(self.top_k);
            }
            if self.top_p < 1.0 {
                let total: f32 = candidates.iter().map(|c| c.1).sum();
                let mut cumulative = 0.0;
                let mut keep = candidates.len();
                for (i, c) in candidates.iter().enumerate() {
                    cumulative += c.1 / total;
                    if cumulative >= self.top_p {
                        keep = i + 1;
                        break;
                    }
                }
                candidates.truncate(keep);
            }
        }
        if self.min_p > 0.0 {
            let top = candidates.iter().map(|c| c.1).fold(0.0, f32::max);
            candidates.retain(|c| c.1 >= self.min_p * top);
        }
        let total: f32 = candidates.iter().map(|c| c.1).sum();
        let mut target = rng.random::<f32>() * total;
        for &(id, p) in &candidates {
            target -= p;
            if target <= 0.0 {
                return id;
            }
        }
        candidates.last().map_or_else(|| argmax(logits), |c| c.0)
    }
}

/// Index of the largest logit (the first one on ties, as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}
