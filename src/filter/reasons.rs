//! The names of the rejection reasons the filter writes to `reject_reasons` (besides the
//! readability issues, which use [`crate::verify::ReadabilityIssue::name`]).

/// An answer was extracted but does not match the gold answer.
pub const WRONG_ANSWER: &str = "wrong_answer";
/// No final answer could be extracted (no `\boxed{}` etc. after `</think>`).
pub const NO_ANSWER: &str = "no_answer";
/// The same problem already has a sample with the same generation text.
pub const DUPLICATE: &str = "duplicate";
/// The problem shares an n-gram with an evaluation problem.
pub const CONTAMINATED: &str = "contaminated";
/// Correct and readable, but not among the k shortest of its problem (`shortest:K`).
pub const OVER_K: &str = "over_k";

/// Every reason the filter can write, in the order reasons appear in a row.
pub fn all_reasons() -> Vec<&'static str> {
    use crate::verify::ReadabilityIssue as Issue;
    let mut reasons = vec![WRONG_ANSWER, NO_ANSWER];
    reasons.extend(Issue::ALL.map(Issue::name));
    reasons.extend([DUPLICATE, CONTAMINATED, OVER_K]);
    reasons
}
