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
            if self.top_k > 0 && self.top_k < candidates.len() {
                keep_most_likely(&mut candidates, self.top_k);
            }
            if self.top_p < 1.0 {
                let total: f32 = candidates.iter().map(|c| c.1).sum();
                keep_nucleus(&mut candidates, self.top_p * total);
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

/// Most likely first; ties by lower id, so the order is total and results are reproducible.
fn by_likelihood(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Keeps the `k` most likely candidates, sorted most likely first (a selection, then a sort of
/// only those `k`).
fn keep_most_likely(candidates: &mut Vec<(u32, f32)>, k: usize) {
    if k < candidates.len() {
        candidates.select_nth_unstable_by(k, by_likelihood);
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(by_likelihood);
}

/// Candidates sorted before a full sort is needed to find a nucleus: with a large vocabulary the
/// nucleus almost always lies among the most likely few hundred tokens.
const NUCLEUS_HEAD: usize = 512;

/// Keeps the smallest most-likely-first prefix whose mass reaches `mass`, sorted. Sorts only the
/// most likely [`NUCLEUS_HEAD`] candidates when they already hold that mass (the prefix a full sort
/// gives, up to f32 rounding of the running sums), and everything otherwise.
fn keep_nucleus(candidates: &mut Vec<(u32, f32)>, mass: f32) {
    if candidates.len() > NUCLEUS_HEAD {
        candidates.select_nth_unstable_by(NUCLEUS_HEAD, by_likelihood);
        let head_mass: f32 = candidates[..NUCLEUS_HEAD].iter().map(|c| c.1).sum();
        if head_mass >= mass {
            candidates.truncate(NUCLEUS_HEAD);
        }
    }
    candidates.sort_unstable_by(by_likelihood);
    let mut cumulative = 0.0;
    let mut keep = candidates.len();
    for (i, c) in candidates.iter().enumerate() {
        cumulative += c.1;
        if cumulative >= mass {
            keep = i + 1;
            break;
        }
    }
    candidates.truncate(keep);
}

/// Index of the largest logit (the first one on ties, as torch.argmax). NaNs are passed over,
/// except a NaN in the first position, which is returned (as the plain left-to-right scan does).
///
/// Two passes: the largest value, over [`ARGMAX_LANES`] running maxima (SSE `maxps` on x86-64),
/// then the first position that holds it. A greedy decoding step runs this on every row's
/// full-vocabulary logits (32 × 151,936 at batch 32 with Qwen's vocabulary), where a
/// compare-and-branch scan cost 12% of the step.
pub fn argmax(logits: &[f32]) -> u32 {
    if logits.first().is_none_or(|first| first.is_nan()) {
        return 0;
    }
    let max = largest(logits);
    logits.iter().position(|&l| l == max).unwrap_or(0) as u32
}

/// The largest non-NaN value (`-inf` if there is none), over [`ARGMAX_LANES`] running maxima.
fn largest(values: &[f32]) -> f32 {
    let chunks = values.chunks_exact(ARGMAX_LANES);
    // `f32::max` passes over a NaN operand, as the scan's `>` does.
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [f32::NEG_INFINITY; ARGMAX_LANES];
    for chunk in chunks {
        lanes_max_in_place(&mut lanes, chunk.try_into().expect("chunks_exact"));
    }
    lanes.into_iter().fold(tail, f32::max)
}

/// `lanes[l] = max(lanes[l], chunk[l])`, passing over NaNs in `chunk`. On x86-64 four SSE
/// `maxps` (in the baseline target, so no run-time check): the compiler leaves the plain loop
/// scalar.
#[cfg(target_arch = "x86_64")]
fn lanes_max_in_place(lanes: &mut [f32; ARGMAX_LANES], chunk: &[f32; ARGMAX_LANES]) {
    use std::arch::x86_64::{_mm_loadu_ps, _mm_max_ps, _mm_storeu_ps};
    for q in 0..ARGMAX_LANES / 4 {
        // SAFETY: SSE is part of x86-64; both arrays hold 16 floats, so `4q..4q + 4` is in
        // bounds. `maxps(v, m)` returns `m` when `v` is NaN.
        unsafe {
            let v = _mm_loadu_ps(chunk.as_ptr().add(4 * q));
            let m = _mm_loadu_ps(lanes.as_ptr().add(4 * q));
            _mm_storeu_ps(lanes.as_mut_ptr().add(4 * q), _mm_max_ps(v, m));
        }
    }
}

/// `lanes[l] = max(lanes[l], chunk[l])`, passing over NaNs in `chunk`.
#[cfg(not(target_arch = "x86_64"))]
fn lanes_max_in_place(lanes: &mut [f32; ARGMAX_LANES], chunk: &[f32; ARGMAX_LANES]) {
    for (m, &v) in lanes.iter_mut().zip(chunk) {
        *m = m.max(v);
    }
}

/// Running maxima [`argmax`] keeps: 16 f32 lanes, four SSE vectors.
const ARGMAX_LANES: usize = 16;

/// The greedy token of every row of `logits` `[rows, vocab]`: the lowest id among the row's largest
/// logits, as [`argmax`]. It is computed where the logits are, so on a GPU only `rows` ids cross to
/// the host instead of `rows × vocab` logits.
pub fn argmax_rows(logits: &candle_core::Tensor) -> candle_core::Result<Vec<u32>> {
    use candle_core::Tensor;
    let (rows, vocab) = logits.dims2()?;
    let device = logits.device();
    let at_max = logits.broadcast_eq(&logits.max_keepdim(1)?)?;
    let ids = Tensor::arange(0u32, vocab as u32, device)?
        .unsqueeze(0)?
        .broadcast_as((rows, vocab))?;
    let past_the_end = Tensor::full(vocab as u32, (rows, vocab), device)?;
    at_max.where_cond(&ids, &past_the_end)?.min(1)?.to_vec1()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The set of ids drawn in `draws` samples.
    fn drawn(
        config: &SamplerConfig,
        logits: &[f32],
        draws: usize,
    ) -> std::collections::BTreeSet<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        (0..draws)
            .map(|_| config.sample(logits, &mut rng))
            .collect()
    }

    /// The nucleus by brute force: sort everything, keep the prefix reaching `top_p` of the mass.
    fn nucleus(logits: &[f32], top_p: f32) -> std::collections::BTreeSet<u32> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut p: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, f64::from(l - max).exp()))
            .collect();
        let total: f64 = p.iter().map(|c| c.1).sum();
        p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut cumulative = 0.0;
        let mut set = std::collections::BTreeSet::new();
        for (id, q) in p {
            set.insert(id);
            cumulative += q / total;
            if cumulative >= f64::from(top_p) {
                break;
            }
        }
        set
    }

    #[test]
    fn top_k_draws_only_the_k_most_likely() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 1000) as f32 / 100.0)
            .collect();
        let config = SamplerConfig {
            top_k: 5,
            ..Default::default()
        };
        let mut top: Vec<u32> = (0..1000).collect();
        top.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let expected: std::collections::BTreeSet<u32> = top[..5].iter().copied().collect();
        assert_eq!(drawn(&config, &logits, 2000), expected);
    }

    #[test]
    fn top_p_keeps_the_nucleus_whether_it_is_small_or_spans_most_of_the_vocabulary() {
        // Peaked: the nucleus is a handful of tokens among 50,000.
        let peaked: Vec<f32> = (0..50_000)
            .map(|i| {
                if i % 9_973 == 0 {
                    12.0 - (i / 9_973) as f32
                } else {
                    -30.0
                }
            })
            .collect();
        // Flat: the nucleus needs most of 2,000 nearly equal tokens (beyond the sorted head).
        let flat: Vec<f32> = (0..2_000).map(|i| (i % 7) as f32 * 0.01).collect();
        let config = SamplerConfig {
            top_p: 0.9,
            ..Default::default()
        };
        assert_eq!(drawn(&config, &peaked, 2_000), nucleus(&peaked, 0.9));
        // Near-equal masses: f32 running sums may move the cut by a token or two.
        let got = drawn(&config, &flat, 20_000);
        let (inner, outer) = (nucleus(&flat, 0.899), nucleus(&flat, 0.901));
        assert!(got.is_subset(&outer), "drew a token outside the nucleus");
        assert!(
            inner.len() > NUCLEUS_HEAD,
            "the flat case needs the full sort"
        );
        assert!(
            got.len() * 100 >= inner.len() * 99,
            "{} of {} nucleus tokens drawn",
            got.len(),
            inner.len()
        );
    }

    #[test]
    fn min_p_drops_tokens_far_below_the_most_likely() {
        let logits = [0.0, -0.1, -5.0, -6.0];
        let config = SamplerConfig {
            min_p: 0.1,
            ..Default::default()
        };
        assert_eq!(drawn(&config, &logits, 500), [0, 1].into_iter().collect());
    }

    /// The left-to-right scan that [`argmax`] must agree with: the first strictly larger logit
    /// wins, so NaNs never win unless they come first.
    fn scan_argmax(logits: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        best as u32
    }

    /// Long rows (vector body and tail) with ties, NaNs, infinities and a leading NaN.
    #[test]
    fn argmax_agrees_with_the_left_to_right_scan() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for len in [0, 1, 15, 16, 17, 100, 1000, 4099] {
            for case in 0..9 {
                // Few distinct values, so the maximum is usually tied.
                let mut row: Vec<f32> = (0..len)
                    .map(|_| f32::from(rng.random_range(0u8..6)) - 3.0)
                    .collect();
                if len > 0 {
                    let at = rng.random_range(0..len);
                    match case {
                        1 => row[at] = f32::NAN,
                        2 => row[at] = f32::INFINITY,
                        3 => row.iter_mut().for_each(|v| *v = f32::NEG_INFINITY),
                        4 => row[0] = f32::NAN,
                        5 => row.iter_mut().for_each(|v| *v = f32::NAN),
                        6 => row[len - 1] = 9.0,
                        // A unique maximum with a NaN after it in the same lane.
                        7 => {
                            row[at / 2] = 9.0;
                            if at / 2 + 16 < len {
                                row[at / 2 + 16] = f32::NAN;
                            }
                        }
                        _ => {}
                    }
                }
                assert_eq!(argmax(&row), scan_argmax(&row), "len {len}, case {case}");
            }
        }
    }

    #[test]
    fn argmax_rows_picks_the_lowest_id_among_ties_like_argmax() {
        let rows: [[f32; 6]; 4] = [
            [0.5, 2.0, -1.0, 2.0, 0.0, 1.0],
            [-3.0, -2.0, -2.0, -5.0, -2.0, -9.0],
            [7.0, 7.0, 7.0, 7.0, 7.0, 7.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.25],
        ];
        let logits = candle_core::Tensor::from_iter(
            rows.iter().flatten().copied(),
            &candle_core::Device::Cpu,
        )
        .unwrap()
        .reshape((4, 6))
        .unwrap();
        let expected: Vec<u32> = rows.iter().map(|row| argmax(row)).collect();
        assert_eq!(expected, vec![1, 1, 0, 5]);
        assert_eq!(argmax_rows(&logits).unwrap(), expected);
    }
}
