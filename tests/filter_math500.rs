//! `distill filter` on real-ish input: MATH-500 reference solutions wrapped as R1 traces, plus
//! corrupted copies with wrong answers. Prints the acceptance numbers (`--nocapture`).

mod filter_common;

use distill::data::schema::FilteredRow;
use distill::data::shards::read_rows;
use distill::filter::{run_filter, FilterConfig};
use distill::verify::{extract_answer, verify};
use filter_common::math500::math500_traces;
use filter_common::{write_input, DATA};

#[test]
fn math500_reference_traces_are_accepted_and_corruptions_rejected() {
    let (rows, corrupted) = math500_traces();
    let root = tempfile::tempdir().unwrap();
    write_input(&root.path().join("traces"), &rows, 100);
    let mut config = FilterConfig::new(root.path().join("traces"), root.path().join("out"));
    config.decontaminate = vec![
        format!("{DATA}/gsm8k/test.jsonl").into(),
        format!("{DATA}/qwen25_math_eval/aime24/test.jsonl").into(),
    ];
    let summary = run_filter(&config).unwrap();
    println!(
        "MATH-500 traces: {} ({} corrupted); accepted {} ({:.1}%), rejected {}",
        summary.traces,
        corrupted,
        summary.accepted,
        100.0 * summary.acceptance_rate,
        summary.rejected
    );
    let reasons = summary.nonzero_reasons();
    println!("rejection reasons: {}", reasons.join(", "));
    println!(
        "completion tokens, accepted: mean {:.0}, median {}, p90 {}, max {}; rejected: mean {:.0}, median {}, p90 {}, max {}",
        summary.accepted_tokens.mean,
        summary.accepted_tokens.median,
        summary.accepted_tokens.p90,
        summary.accepted_tokens.max,
        summary.rejected_tokens.mean,
        summary.rejected_tokens.median,
        summary.rejected_tokens.p90,
        summary.rejected_tokens.max
    );
    println!(
        "problems {}, with an accepted trace {}, contaminated (GSM8K/AIME24, 8-grams) {}",
        summary.problems, summary.problems_with_accepted, summary.contaminated_problems
    );

    assert_eq!(summary.traces, 500 + corrupted);
    let accepted: Vec<FilteredRow> = read_rows(&root.path().join("out/accepted")).unwrap();
    let rejected: Vec<FilteredRow> = read_rows(&root.path().join("out/rejected")).unwrap();
    assert_eq!(accepted.len(), summary.accepted);
    for row in &accepted {
        let found = extract_answer(&row.trace.generation).unwrap();
        assert!(verify(&row.trace.answer, &found.answer), "{}", row.trace.id);
        assert_eq!(row.trace.sample_index, 0, "no corrupted copy is accepted");
    }
    let wrong: Vec<&FilteredRow> = rejected
        .iter()
        .filter(|row| row.trace.sample_index == 1)
        .collect();
    assert_eq!(wrong.len(), corrupted);
    assert!(wrong
        .iter()
        .all(|row| row.reject_reasons.contains(&"wrong_answer".to_string())));
    assert_eq!(
        summary.reasons["wrong_answer"], corrupted,
        "every reference answer verifies"
    );
    assert!(
        summary.accepted >= 400,
        "most reference solutions are readable"
    );

    config.decontaminate = vec![format!("{DATA}/math500/test.jsonl").into()];
    config.out = root.path().join("decontaminated");
    let summary = run_filter(&config).unwrap();
    println!(
        "decontaminated against MATH-500 itself: {} of {} problems contaminated, {} accepted",
        summary.contaminated_problems, summary.problems, summary.accepted
    );
    assert_eq!(summary.contaminated_problems, 500);
    assert_eq!(summary.accepted, 0);
}
