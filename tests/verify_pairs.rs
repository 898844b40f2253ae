//! Table-driven equivalence pairs and extraction cases.

use distill::verify::{extract_answer, verify, verify_with, AnswerMarker, VerifyOptions};

#[path = "support/pairs.rs"]
mod pairs;

use pairs::PAIRS;

#[test]
fn labelled_pairs() {
    let failures: Vec<String> = PAIRS
        .iter()
        .filter(|(gold, pred, expected)| verify(gold, pred) != *expected)
        .map(|(gold, pred, expected)| format!("gold {gold:?} pred {pred:?}: expected {expected}"))
        .collect();
    let positives = PAIRS.iter().filter(|p| p.2).count();
    println!(
        "{} pairs ({positives} positive, {} negative)",
        PAIRS.len(),
        PAIRS.len() - positives
    );
    assert!(PAIRS.len() >= 150);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn percent_policy_flag() {
    let on = VerifyOptions {
        percent_as_fraction: true,
        ..VerifyOptions::default()
    };
    assert!(verify_with("10\\%", "0.1", &on));
    assert!(verify_with("0.1", "10\\%", &on));
    assert!(verify_with("10\\%", "10", &on));
    assert!(!verify_with("10\\%", "0.2", &on));
    assert!(verify_with("1", "100\\%", &on));
    assert!(!verify("1", "100\\%"));
    assert!(!verify("10\\%", "0.1"));
}

#[test]
fn verify_is_asymmetric_for_relations() {
    assert!(verify("3", "x = 3"));
    assert!(!verify("3", "x > 2"));
    assert!(!verify("x = 3", "x > 2"));
}

fn extracted(trace: &str) -> Option<(String, AnswerMarker)> {
    extract_answer(trace).map(|e| (e.answer, e.marker))
}

#[test]
fn extraction_boxed() {
    let nested = "so \\boxed{\\frac{1}{\\sqrt{2}}} done";
    assert_eq!(
        extracted(nested),
        Some(("\\frac{1}{\\sqrt{2}}".into(), AnswerMarker::Boxed))
    );
    let two = "first \\boxed{1} then \\boxed{2}.";
    assert_eq!(extracted(two), Some(("2".into(), AnswerMarker::Boxed)));
    let bare = "so the answer is $\\boxed 5$.";
    assert_eq!(extracted(bare), Some(("5".into(), AnswerMarker::Boxed)));
    let fbox = "\\fbox{7}";
    assert_eq!(extracted(fbox), Some(("7".into(), AnswerMarker::Fbox)));
    let set = "\\boxed{\\{1,2\\}}";
    assert_eq!(
        extracted(set),
        Some(("\\{1,2\\}".into(), AnswerMarker::Boxed))
    );
    let unclosed_last = "\\boxed{4} and then \\boxed{5";
    assert_eq!(
        extracted(unclosed_last),
        Some(("4".into(), AnswerMarker::Boxed))
    );
}

#[test]
fn extraction_respects_think() {
    let trace = "<think>maybe \\boxed{1}</think> The answer is \\boxed{2}.";
    assert_eq!(extracted(trace), Some(("2".into(), AnswerMarker::Boxed)));
    let prefilled = "maybe \\boxed{1}\n</think>\nSo the answer is 3.";
    assert_eq!(
        extracted(prefilled),
        Some(("3".into(), AnswerMarker::AnswerIsPhrase))
    );
    let open = "<think>I think \\boxed{1} and the answer is 1";
    assert_eq!(extracted(open), None);
    let no_answer = "<think>\\boxed{1}</think>";
    assert_eq!(extracted(no_answer), None);
}

#[test]
fn extraction_other_markers() {
    let gsm = "She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18";
    assert_eq!(extracted(gsm), Some(("18".into(), AnswerMarker::Hashes)));
    let gsm_sep = "#### 1,000\n";
    assert_eq!(
        extracted(gsm_sep),
        Some(("1,000".into(), AnswerMarker::Hashes))
    );
    let tags = "<think>work</think><answer> 42 </answer>";
    assert_eq!(
        extracted(tags),
        Some(("42".into(), AnswerMarker::AnswerTag))
    );
    let phrase = "Thus, the answer is $\\frac{3}{4}$. Done.";
    assert_eq!(
        extracted(phrase),
        Some(("\\frac{3}{4}".into(), AnswerMarker::AnswerIsPhrase))
    );
    let decimal = "The answer is 3.5.";
    assert_eq!(
        extracted(decimal),
        Some(("3.5".into(), AnswerMarker::AnswerIsPhrase))
    );
    let minerva = "Final Answer: The final answer is $7$. I hope it is correct.";
    assert_eq!(
        extracted(minerva),
        Some(("7".into(), AnswerMarker::FinalAnswerPhrase))
    );
    let final_colon = "**Final answer:** 12";
    assert_eq!(
        extracted(final_colon),
        Some(("12".into(), AnswerMarker::FinalAnswerPhrase))
    );
    assert_eq!(extracted("no marker here"), None);
}

#[test]
fn extract_then_verify() {
    let trace = "<think>Let me compute 2+2.</think>\nTherefore $x = \\boxed{4}$.";
    let answer = extract_answer(trace).map(|e| e.answer).unwrap_or_default();
    assert!(verify("4", &answer));
    assert!(!verify("5", &answer));
}
