//! `distill filter` on hand-made labelled traces: each kind of bad trace is rejected with its
//! reason, accepted traces are exactly the clean correct ones (and re-verify), the k-shortest
//! policy, countdown verification, pass rates with the RL band, and the report.

mod filter_common;

use std::collections::BTreeMap;

use distill::data::schema::FilteredRow;
use distill::data::shards::read_rows;
use distill::data::synth::{generate_task, TaskKind};
use distill::filter::{read_pass_rates, run_filter, FilterConfig, FilterSummary, Policy};
use distill::verify::{check_readability, extract_answer, verify, ReadabilityConfig, TraceInput};
use filter_common::{
    labelled, math500, r1, reasoning, row, with_metadata, with_tokens, write_input,
};
use serde_json::json;

/// Filters `rows` with `configure` applied to a default config; returns the outputs.
fn filter(
    rows: &[distill::data::schema::TraceRow],
    configure: impl FnOnce(&mut FilterConfig),
) -> (
    tempfile::TempDir,
    FilterSummary,
    Vec<FilteredRow>,
    Vec<FilteredRow>,
) {
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("traces"), rows, 3);
    let mut config = FilterConfig::new(dir.path().join("traces"), dir.path().join("out"));
    configure(&mut config);
    let summary = run_filter(&config).unwrap();
    let accepted = read_rows::<FilteredRow>(&dir.path().join("out/accepted")).unwrap();
    let rejected = read_rows::<FilteredRow>(&dir.path().join("out/rejected")).unwrap();
    (dir, summary, accepted, rejected)
}

fn key(row: &FilteredRow) -> (String, u32) {
    (row.trace.id.clone(), row.trace.sample_index)
}

