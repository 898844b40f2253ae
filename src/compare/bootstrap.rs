//! Percentile bootstrap over problems (and over evaluation seeds when a run has several), with a
//! seeded generator so every interval is reproducible.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A point estimate with its 95% percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The estimate on the full data (mean over seeds and problems).
    pub mean: f64,
    /// 2.5th percentile of the bootstrap replicates.
    pub low: f64,
    /// 97.5th percentile of the bootstrap replicates.
    pub high: f64,
}

impl Interval {
    /// Whether this interval and `other` share any point.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.low <= other.high && other.low <= self.high
    }

    /// Whether 0 lies outside the interval.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// Per-problem values of one run: `values[seed][problem]`, every seed over the same problems in the
/// same order.
pub type SeedTable = [Vec<f64>];

/// The number of problems of a table whose seeds all cover the same number of problems; `None`
/// for a table without seeds or with seeds of different lengths.
fn problem_count(table: &SeedTable) -> Option<usize> {
    let problems = table.first()?.len();
    table
        .iter()
        .all(|row| row.len() == problems)
        .then_some(problems)
}

fn grand_mean(table: &SeedTable) -> f64 {
    let (sum, n) = table
        .iter()
        .flatten()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n.max(1) as f64
}

/// One replicate: seeds drawn with replacement, then the mean over the drawn problem indices.
fn replicate(table: &SeedTable, problems: &[usize], rng: &mut ChaCha8Rng) -> f64 {
    let seeds = table.len();
    let mut sum = 0.0;
    for _ in 0..seeds {
        let row = &table[rng.random_range(0..seeds)];
        sum += problems.iter().map(|&p| row[p]).sum::<f64>();
    }
    sum / (seeds * problems.len()).max(1) as f64
}

fn draw_problems(count: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    (0..count).map(|_| rng.random_range(0..count)).collect()
}

fn percentile_interval(mean: f64, mut replicates: Vec<f64>) -> Interval {
    if replicates.is_empty() {
        return Interval {
            mean,
            low: mean,
            high: mean,
        };
    }
    replicates.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let index = (q * (replicates.len() - 1) as f64).round() as usize;
        replicates[index.min(replicates.len() - 1)]
    };
    Interval {
        mean,
        low: at(0.025),
        high: at(0.975),
    }
}

/// The mean of `table` with a 95% interval from `resamples` bootstrap replicates seeded by `seed`;
/// `None` when the table has no seeds or its seeds have different numbers of problems.
pub fn bootstrap_mean(table: &SeedTable, resamples: usize, seed: u64) -> Option<Interval> {
    let problems = problem_count(table)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let replicates = if problems == 0 {
        Vec::new()
    } else {
        (0..resamples)
            .map(|_| {
                let drawn = draw_problems(problems, &mut rng);
                replicate(table, &drawn, &mut rng)
            })
            .collect()
    };
    Some(percentile_interval(grand_mean(table), replicates))
}

/// The difference of means `a − b` with a 95% paired-bootstrap interval: each replicate draws one
/// set of problem indices used for both runs (their problems must be the same, in the same order),
/// and each run's seeds independently. `None` when the runs have no problems, different problem
/// counts, or seeds of different lengths.
pub fn paired_difference(
    a: &SeedTable,
    b: &SeedTable,
    resamples: usize,
    seed: u64,
) -> Option<Interval> {
    let problems = problem_count(a)?;
    if problems == 0 || problem_count(b)? != problems {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let replicates = (0..resamples)
        .map(|_| {
            let drawn = draw_problems(problems, &mut rng);
            replicate(a, &drawn, &mut rng) - replicate(b, &drawn, &mut rng)
        })
        .collect();
    Some(percentile_interval(
        grand_mean(a) - grand_mean(b),
        replicates,
    ))
}
