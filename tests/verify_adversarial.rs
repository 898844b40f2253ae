//! Adversarial inputs: each call must return within a second and not panic.

use std::time::{Duration, Instant};

use distill::verify::{check, extract_answer, verify, VerifyOptions};

const LIMIT: Duration = Duration::from_secs(1);

fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let elapsed = start.elapsed();
    assert!(elapsed < LIMIT, "{label} took {elapsed:?}");
    out
}

fn both_ways(label: &str, a: &str, b: &str) -> (bool, bool) {
    timed(label, || (verify(a, b), verify(b, a)))
}

#[test]
fn huge_latex_is_refused_quickly() {
    let long = "\\frac{1}{2}+".repeat(9_000) + "1";
    assert!(long.len() > 100_000);
    assert_eq!(both_ways("100k LaTeX", &long, "1"), (false, false));
    // Boxed contents beyond the extraction cap are ignored, not scanned forever.
    let trace = format!("<think>{long}</think> \\boxed{{{long}}}");
    assert_eq!(timed("extract 200k", || extract_answer(&trace)), None);
    let many = "\\boxed{".repeat(20_000) + "1}";
    assert_eq!(
        timed("20k boxed", || extract_answer(&many)).map(|e| e.answer),
        Some("1".into())
    );
}

#[test]
fn exploding_powers_do_not_hang() {
    assert_eq!(
        both_ways("10^10^10", "10^{10^{10}}", "10^{10^{11}}"),
        (false, false)
    );
    assert!(timed("same tower", || verify(
        "10^{10^{10}}",
        "10^{10^{10}}"
    )));
    assert_eq!(both_ways("9^9^9^9", "9^9^9^9", "1"), (false, false));
    assert_eq!(
        both_ways("2^{2^{2^{2^{2^{2}}}}}", "2^{2^{2^{2^{2^{2}}}}}", "65536"),
        (false, false)
    );
    assert!(!timed("factorial", || verify("1000000!", "1")));
    assert!(!timed("symbolic tower", || verify(
        "x^{x^{x^{x^{x}}}}",
        "x"
    )));
}

#[test]
fn unbalanced_and_deep_input() {
    for junk in [
        "\\frac{",
        "}}}}{{{{",
        "\\boxed{\\boxed{",
        "((((((",
        "\\sqrt[",
        "\\left(",
        "^^^^",
        "\\",
    ] {
        let (a, b) = both_ways(junk, junk, "1");
        assert!(!a && !b, "{junk}");
    }
    let deep = "\\frac{".repeat(500) + "1" + &"}{2}".repeat(500);
    assert_eq!(both_ways("500-deep frac", &deep, "0"), (false, false));
    let parens = "(".repeat(5_000) + &")".repeat(5_000);
    assert_eq!(both_ways("5000 parens", &parens, "1"), (false, false));
    let minus = "-".repeat(1_500) + "1";
    assert!(!timed("unary chain", || verify(&minus, "2")));
    let braces = "{".repeat(50_000);
    assert!(timed("unclosed boxed", || extract_answer(&format!(
        "\\boxed{braces}"
    )))
    .is_none());
}

#[test]
fn huge_integers_compare_exactly_or_refuse() {
    let big = "9".repeat(1_000);
    assert!(timed("big self", || verify(&big, &big)));
    let bigger = "9".repeat(999) + "8";
    assert!(!timed("big differ", || verify(&big, &bigger)));
    let i128_edge = "170141183460469231731687303715884105727";
    assert!(timed("i128 max", || verify(i128_edge, i128_edge)));
    assert!(!timed("i128 max+1", || verify(
        i128_edge,
        "170141183460469231731687303715884105728"
    )));
}

#[test]
fn nan_ish_and_odd_text() {
    let inputs = [
        "NaN",
        "nan",
        "inf",
        "-inf",
        "\\infty - \\infty",
        "0/0",
        "\\frac{0}{0}",
        "1/0",
        "\\ln 0",
        "\u{0}",
        "🙂",
        "中文答案",
        "x = ",
        "= 3",
        "\\text{}",
        "$$",
        "\\boxed{}",
        "\\begin{pmatrix}",
        "1e99999",
        ".e5",
        "e^{e^{e^{e^{e}}}}",
        "\\sqrt{-1}",
        "(-8)^{1/3}",
        "0^0",
        "\\log_1 5",
    ];
    for a in inputs {
        for b in inputs {
            let equivalent = timed("odd", || check(a, b, &VerifyOptions::default())).equivalent;
            // Only the same text (up to case, for words) may match.
            assert!(!equivalent || a.eq_ignore_ascii_case(b), "{a:?} vs {b:?}");
        }
        // 0^0 is 1 by convention; nothing else here equals 1.
        assert_eq!(timed("odd vs 1", || verify(a, "1")), a == "0^0", "{a:?}");
    }
}

#[test]
fn multibyte_text_never_splits_chars() {
    let s = "é".repeat(3_000) + "\\boxed{ü}" + &"中".repeat(3_000);
    assert_eq!(
        timed("utf8 extract", || extract_answer(&s)).map(|e| e.answer),
        Some("ü".into())
    );
    assert!(timed("utf8 verify", || verify("ü", "ü")));
    assert!(!timed("utf8 verify differ", || verify("(é,ü)", "(ü,é)")));
}