#[test]
fn labelled_traces_land_where_they_belong() {
    let cases = labelled();
    let rows: Vec<_> = cases.iter().map(|(_, row)| row.clone()).collect();
    let (_dir, summary, accepted, rejected) = filter(&rows, |config| {
        config.decontaminate = vec![math500().into()]
    });

    let expected_accepted: Vec<(String, u32)> = cases
        .iter()
        .filter(|(label, _)| *label == "clean")
        .map(|(_, row)| (row.id.clone(), row.sample_index))
        .collect();
    let mut got: Vec<_> = accepted.iter().map(key).collect();
    got.sort();
    let mut expected_sorted = expected_accepted.clone();
    expected_sorted.sort();
    assert_eq!(
        got, expected_sorted,
        "accepted holds exactly the clean correct traces"
    );

    let expected_reasons: BTreeMap<(String, u32), Vec<&str>> = cases
        .iter()
        .filter(|(label, _)| *label != "clean")
        .map(|(label, row)| {
            let reasons = match *label {
                // No `</think>`: no answer, bad format, and cut at the token limit.
                "truncated" => vec!["no_answer", "bad_format", "truncated"],
                other => vec![other],
            };
            ((row.id.clone(), row.sample_index), reasons)
        })
        .collect();
    let got: BTreeMap<(String, u32), Vec<&str>> = rejected
        .iter()
        .map(|row| {
            (
                key(row),
                row.reject_reasons.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(got, expected_reasons);

    for row in &accepted {
        let extracted = extract_answer(&row.trace.generation).expect("an answer");
        assert!(
            verify(&row.trace.answer, &extracted.answer),
            "{:?}",
            key(row)
        );
        assert!(row.verified && row.reject_reasons.is_empty());
        assert_eq!(
            row.extracted_answer.as_deref(),
            Some(extracted.answer.as_str())
        );
        let input = TraceInput {
            prompt: &row.trace.problem,
            generation: &row.trace.generation,
            finish_reason: row.trace.finish_reason.as_str(),
            completion_tokens: row.trace.completion_tokens.map(|t| t as usize),
        };
        assert!(check_readability(&input, &ReadabilityConfig::default()).is_empty());
        assert_eq!(
            row.trace.messages[1].content, row.trace.generation,
            "SFT-ready messages"
        );
    }
    let wrong = rejected.iter().find(|r| r.trace.sample_index == 2).unwrap();
    assert!(!wrong.verified);
    assert_eq!(wrong.extracted_answer.as_deref(), Some("6"));
    let no_answer = rejected.iter().find(|r| r.trace.sample_index == 3).unwrap();
    assert_eq!(no_answer.extracted_answer, None);

    assert_eq!(summary.traces, cases.len());
    assert_eq!(summary.accepted, 2);
    assert_eq!(summary.rejected, cases.len() - 2);
    assert_eq!(summary.contaminated_problems, 1);
    assert_eq!(summary.eval_problems, 500);
    assert_eq!(
        summary.contamination.get("polar/3").map(String::as_str),
        Some("math500-test/precalculus/807.json")
    );
    for (reason, count) in [
        ("wrong_answer", 1),
        ("no_answer", 2),
        ("bad_format", 2),
        ("truncated", 1),
        ("language_mixing", 1),
        ("repetition", 1),
        ("duplicate", 1),
        ("contaminated", 1),
        ("over_k", 0),
        ("too_long", 0),
    ] {
        assert_eq!(summary.reasons[reason], count, "{reason}");
    }
}

#[test]
fn report_files_hold_the_summary() {
    let rows: Vec<_> = labelled().into_iter().map(|(_, row)| row).collect();
    let (dir, summary, _, _) = filter(&rows, |_| {});
    let text = std::fs::read_to_string(dir.path().join("out/report.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for field in [
        "recipe_hash",
        "policy",
        "traces",
        "accepted",
        "rejected",
        "acceptance_rate",
        "reasons",
        "per_source",
        "accepted_tokens",
        "rejected_tokens",
        "problems",
        "rl_candidates",
        "pass_rate_band",
    ] {
        assert!(json.get(field).is_some(), "report.json has `{field}`");
    }
    assert_eq!(json["traces"], 10);
    // Without decontamination the MATH-500 copy is accepted too.
    assert_eq!(json["accepted"], 3);
    assert_eq!(json["reasons"]["contaminated"], 0);
    assert_eq!(json["per_source"]["sum"]["traces"], 8);
    assert_eq!(json["per_source"]["sum"]["accepted"], 1);
    assert_eq!(json["per_source"]["product"]["acceptance_rate"], 1.0);
    assert_eq!(json["accepted_tokens"]["count"], 3);
    assert_eq!(json["accepted_tokens"]["median"], 80);
    let parsed: FilterSummary = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, summary);
    let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(md.contains("3 accepted (30.0%)"), "{md}");
    assert!(md.contains("| `wrong_answer` | 1 |"), "{md}");
}

#[test]
fn shortest_k_keeps_the_k_shortest_clean_correct_traces_per_problem() {
    let problem = "What is six times seven?";
    let mut rows = Vec::new();
    // Samples 2 and 4 are wrong (4 is the shortest of all); the others are clean and correct.
    for (sample, tokens, answer) in [
        (0, 300, "42"),
        (1, 250, "42"),
        (2, 200, "41"),
        (3, 220, "42"),
        (4, 90, "43"),
        (5, 220, "42"),
    ] {
        let generation = r1(
            &reasoning(&format!("six times seven, attempt {sample}")),
            answer,
        );
        rows.push(with_tokens(
            row("mul/1", problem, "42", sample, &generation),
            tokens,
        ));
    }
    let generation = r1(&reasoning("two plus two"), "4");
    rows.push(row("add/2", "What is two plus two?", "4", 0, &generation));

    let (_dir, summary, accepted, rejected) =
        filter(&rows, |config| config.policy = Policy::Shortest(2));
    let got: Vec<_> = accepted.iter().map(key).collect();
    // Clean correct: 0 (300), 1 (250), 3 (220), 5 (220): keep 3 and 5 (ties by sample index).
    assert_eq!(
        got,
        vec![
            ("add/2".into(), 0),
            ("mul/1".into(), 3),
            ("mul/1".into(), 5)
        ]
    );
    let over_k: Vec<_> = rejected
        .iter()
        .filter(|r| r.reject_reasons == ["over_k"])
        .map(key)
        .collect();
    assert_eq!(over_k, vec![("mul/1".into(), 0), ("mul/1".into(), 1)]);
    assert_eq!(summary.reasons["over_k"], 2);
    assert_eq!(summary.reasons["wrong_answer"], 2);
    assert_eq!(summary.policy, "shortest:2");
    assert!("shortest:0".parse::<Policy>().is_err());
    assert_eq!("shortest:3".parse::<Policy>(), Ok(Policy::Shortest(3)));
}

#[test]
fn countdown_answers_are_checked_by_the_countdown_verifier() {
    let task = generate_task(TaskKind::Countdown, 3, 7, 0).unwrap();
    let problem = task.to_problem();
    let numbers: Vec<i64> = serde_json::from_value(problem.metadata["numbers"].clone()).unwrap();
    let target = problem.metadata["target"].as_i64().unwrap();
    assert_eq!(problem.metadata["verifier"], "countdown");
    let make = |sample: u32, answer: &str| {
        let generation = r1(&reasoning("the countdown puzzle"), answer);
        let mut trace = row(
            &problem.id,
            &problem.problem,
            &problem.answer,
            sample,
            &generation,
        );
        trace.metadata = problem.metadata.clone();
        trace
    };
    // The reference expression; another text using an extra number (0); a number used
    // twice; the bare target.
    let reference = problem.answer.clone();
    let reversed_sum = format!("0 + {reference}");
    let numbers_text: Vec<String> = numbers.iter().map(i64::to_string).collect();
    let reused = format!("{} + {} - {}", reference, numbers_text[0], numbers_text[0]);
    let rows = vec![
        make(0, &reference),
        make(1, &reversed_sum),
        make(2, &reused),
        make(3, &format!("{target}")),
    ];
    let (_dir, _summary, accepted, rejected) = filter(&rows, |_| {});
    assert_eq!(
        accepted
            .iter()
            .map(|r| r.trace.sample_index)
            .collect::<Vec<_>>(),
        vec![0]
    );
    for row in &rejected {
        assert_eq!(
            row.reject_reasons,
            ["wrong_answer"],
            "sample {}",
            row.trace.sample_index
        );
    }

    let broken = with_metadata(
        make(0, &reference),
        json!({"verifier": "countdown", "target": target}),
    );
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("traces"), &[broken], 3);
    let config = FilterConfig::new(dir.path().join("traces"), dir.path().join("out"));
    let error = run_filter(&config).unwrap_err().to_string();
    assert!(error.contains("part-00000.parquet"), "{error}");
    assert!(error.contains("row 0"), "{error}");
    assert!(
        error.contains("`metadata`") && error.contains("numbers"),
        "{error}"
    );
}

/// `samples` traces of problem `id`, the first `correct` of them correct.
fn graded(id: &str, samples: u32, correct: u32) -> Vec<distill::data::schema::TraceRow> {
    (0..samples)
        .map(|sample| {
            let answer = if sample < correct { "7" } else { "8" };
            let generation = r1(&reasoning(&format!("problem {id}, try {sample}")), answer);
            row(
                id,
                &format!("Problem {id}: what is seven?"),
                "7",
                sample,
                &generation,
            )
        })
        .collect()
}

#[test]
fn pass_rates_mark_the_rl_band() {
    let mut rows = Vec::new();
    for (id, samples, correct) in [
        ("a/1", 5, 1),
        ("b/2", 5, 5),
        ("c/3", 5, 0),
        ("d/4", 4, 2),
        ("e/5", 5, 4),
    ] {
        rows.extend(graded(id, samples, correct));
    }
    let (dir, summary, _, _) = filter(&rows, |_| {});
    let rates = read_pass_rates(&dir.path().join("out/pass_rates.parquet")).unwrap();
    let got: Vec<(&str, u32, u32, f64, bool)> = rates
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.samples,
                r.correct,
                r.pass_rate,
                r.rl_candidate,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a/1", 5, 1, 0.2, true),
            ("b/2", 5, 5, 1.0, false),
            ("c/3", 5, 0, 0.0, false),
            ("d/4", 4, 2, 0.5, true),
            ("e/5", 5, 4, 0.8, true),
        ]
    );
    assert_eq!(summary.rl_candidates, 3);
    assert_eq!(rates[0].source, "a");

    let (dir, summary, _, _) = filter(&rows, |config| {
        config.min_pass_rate = 0.4;
        config.max_pass_rate = 0.6;
    });
    let rates = read_pass_rates(&dir.path().join("out/pass_rates.parquet")).unwrap();
    let band: Vec<&str> = rates
        .iter()
        .filter(|r| r.rl_candidate)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(band, vec!["d/4"]);
    assert_eq!(summary.pass_rate_band, [0.4, 0.6]);
}

