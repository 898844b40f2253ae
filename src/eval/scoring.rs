//! Scoring a problem's k samples: pass@1 (the fraction of samples that are correct) and cons@k
//! (majority vote over extracted answers, with [`verify`] as the equivalence; code samples'
//! test-outcome keys are equal only when identical).

use crate::verify::code::OUTCOME_KEY_PREFIX;
use crate::verify::verify;

/// Whether two extracted answers vote together: identical test-outcome keys for code samples,
/// else `verify` with `representative` as the gold.
fn same_answer(representative: &str, answer: &str) -> bool {
    if representative.starts_with(OUTCOME_KEY_PREFIX) || answer.starts_with(OUTCOME_KEY_PREFIX) {
        representative == answer
    } else {
        verify(representative, answer)
    }
}

/// One graded sample, as the scorers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradedSample {
    /// The extracted final answer, when the completion has one.
    pub answer: Option<String>,
    /// Whether the sample is verified correct.
    pub correct: bool,
}

/// The scores of one problem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProblemScore {
    /// Fraction of the samples that are correct (0 when there are none).
    pub pass_at_1: f64,
    /// Whether the majority-vote answer is correct.
    pub cons_correct: bool,
}

/// The index of the sample whose answer wins the majority vote, or `None` when no sample has an
/// answer. Answers are grouped in order of first occurrence: a sample joins the first group whose
/// first answer `verify`-accepts it (that first answer plays the gold; test-outcome keys of code
/// samples must be identical); the largest group wins and
/// ties go to the group that appeared first. The returned index is the group's first sample.
pub fn majority_vote(samples: &[GradedSample]) -> Option<usize> {
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for (index, sample) in samples.iter().enumerate() {
        let Some(answer) = &sample.answer else {
            continue;
        };
        let joined = groups.iter_mut().find(|(first, _)| {
            samples[*first]
                .answer
                .as_deref()
                .is_some_and(|representative| same_answer(representative, answer))
        });
        match joined {
            Some((_, count)) => *count += 1,
            None => groups.push((index, 1)),
        }
    }
    let mut best: Option<(usize, usize)> = None;
    for (first, count) in groups {
        if best.is_none_or(|(_, best_count)| count > best_count) {
            best = Some((first, count));
        }
    }
    best.map(|(first, _)| first)
}

/// pass@1 and cons@k of one problem's samples. The vote is correct when the winning group's
/// first sample was graded correct.
pub fn score_problem(samples: &[GradedSample]) -> ProblemScore {
    let correct = samples.iter().filter(|s| s.correct).count();
    let pass_at_1 = if samples.is_empty() {
        0.0
    } else {
        correct as f64 / samples.len() as f64
    };
    let cons_correct = majority_vote(samples).is_some_and(|winner| samples[winner].correct);
    ProblemScore {
        pass_at_1,
        cons_correct,
    }
}

/// Mean pass@1 and cons@k accuracy over problems (both 0 for no problems).
pub fn aggregate(scores: &[ProblemScore]) -> (f64, f64) {
    if scores.is_empty() {
        return (0.0, 0.0);
    }
    let n = scores.len() as f64;
    let pass = scores.iter().map(|s| s.pass_at_1).sum::<f64>() / n;
    let cons = scores.iter().filter(|s| s.cons_correct).count() as f64 / n;
    (pass, cons)
}
