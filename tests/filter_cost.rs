//! The filter report's cost: what generating the input cost (the rows' `cost` column), and what
//! one accepted trace cost, per source and overall.

mod filter_common;

use distill::filter::{run_filter, FilterConfig};
use filter_common::{r1, reasoning, row, write_input};

#[test]
fn the_report_gives_the_cost_per_accepted_trace_per_source_and_overall() {
    let sum = "What is the sum of two and three?";
    let product = "What is the product of two and three?";
    let good_sum = r1(&reasoning("two plus three"), "5");
    let good_product = r1(&reasoning("two times three"), "6");
    let wrong = r1(&reasoning("two plus three, carefully"), "7");
    let priced = |mut trace: distill::data::schema::TraceRow, cost: f64| {
        trace.cost = Some(cost);
        trace
    };
    let rows = vec![
        // sum: 3 traces costing 0.01 + 0.02 + 0.03, one accepted.
        priced(row("sum/1", sum, "5", 0, &good_sum), 0.01),
        priced(row("sum/1", sum, "5", 1, &wrong), 0.02),
        priced(
            row("sum/1", sum, "5", 2, &wrong.replace("carefully", "again")),
            0.03,
        ),
        // product: 2 traces costing 0.04 each, both accepted.
        priced(row("product/1", product, "6", 0, &good_product), 0.04),
        priced(
            row(
                "product/1",
                product,
                "6",
                1,
                &good_product.replace("times", "by"),
            ),
            0.04,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("traces"), &rows, 2);
    let config = FilterConfig::new(dir.path().join("traces"), dir.path().join("out"));
    let summary = run_filter(&config).unwrap();
    assert_eq!(summary.accepted, 3, "{:?}", summary.reasons);

    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
    let sum_stats = &summary.per_source["sum"];
    assert!(close(sum_stats.cost, 0.06), "{sum_stats:?}");
    assert!(close(sum_stats.cost_per_accepted, 0.06), "{sum_stats:?}");
    let product_stats = &summary.per_source["product"];
    assert!(
        close(product_stats.cost_per_accepted, 0.04),
        "{product_stats:?}"
    );
    assert!(close(summary.cost, 0.14), "{:?}", summary.cost);
    assert!(close(summary.cost_per_accepted, 0.14 / 3.0));

    let markdown = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(markdown.contains("## Cost"), "{markdown}");
    assert!(
        markdown.contains("| sum | 0.060000 | 1 | 0.060000 |"),
        "{markdown}"
    );

    // Traces without cost give a report without it.
    let unpriced: Vec<_> = rows
        .into_iter()
        .map(|mut r| {
            r.cost = None;
            r
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_input(&dir.path().join("traces"), &unpriced, 2);
    let config = FilterConfig::new(dir.path().join("traces"), dir.path().join("out"));
    let summary = run_filter(&config).unwrap();
    assert_eq!((summary.cost, summary.cost_per_accepted), (None, None));
    let json = std::fs::read_to_string(dir.path().join("out/report.json")).unwrap();
    assert!(!json.contains("cost"), "{json}");
}