#[test]
fn config_deserialises_from_a_partial_toml_table() {
    let config: FilterConfig = toml::from_str(
        r#"
        input = "traces"
        out = "filtered"
        policy = "shortest:4"
        decontaminate = ["../shared/data/math500/test.jsonl"]
        [readability]
        max_completion_tokens = 4096
        "#,
    )
    .unwrap();
    assert_eq!(config.policy, Policy::Shortest(4));
    assert_eq!(config.ngram, 8);
    assert_eq!((config.min_pass_rate, config.max_pass_rate), (0.2, 0.8));
    assert_eq!(config.readability.max_completion_tokens, 4096);
    assert_eq!(config.readability.min_completion_tokens, 16);
    assert!(toml::from_str::<FilterConfig>("policy = \"best\"").is_err());
    assert!(
        toml::from_str::<FilterConfig>("polcy = \"all\"").is_err(),
        "typos are refused"
    );

    let mut bad = FilterConfig::new("in", "out");
    bad.min_pass_rate = 0.9;
    assert!(run_filter(&bad)
        .unwrap_err()
        .to_string()
        .contains("pass-rate band"));
}

#[test]
fn ngram_size_and_think_prefill_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let eval = dir.path().join("gsm8k.jsonl");
    std::fs::write(
        &eval,
        "{\"question\": \"A farmer has seven red apples and eats two of them before lunch.\", \"answer\": \"#### 5\"}\n",
    )
    .unwrap();
    // Shares the 6 words "seven red apples and eats two" with the evaluation problem.
    let problem = "Maria owns seven red apples and eats two; how many are left?";
    let rows = vec![row(
        "apples/1",
        problem,
        "5",
        0,
        &r1(&reasoning("the apples"), "5"),
    )];
    let contaminated = |ngram: usize| {
        let (_dir, summary, _, _) = filter(&rows, |config| {
            config.decontaminate = vec![eval.clone()];
            config.ngram = ngram;
        });
        summary.contaminated_problems
    };
    assert_eq!(contaminated(8), 0);
    assert_eq!(contaminated(6), 1);
    assert_eq!(contaminated(7), 0);

    // The template opened `<think>`: the generation has only the closing tag.
    let prefilled = format!(
        "{}\n</think>\n\nThe answer is $\\boxed{{5}}$.",
        reasoning("the apples")
    );
    let rows = vec![row("apples/1", problem, "5", 0, &prefilled)];
    let (_dir, _, accepted, rejected) = filter(&rows, |_| {});
    assert!(accepted.is_empty());
    assert_eq!(rejected[0].reject_reasons, ["bad_format"]);
    let (_dir, _, accepted, _) = filter(&rows, |config| config.readability.think_prefilled = true);
    assert_eq!(accepted.len(), 1);
}
