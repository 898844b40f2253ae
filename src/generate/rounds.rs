//! Sampling until verified (`--until-verified K --max-samples M`): each problem is sampled in
//! rounds of `n` until K of its samples pass the verifier and the readability checks — the
//! filter's own judgement of a single trace ([`crate::filter::judge::judge`]) — or M samples
//! were drawn.
//!
//! Round `r` of a problem covers sample indices `r·n .. min((r+1)·n, M)` and is drawn with
//! [`round_seed`]`(problem seed, r)`, so a problem's rows depend only on the run seed, its id and
//! the verdicts of its earlier rounds: a resumed run re-reads the rows already written, judges
//! them, and continues with the same rounds an uninterrupted run would draw. Keys stay
//! (problem id, sample index), written exactly once; each row carries its round, and a problem's
//! pass rate is its passing samples over its drawn ones.

use std::collections::HashMap;

use crate::data::hashing::sha256_u64;
use crate::data::schema::TraceRow;
use crate::data::sources::Problem;
use crate::filter::judge::{judge, Checker};
use crate::verify::{ReadabilityConfig, VerifyOptions};

/// The seed of round `round` of a problem seeded `problem_seed`: the problem seed itself for
/// round 0 (so one round of `n` draws what a fixed `-n` run draws), a hash of both after.
pub fn round_seed(problem_seed: u64, round: u32) -> u64 {
    if round == 0 {
        problem_seed
    } else {
        sha256_u64(format!("{problem_seed}\nround {round}").as_bytes())
    }
}

/// The stopping rule: rounds of `per_round` samples until `target` pass or `most` were drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rounds {
    /// Samples per round (`n`).
    pub(super) per_round: u32,
    /// Passing samples wanted (K).
    pub(super) target: u32,
    /// Most samples per problem (M).
    pub(super) most: u32,
}

/// What has been drawn for one problem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Samples in the output directory.
    pub(super) drawn: u32,
    /// Of those, samples that pass.
    pub(super) passed: u32,
}

/// One round of one problem still to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RoundJob {
    /// The round.
    pub(super) round: u32,
    /// Its first sample index.
    pub(super) first_sample: u32,
    /// Its number of samples.
    pub(super) samples: u32,
}

impl Rounds {
    /// The round a problem needs next, or `None` when it is done; `present` says whether a
    /// sample index is already written (a round cut short by a crash is drawn again and only
    /// its missing samples kept).
    pub(super) fn next(&self, tally: Tally, present: impl Fn(u32) -> bool) -> Option<RoundJob> {
        if tally.passed >= self.target || tally.drawn >= self.most {
            return None;
        }
        let missing = (0..self.most).find(|&index| !present(index))?;
        let round = missing / self.per_round;
        let first_sample = round * self.per_round;
        Some(RoundJob {
            round,
            first_sample,
            samples: self.per_round.min(self.most - first_sample),
        })
    }
}

/// Whether a trace passes: verified and readable, as the filter judges one trace.
pub(super) struct Judge {
    checkers: HashMap<String, Checker>,
    readability: ReadabilityConfig,
    options: VerifyOptions,
}

impl Judge {
    /// A judge for `problems` (their checkers built and gold answers checked; a sandbox is
    /// opened only for code problems); the error names the problem and field.
    pub(super) fn new(problems: &[Problem]) -> anyhow::Result<Self> {
        let sandbox = crate::sandbox::SandboxSettings::default();
        let checkers = crate::verify::grade::checkers_for(problems, &sandbox, "problem")?;
        Ok(Judge {
            checkers: problems
                .iter()
                .map(|p| p.id.clone())
                .zip(checkers)
                .collect(),
            readability: ReadabilityConfig::default(),
            options: VerifyOptions::default(),
        })
    }

    /// Whether `row` passes the verifier and the readability checks.
    pub(super) fn passes(&self, row: &TraceRow) -> bool {
        self.checkers.get(&row.id).is_some_and(|checker| {
            judge(row, checker, &self.readability, &self.options)
                .reasons
                .is_empty()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_stop_at_the_target_or_the_most_samples() {
        let rounds = Rounds {
            per_round: 4,
            target: 2,
            most: 10,
        };
        let none = |_: u32| false;
        let fresh = rounds.next(Tally::default(), none).unwrap();
        assert_eq!((fresh.round, fresh.first_sample, fresh.samples), (0, 0, 4));
        let below = |i: u32| i < 8;
        let last = rounds
            .next(
                Tally {
                    drawn: 8,
                    passed: 1,
                },
                below,
            )
            .unwrap();
        assert_eq!((last.round, last.first_sample, last.samples), (2, 8, 2));
        let enough = Tally {
            drawn: 4,
            passed: 2,
        };
        assert_eq!(rounds.next(enough, |i| i < 4), None);
        let spent = Tally {
            drawn: 10,
            passed: 0,
        };
        assert_eq!(rounds.next(spent, |_| true), None);
        // A round cut short: drawn again from its start.
        let cut = rounds
            .next(
                Tally {
                    drawn: 6,
                    passed: 0,
                },
                |i| i < 6,
            )
            .unwrap();
        assert_eq!((cut.round, cut.first_sample), (1, 4));
        assert_eq!(round_seed(7, 0), 7);
        assert_ne!(round_seed(7, 1), round_seed(7, 2));
    }
}
