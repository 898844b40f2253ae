//! Recovery from damaged inputs: `distill filter` checks its whole input against the
//! generate manifest before touching a finished run's outputs, and `distill generate --repair`
//! drops a missing or corrupt shard from the manifest and samples its rows again.

mod filter_common;

use std::fs;
use std::path::{Path, PathBuf};

use distill::data::schema::TraceRow;
use distill::filter::{run_filter, FilterConfig};
use filter_common::{labelled, write_input};

fn input_rows() -> Vec<TraceRow> {
    (0..3)
        .flat_map(|copy| {
            labelled().into_iter().map(move |(_, mut row)| {
                row.id = format!("{}-{copy}", row.id);
                row
            })
        })
        .collect()
}

fn filter_config(root: &Path) -> FilterConfig {
    let mut config = FilterConfig::new(root.join("traces"), root.join("filtered"));
    config.rows_per_shard = 4;
    config
}

/// The first shard file listed in a shard directory's `data/`.
fn first_shard(dir: &Path) -> PathBuf {
    dir.join("data").join("part-00000.parquet")
}

/// The bytes of a finished filter run's completion files.
fn completion_files(out: &Path) -> Vec<(String, Vec<u8>)> {
    ["report.json", "report.md", "pass_rates.parquet"]
        .iter()
        .map(|name| (name.to_string(), fs::read(out.join(name)).unwrap()))
        .collect()
}

#[test]
fn filter_keeps_a_finished_runs_reports_when_an_input_shard_is_missing() {
    let root = tempfile::tempdir().unwrap();
    write_input(&root.path().join("traces"), &input_rows(), 5);
    let config = filter_config(root.path());
    run_filter(&config).unwrap();
    let before = completion_files(&config.out);

    let shard = first_shard(&config.input);
    fs::remove_file(&shard).unwrap();
    let error = run_filter(&config).unwrap_err().to_string();
    assert!(error.contains("part-00000.parquet"), "{error}");
    assert_eq!(
        completion_files(&config.out),
        before,
        "the finished run was touched"
    );
}

#[test]
fn filter_refuses_an_input_shard_edited_after_generate_wrote_its_manifest() {
    let root = tempfile::tempdir().unwrap();
    let rows = input_rows();
    write_input(&root.path().join("traces"), &rows, 5);
    // The same first five rows with one generation changed: a valid shard with other bytes.
    let mut edited = rows[..5].to_vec();
    edited[0].generation.push_str(" (edited)");
    write_input(&root.path().join("edited"), &edited, 5);
    let config = filter_config(root.path());
    fs::copy(
        first_shard(&root.path().join("edited")),
        first_shard(&config.input),
    )
    .unwrap();

    let error = run_filter(&config).unwrap_err().to_string();
    assert!(error.contains("part-00000.parquet"), "{error}");
    assert!(error.contains("sha256"), "{error}");
    assert!(
        !config.out.exists(),
        "a refused run created its output directory"
    );
}

mod generate_common;

use distill::data::shards::{listed_shards, verify_shards};
use distill::generate::run_generate;

const PROMPTS: &str = "synth:arith:difficulty=2:count=12:seed=3";

#[test]
fn generate_repair_drops_damaged_shards_and_samples_exactly_their_rows_again() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    run_generate(&generate_common::local_config(PROMPTS, &whole)).unwrap();
    let damaged = tmp.path().join("damaged-run");
    let mut config = generate_common::local_config(PROMPTS, &damaged);
    run_generate(&config).unwrap();

    // One shard deleted, one truncated (same manifest, bytes gone).
    let shards = listed_shards(&damaged).unwrap();
    assert!(shards.len() >= 3);
    fs::remove_file(&shards[1].0).unwrap();
    let truncated = fs::read(&shards[2].0).unwrap();
    fs::write(&shards[2].0, &truncated[..truncated.len() / 2]).unwrap();

    let error = run_generate(&config).unwrap_err().to_string();
    assert!(error.contains("part-00001.parquet"), "{error}");
    assert!(
        error.contains("--repair"),
        "the error offers the repair: {error}"
    );

    config.repair = true;
    let summary = run_generate(&config).unwrap();
    assert_eq!(
        summary.rows_written,
        shards[1].1.rows + shards[2].1.rows,
        "exactly the dropped rows are sampled again"
    );
    verify_shards(&damaged).unwrap();
    assert_eq!(
        generate_common::comparable_rows(&damaged),
        generate_common::comparable_rows(&whole),
        "the repaired run holds the rows of an undamaged one"
    );
    let kept = fs::read(damaged.join("damaged").join("part-00002.parquet")).unwrap();
    assert_eq!(
        kept,
        truncated[..truncated.len() / 2],
        "the damaged file is kept"
    );
}
