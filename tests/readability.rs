//! Labelled traces for the readability checks: each bad trace is rejected
//! with the right reason, clean ones pass.

use distill::verify::{
    check_readability, format_reward, language_consistency_reward, ReadabilityConfig,
    ReadabilityIssue, TraceInput,
};

const PROMPT_EN: &str = "Find the sum of all positive divisors of 12.";
const PROMPT_ZH: &str = "求12的所有正因数之和。";

const CLEAN_REASONING: &str = "The divisors of 12 are 1, 2, 3, 4, 6 and 12. \
Adding them one at a time gives 1 + 2 = 3, then 3 + 3 = 6, then 6 + 4 = 10, \
then 10 + 6 = 16 and finally 16 + 12 = 28. As a check, the formula for the \
sum of divisors of $2^2 \\cdot 3$ is $(1 + 2 + 4)(1 + 3) = 7 \\cdot 4 = 28$, \
which agrees with the direct count.";

fn trace<'a>(prompt: &'a str, generation: &'a str) -> TraceInput<'a> {
    TraceInput {
        prompt,
        generation,
        finish_reason: "stop",
        completion_tokens: Some(200),
    }
}

fn issues(input: &TraceInput<'_>) -> Vec<ReadabilityIssue> {
    check_readability(input, &ReadabilityConfig::default())
}

fn clean_generation() -> String {
    format!("<think>\n{CLEAN_REASONING}\n</think>\nThe sum is $\\boxed{{28}}$.")
}

#[test]
fn clean_traces_pass() {
    let english = clean_generation();
    assert_eq!(issues(&trace(PROMPT_EN, &english)), vec![]);
    let chinese = "<think>\n12的因数是1、2、3、4、6和12。把它们加起来：1加2等于3，再加3等于6，\
再加4等于10，再加6等于16，最后加12等于28。用公式验证：$(1+2+4)(1+3)=28$，结果一致。\n</think>\n答案是 $\\boxed{28}$。";
    assert_eq!(issues(&trace(PROMPT_ZH, chinese)), vec![]);
}

#[test]
fn chinese_in_an_english_trace_is_language_mixing() {
    let mixed = format!(
        "<think>\n{CLEAN_REASONING} 所以我们需要再检查一下这个结果是否正确，因为因数之和的公式很重要。\n</think>\nThe sum is 28."
    );
    assert_eq!(
        issues(&trace(PROMPT_EN, &mixed)),
        vec![ReadabilityIssue::LanguageMixing]
    );
    let reasoning = mixed.split("</think>").next().unwrap_or_default();
    let reward = language_consistency_reward(PROMPT_EN, reasoning);
    assert!(reward > 0.5 && reward < 0.95, "reward {reward}");
    assert_eq!(language_consistency_reward(PROMPT_EN, CLEAN_REASONING), 1.0);
}

#[test]
fn english_in_a_chinese_trace_is_language_mixing() {
    let mixed = format!("<think>\n12的因数。{CLEAN_REASONING}\n</think>\n答案是28。");
    assert!(issues(&trace(PROMPT_ZH, &mixed)).contains(&ReadabilityIssue::LanguageMixing));
}

#[test]
fn looping_trace_is_repetition() {
    let loop_text = "Wait, let me recompute the sum of the divisors again. ".repeat(40);
    let generation = format!("<think>\n{CLEAN_REASONING}\n{loop_text}\n</think>\nThe sum is 28.");
    let found = issues(&trace(PROMPT_EN, &generation));
    assert_eq!(found, vec![ReadabilityIssue::Repetition]);
}

