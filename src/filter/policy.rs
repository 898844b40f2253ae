//! The acceptance policy: keep every clean correct trace (`all`) or only the `k` shortest
//! clean correct traces of each problem (`shortest:K`, by completion tokens, ties by sample
//! index); the others get [`OVER_K`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::reasons::OVER_K;
use super::Candidate;

/// Which clean, correct traces of a problem are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Policy {
    /// Accept every clean correct trace. Written `all`.
    #[default]
    All,
    /// Accept the `k` (≥ 1) shortest clean correct traces per problem. Written `shortest:K`.
    Shortest(usize),
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::All => write!(f, "all"),
            Policy::Shortest(k) => write!(f, "shortest:{k}"),
        }
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "all" {
            return Ok(Policy::All);
        }
        let bad = || format!("policy `{text}` is not `all` or `shortest:K` with K ≥ 1");
        let k = text.strip_prefix("shortest:").ok_or_else(bad)?;
        match k.trim().parse::<usize>() {
            Ok(k) if k >= 1 => Ok(Policy::Shortest(k)),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for Policy {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Policy> for String {
    fn from(policy: Policy) -> Self {
        policy.to_string()
    }
}

impl Policy {
    /// Adds [`OVER_K`] to the clean candidates beyond the `k` shortest of their problem;
    /// candidates that already have a reason are left alone.
    pub(super) fn apply(self, candidates: &mut [Candidate]) {
        let Policy::Shortest(k) = self else {
            return;
        };
        let mut clean: BTreeMap<&str, Vec<(u32, u32, usize)>> = BTreeMap::new();
        for (index, candidate) in candidates.iter().enumerate() {
            if candidate.reasons.is_empty() {
                let row = &candidate.facts;
                clean.entry(row.id.as_str()).or_default().push((
                    // Traces of unknown length rank after every counted one.
                    row.completion_tokens.unwrap_or(u32::MAX),
                    row.sample_index,
                    index,
                ));
            }
        }
        let over: Vec<usize> = clean
            .into_values()
            .flat_map(|mut group| {
                group.sort_unstable();
                group.into_iter().skip(k).map(|(_, _, index)| index)
            })
            .collect();
        for index in over {
            candidates[index].reasons.push(OVER_K.to_string());
        }
    }
}
