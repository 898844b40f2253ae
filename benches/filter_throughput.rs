//! End-to-end throughput of `distill filter` (read shards, verify, readability, dedup,
//! decontamination against GSM8K + AIME24, write accepted/rejected shards, pass rates and the
//! report) on MATH-500-derived traces: each reference solution wrapped as an R1 trace plus a
//! wrong-answer copy of every fifth problem, replicated under `COPIES` id prefixes.
//!
//! Run: `cargo bench --bench filter_throughput`.

use std::time::Instant;

use distill::filter::{run_filter, FilterConfig};

#[path = "../tests/filter_common/math500.rs"]
mod math500;

/// Replicas of the MATH-500 trace set (distinct problem ids).
const COPIES: usize = 10;
/// Timed runs (each into a fresh output directory).
const RUNS: usize = 3;

fn main() {
    distill::runtime::init();
    let (rows, _) = math500::math500_traces();
    let rows: Vec<_> = (0..COPIES)
        .flat_map(|copy| {
            rows.iter().map(move |row| {
                let mut row = row.clone();
                row.id = format!("{}#{copy}", row.id);
                row
            })
        })
        .collect();
    let root = tempfile::tempdir().expect("temporary directory");
    let input = root.path().join("traces");
    let options = distill::data::shards::ShardOptions {
        rows_per_shard: 1000,
        recipe_hash: "bench".into(),
        force: false,
    };
    let mut writer = distill::data::shards::ShardWriter::<distill::data::schema::TraceRow>::open(
        &input, options,
    )
    .expect("input shards");
    for row in &rows {
        writer.write(row.clone()).expect("write input");
    }
    writer.finish().expect("finish input");
    let bytes: u64 = std::fs::read_dir(&input)
        .expect("input dir")
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .map(|meta| meta.len())
        .sum();

    let mut rates = Vec::new();
    for run in 0..RUNS {
        let mut config = FilterConfig::new(&input, root.path().join(format!("out-{run}")));
        config.decontaminate = vec![
            format!("{}/gsm8k/test.jsonl", "../shared/data").into(),
            format!("{}/qwen25_math_eval/aime24/test.jsonl", "../shared/data").into(),
        ];
        let start = Instant::now();
        let summary = run_filter(&config).expect("filter run");
        let seconds = start.elapsed().as_secs_f64();
        rates.push(summary.traces as f64 / seconds);
        println!(
            "run {run}: {} traces ({:.1} MB of shards) in {seconds:.2} s = {:.0} traces/s; {} accepted",
            summary.traces,
            bytes as f64 / 1e6,
            summary.traces as f64 / seconds,
            summary.accepted
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "filter throughput ({} threads): median {:.0} traces/s, best {:.0} traces/s",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_default(),
        rates[rates.len() / 2],
        rates[rates.len() - 1]
    );
}