#[test]
fn a_repeated_span_is_repetition_only_past_the_limit() {
    // Spans of distinct words; only the repeated span's length decides (the n-gram ratio needs
    // more n-grams than these traces have).
    let config = ReadabilityConfig {
        max_repeated_span_words: 6,
        min_ngrams_for_repetition: 10_000,
        ..ReadabilityConfig::default()
    };
    let span = |words: usize| -> String {
        (0..words)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (repeated, expected) in [(6, vec![]), (7, vec![ReadabilityIssue::Repetition])] {
        let generation = format!(
            "<think>\n{CLEAN_REASONING} {} then {}\n</think>\nThe sum is 28.",
            span(repeated),
            span(repeated)
        );
        let found = check_readability(&trace(PROMPT_EN, &generation), &config);
        assert_eq!(found, expected, "a span of {repeated} words repeated");
    }
}

#[test]
fn looping_chinese_trace_is_repetition() {
    let loop_text = "等一下，让我再重新计算一遍因数之和。".repeat(40);
    let generation =
        format!("<think>\n12的因数是1、2、3、4、6和12。{loop_text}\n</think>\n答案是28。");
    assert_eq!(
        issues(&trace(PROMPT_ZH, &generation)),
        vec![ReadabilityIssue::Repetition]
    );
}

#[test]
fn length_finish_is_truncated() {
    let generation = clean_generation();
    let input = TraceInput {
        finish_reason: "length",
        ..trace(PROMPT_EN, &generation)
    };
    assert_eq!(issues(&input), vec![ReadabilityIssue::Truncated]);
}

#[test]
fn malformed_think_tags_are_bad_format() {
    let cases = [
        format!("<think>\n{CLEAN_REASONING}\nThe sum is 28."),
        format!("<think><think>\n{CLEAN_REASONING}\n</think>\nThe sum is 28."),
        format!("<think>\n{CLEAN_REASONING}\n</think>\n   "),
        "<think>   </think>\nThe sum is 28.".to_string(),
        format!("Preamble.<think>\n{CLEAN_REASONING}\n</think>\nThe sum is 28."),
        format!("</think><think>\n{CLEAN_REASONING}\nThe sum is 28."),
    ];
    for generation in &cases {
        assert_eq!(
            issues(&trace(PROMPT_EN, generation)),
            vec![ReadabilityIssue::BadFormat],
            "{generation}"
        );
        assert_eq!(format_reward(generation, false), 0.0);
    }
    assert_eq!(format_reward(&clean_generation(), false), 1.0);
}

#[test]
fn prefilled_think_accepts_a_lone_close_tag() {
    let generation = format!("{CLEAN_REASONING}\n</think>\nThe sum is 28.");
    let config = ReadabilityConfig {
        think_prefilled: true,
        ..ReadabilityConfig::default()
    };
    assert_eq!(
        check_readability(&trace(PROMPT_EN, &generation), &config),
        vec![]
    );
    assert_eq!(format_reward(&generation, true), 1.0);
    assert_eq!(format_reward(&clean_generation(), true), 0.0);
}

#[test]
fn token_bounds_paragraphs_and_code() {
    let generation = clean_generation();
    let short = TraceInput {
        completion_tokens: Some(3),
        ..trace(PROMPT_EN, &generation)
    };
    assert_eq!(issues(&short), vec![ReadabilityIssue::TooShort]);
    let long = TraceInput {
        completion_tokens: Some(40_000),
        ..trace(PROMPT_EN, &generation)
    };
    assert_eq!(issues(&long), vec![ReadabilityIssue::TooLong]);

    let words: Vec<String> = (0..700).map(|i| format!("step{i}")).collect();
    let wall = format!("<think>\n{}\n</think>\nThe sum is 28.", words.join(" "));
    assert_eq!(
        issues(&trace(PROMPT_EN, &wall)),
        vec![ReadabilityIssue::LongParagraph]
    );

    let code = format!("<think>\n{CLEAN_REASONING}\n```python\nprint(sum([1,2,3,4,6,12]))\n```\n</think>\nThe sum is 28.");
    assert_eq!(
        issues(&trace(PROMPT_EN, &code)),
        vec![ReadabilityIssue::CodeBlock]
    );
    let allow = ReadabilityConfig {
        reject_code_blocks: false,
        ..ReadabilityConfig::default()
    };
    assert_eq!(check_readability(&trace(PROMPT_EN, &code), &allow), vec![]);
}

#[test]
fn issue_names_are_stable() {
    let names: Vec<&str> = [
        ReadabilityIssue::BadFormat,
        ReadabilityIssue::LanguageMixing,
        ReadabilityIssue::Repetition,
        ReadabilityIssue::Truncated,
        ReadabilityIssue::TooShort,
        ReadabilityIssue::TooLong,
        ReadabilityIssue::LongParagraph,
        ReadabilityIssue::CodeBlock,
    ]
    .iter()
    .map(|i| i.name())
    .collect();
    assert_eq!(
        names,
        [
            "bad_format",
            "language_mixing",
            "repetition",
            "truncated",
            "too_short",
            "too_long",
            "long_paragraph",
            "code_block"
        ]
    );
}

#[test]
fn config_deserialises_with_defaults() {
    let config: ReadabilityConfig =
        serde_json::from_str(r#"{"min_script_share": 0.9}"#).expect("json");
    assert_eq!(config.min_script_share, 0.9);
    assert_eq!(config.ngram_size, ReadabilityConfig::default().ngram_size);
    let json = serde_json::to_string(&ReadabilityIssue::LanguageMixing).expect("serialise");
    assert_eq!(json, "\"language_mixing\"");
}

#[test]
fn real_math500_solutions_are_clean() {
    let text = std::fs::read_to_string("../shared/data/math500/test.jsonl").expect("MATH-500 data");
    let config = ReadabilityConfig {
        min_completion_tokens: 0,
        ..ReadabilityConfig::default()
    };
    let mut flagged = Vec::new();
    let mut total = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).expect("valid JSONL");
        let (problem, solution) = (
            row["problem"].as_str().unwrap_or_default(),
            row["solution"].as_str().unwrap_or_default(),
        );
        let answer = row["answer"].as_str().unwrap_or_default();
        let generation =
            format!("<think>\n{solution}\n</think>\nThe answer is $\\boxed{{{answer}}}$.");
        let input = TraceInput {
            prompt: problem,
            generation: &generation,
            finish_reason: "stop",
            completion_tokens: Some(500),
        };
        let found = check_readability(&input, &config);
        if !found.is_empty() {
            flagged.push((
                row["unique_id"].as_str().unwrap_or_default().to_string(),
                found,
            ));
        }
        total += 1;
    }
    println!(
        "MATH-500 reference solutions flagged: {}/{total}: {flagged:?}",
        flagged.len()
    );
    assert_eq!(total, 500);
    assert!(flagged.len() * 100 <= total, "false positives: {flagged:?}");
}
