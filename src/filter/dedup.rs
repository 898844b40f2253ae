//! Exact deduplication: among samples of one problem with byte-identical generation text (equal
//! SHA-256), the first by (problem id, sample index) is kept and the others get [`DUPLICATE`].

use std::collections::HashSet;

use super::reasons::DUPLICATE;
use super::Candidate;

/// Marks exact duplicates; `candidates` must be sorted by (id, sample index).
pub(super) fn mark_duplicates(candidates: &mut [Candidate]) {
    let mut seen: HashSet<(&str, &[u8; 32])> = HashSet::with_capacity(candidates.len());
    let mut duplicates = Vec::new();
    for (index, candidate) in candidates.iter().enumerate() {
        let facts = &candidate.facts;
        let key = (facts.id.as_str(), &facts.generation_hash);
        if !seen.insert(key) {
            duplicates.push(index);
        }
    }
    for index in duplicates {
        candidates[index].reasons.push(DUPLICATE.to_string());
    }
}
