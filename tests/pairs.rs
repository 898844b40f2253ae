//! `distill pairs` on a filter's real output: which rejected traces become rejected sides, in
//! what order, how many per problem, what a pair row holds, and that contaminated problems,
//! duplicates and problems without a rejected trace give none.

mod filter_common;

use std::path::Path;

use distill::data::pair_schema::PairRow;
use distill::data::shards::read_rows;
use distill::filter::pairs::{run_pairs, PairConfig, PAIRS_DIR};
use distill::filter::{run_filter, FilterConfig};
use distill::model::Message;
use serde_json::json;

/// The labelled traces, plus a copy of the wrong answer (sample 8), filtered (decontaminated
/// against MATH-500) into `root/filtered`.
fn filtered(root: &Path) -> std::path::PathBuf {
    let input = root.join("traces");
    let mut rows: Vec<_> = filter_common::labelled()
        .into_iter()
        .map(|(_, row)| row)
        .collect();
    let mut copy = rows[2].clone();
    assert_eq!((copy.id.as_str(), copy.sample_index), ("sum/1", 2));
    copy.sample_index = 8;
    rows.push(copy);
    filter_common::write_input(&input, &rows, 4);
    let out = root.join("filtered");
    let config: FilterConfig = serde_json::from_value(json!({
        "input": input, "out": out, "progress": false,
        "decontaminate": [filter_common::math500()],
    }))
    .unwrap();
    run_filter(&config).unwrap();
    out
}

fn pairs_of(config: &PairConfig) -> Vec<PairRow> {
    read_rows::<PairRow>(&config.out.join(PAIRS_DIR)).unwrap()
}

#[test]
fn pairs_prefer_wrong_answers_and_never_use_duplicates_or_contaminated_problems() {
    let root = tempfile::tempdir().unwrap();
    let filtered = filtered(root.path());
    let config = PairConfig::new(filtered, root.path().join("pairs"));
    let summary = run_pairs(&config).unwrap();
    let pairs = pairs_of(&config);

    // sum/1 has one accepted trace (sample 0) and six rejected ones that may be rejected
    // sides (not the duplicates 1 and 8); product/2 has no rejected trace; polar/3 is contaminated.
    assert_eq!(summary.problems, 3, "{summary:?}");
    assert_eq!(summary.contaminated_problems, 1);
    assert_eq!(summary.problems_with_pairs, 1);
    assert_eq!(summary.pairs, 4, "at most 4 pairs per problem by default");
    assert_eq!(pairs.len(), 4);
    assert!(pairs.iter().all(|p| p.id == "sum/1"));
    assert_eq!(
        pairs.iter().map(|p| p.pair_index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert!(pairs.iter().all(|p| p.chosen_sample_index == 0));
    assert_eq!(pairs[0].rejected_sample_index, 2, "the wrong answer first");
    assert_eq!(pairs[0].rejected_reasons, vec!["wrong_answer"]);
    assert!(pairs[1].rejected_reasons.contains(&"no_answer".to_string()));
    assert!(
        pairs.iter().all(|p| p.rejected_sample_index != 1),
        "the duplicate of the accepted trace is never a rejected side"
    );

    // The row: the prompt turns, then one assistant turn per side, from the right traces.
    let traces: Vec<_> = filter_common::labelled()
        .into_iter()
        .map(|(_, row)| row)
        .filter(|row| row.id == "sum/1")
        .collect();
    let reply = |sample: u32| -> Vec<Message> {
        vec![traces[sample as usize].messages.last().unwrap().clone()]
    };
    for pair in &pairs {
        assert_eq!(pair.prompt, traces[0].messages[..1].to_vec());
        assert_eq!(pair.prompt[0].role, "user");
        assert_eq!(pair.chosen, reply(0));
        assert_eq!(pair.rejected, reply(pair.rejected_sample_index));
        assert_eq!(pair.source, "sum");
        assert_eq!(pair.chosen_tokens, Some(80));
    }
    assert_eq!(
        summary.pairs_by_reason.values().sum::<usize>(),
        4,
        "{summary:?}"
    );
}

#[test]
fn every_eligible_rejected_trace_is_used_once_and_the_reason_list_decides() {
    let root = tempfile::tempdir().unwrap();
    let filtered = filtered(root.path());
    let mut config = PairConfig::new(filtered.clone(), root.path().join("all"));
    config.max_pairs_per_problem = 100;
    run_pairs(&config).unwrap();
    let mut rejected: Vec<u32> = pairs_of(&config)
        .iter()
        .map(|p| p.rejected_sample_index)
        .collect();
    rejected.sort_unstable();
    assert_eq!(
        rejected,
        vec![2, 3, 4, 5, 6, 7],
        "duplicates (of the accepted trace, 1, or of a wrong one, 8) are never rejected sides"
    );

    let mut only_wrong = PairConfig::new(filtered, root.path().join("wrong"));
    only_wrong.rejected_reasons = vec!["wrong_answer".into()];
    run_pairs(&only_wrong).unwrap();
    let pairs = pairs_of(&only_wrong);
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].rejected_sample_index, 2);
}

#[test]
fn a_rerun_resumes_without_duplicates_and_a_bad_reason_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let filtered = filtered(root.path());
    let config = PairConfig::new(filtered.clone(), root.path().join("pairs"));
    run_pairs(&config).unwrap();
    let first = pairs_of(&config);
    run_pairs(&config).unwrap();
    assert_eq!(pairs_of(&config), first);

    let mut bad = PairConfig::new(filtered, root.path().join("bad"));
    bad.rejected_reasons = vec!["over_k".into()];
    let message = run_pairs(&bad).unwrap_err().to_string();
    assert!(message.contains("over_k"), "{message}");
}
