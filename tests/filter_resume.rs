//! Crash safety and resume of `distill filter`, refusal of a changed configuration, malformed
//! input, and the command line end to end.

mod filter_common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use distill::data::schema::{ArrowRow, FilteredRow, TraceRow};
use distill::data::shards::{read_manifest, read_rows, Manifest};
use distill::filter::{read_pass_rates, run_filter, FilterConfig, Policy};
use filter_common::{labelled, math500, write_input};
use parquet::arrow::ArrowWriter;

/// Everything a filter run leaves in `out`, for comparisons.
#[derive(Debug, PartialEq)]
struct Outputs {
    accepted: Vec<FilteredRow>,
    rejected: Vec<FilteredRow>,
    accepted_manifest: Manifest,
    rejected_manifest: Manifest,
    pass_rates: Vec<distill::filter::PassRate>,
    report_json: String,
    report_md: String,
}

fn outputs(out: &Path) -> Outputs {
    Outputs {
        accepted: read_rows(&out.join("accepted")).unwrap(),
        rejected: read_rows(&out.join("rejected")).unwrap(),
        accepted_manifest: read_manifest(&out.join("accepted")).unwrap(),
        rejected_manifest: read_manifest(&out.join("rejected")).unwrap(),
        pass_rates: read_pass_rates(&out.join("pass_rates.parquet")).unwrap(),
        report_json: std::fs::read_to_string(out.join("report.json")).unwrap(),
        report_md: std::fs::read_to_string(out.join("report.md")).unwrap(),
    }
}

/// Many labelled traces (the labelled set repeated under 6 problem-id prefixes).
fn input_rows() -> Vec<TraceRow> {
    (0..6)
        .flat_map(|copy| {
            labelled().into_iter().map(move |(_, mut row)| {
                row.id = format!("{}-{copy}", row.id);
                row
            })
        })
        .collect()
}

fn config(root: &Path, out: &str) -> FilterConfig {
    let mut config = FilterConfig::new(root.join("traces"), root.join(out));
    config.decontaminate = vec![math500().into()];
    config.rows_per_shard = 4;
    config
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn resume_after_a_crash_gives_the_same_outputs() {
    let root = tempfile::tempdir().unwrap();
    write_input(&root.path().join("traces"), &input_rows(), 7);
    let uninterrupted = config(root.path(), "a");
    run_filter(&uninterrupted).unwrap();
    let expected = outputs(&uninterrupted.out);
    assert!(expected.accepted.len() >= 12 && expected.rejected_manifest.shards.len() > 3);

    let crashed = config(root.path(), "b");
    run_filter(&crashed).unwrap();
    // Simulate a crash while writing accepted/: the manifest lists only shard 0, shard 1 was
    // renamed but not yet recorded, shard 2 was half-written, the rest never existed; the
    // rejected shards and the completion files were never written.
    let accepted = crashed.out.join("accepted");
    let mut manifest = read_manifest(&accepted).unwrap();
    for shard in manifest.shards.drain(1..).skip(1) {
        std::fs::remove_file(accepted.join(shard.file)).unwrap();
    }
    manifest.total_rows = manifest.shards[0].rows;
    std::fs::write(
        accepted.join("manifest.json"),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::write(accepted.join(".part-00002.parquet.tmp"), b"PAR1 half").unwrap();
    std::fs::remove_dir_all(crashed.out.join("rejected")).unwrap();
    for file in ["pass_rates.parquet", "report.json", "report.md"] {
        std::fs::remove_file(crashed.out.join(file)).unwrap();
    }

    run_filter(&crashed).unwrap();
    assert_eq!(outputs(&crashed.out), expected);
    assert!(names(&accepted).iter().all(|name| !name.ends_with(".tmp")));

    // Rerunning a complete output changes nothing and duplicates nothing.
    run_filter(&crashed).unwrap();
    assert_eq!(outputs(&crashed.out), expected);
}

#[test]
fn a_changed_configuration_is_refused_unless_forced() {
    let root = tempfile::tempdir().unwrap();
    write_input(&root.path().join("traces"), &input_rows(), 7);
    let first = config(root.path(), "out");
    run_filter(&first).unwrap();

    let mut changed = first.clone();
    changed.policy = Policy::Shortest(1);
    changed.readability.max_completion_tokens = 70;
    let error = run_filter(&changed).unwrap_err().to_string();
    assert!(error.contains("recipe hash mismatch"), "{error}");
    assert!(error.contains("manifest.json"), "{error}");
    assert!(
        root.path().join("out/report.json").exists(),
        "a refused run leaves the outputs alone"
    );

    changed.force = true;
    let summary = run_filter(&changed).unwrap();
    assert_eq!(summary.accepted, 0, "every trace is now too long");
    let fresh = config(root.path(), "fresh");
    let fresh = FilterConfig {
        policy: Policy::Shortest(1),
        readability: changed.readability.clone(),
        ..fresh
    };
    run_filter(&fresh).unwrap();
    let forced = outputs(&changed.out);
    let clean = outputs(&fresh.out);
    assert_eq!(forced.accepted, clean.accepted);
    assert_eq!(forced.rejected, clean.rejected);
    assert_eq!(forced.report_json, clean.report_json);
}

/// Rewrites the shard at `path` without `column`.
fn drop_column(path: &Path, column: &str) {
    let rows = distill::data::shards::read_shard::<TraceRow>(path).unwrap();
    let batch = TraceRow::to_record_batch(&rows).unwrap();
    let index = batch.schema().index_of(column).unwrap();
    let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
    let mut columns = batch.columns().to_vec();
    fields.remove(index);
    columns.remove(index);
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Records the current size and SHA-256 of every shard in the manifest of `dir`, as a tool
/// that rewrote the shards would, so the filter reads them rather than refusing the change.
fn relist(dir: &Path) {
    let mut manifest = read_manifest(dir).unwrap();
    for shard in &mut manifest.shards {
        let bytes = std::fs::read(dir.join(&shard.file)).unwrap();
        shard.bytes = bytes.len() as u64;
        shard.sha256 = distill::data::hashing::sha256_hex(&bytes);
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn malformed_input_names_the_file_and_column() {
    let root = tempfile::tempdir().unwrap();
    write_input(&root.path().join("traces"), &input_rows(), 20);
    drop_column(
        &root.path().join("traces/data/part-00001.parquet"),
        "answer",
    );
    relist(&root.path().join("traces"));
    let error = run_filter(&config(root.path(), "out"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("part-00001.parquet"), "{error}");
    assert!(error.contains("missing column `answer`"), "{error}");

    let missing = FilterConfig::new(root.path().join("nowhere"), root.path().join("out2"));
    let error = run_filter(&missing).unwrap_err().to_string();
    assert!(error.contains("nowhere"), "{error}");

    let mut rows = input_rows();
    rows[3].sample_index = 0;
    rows[3].id = rows[0].id.clone();
    let dup = tempfile::tempdir().unwrap();
    // Two shard directories merged by hand: the same key twice.
    write_input(&dup.path().join("traces"), &rows[..1], 1);
    let other = tempfile::tempdir().unwrap();
    write_input(other.path(), &rows[3..4], 1);
    std::fs::copy(
        other.path().join("data/part-00000.parquet"),
        dup.path().join("traces/data/part-00001.parquet"),
    )
    .unwrap();
    let mut manifest = read_manifest(&dup.path().join("traces")).unwrap();
    let mut second = manifest.shards[0].clone();
    second.file = "data/part-00001.parquet".into();
    manifest.shards.push(second);
    std::fs::write(
        dup.path().join("traces/manifest.json"),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
    relist(&dup.path().join("traces"));
    let error = run_filter(&FilterConfig::new(
        dup.path().join("traces"),
        dup.path().join("out"),
    ))
    .unwrap_err()
    .to_string();
    assert!(error.contains("duplicate key"), "{error}");
    assert!(
        error.contains("part-00001.parquet") && error.contains("part-00000.parquet"),
        "{error}"
    );
}

fn distill(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn command_line_filters_and_summarises() {
    let root = tempfile::tempdir().unwrap();
    write_input(&root.path().join("traces"), &input_rows(), 7);
    let input = root.path().join("traces");
    let out = root.path().join("out");
    let (input, out) = (input.to_str().unwrap(), out.to_str().unwrap());
    let math500 = math500();
    let run = distill(&[
        "filter",
        "--input",
        input,
        "--out",
        out,
        "--decontaminate",
        &math500,
        "--policy",
        "shortest:1",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("filtered 60 traces of 18 problems: 12 accepted (20.0%), 48 rejected"),
        "{stdout}"
    );
    assert!(stdout.contains("contaminated 6"), "{stdout}");

    let again = distill(&[
        "filter",
        "--input",
        input,
        "--out",
        out,
        "--max-completion-tokens",
        "50",
    ]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("recipe hash mismatch"), "{stderr}");

    let config = root.path().join("readability.toml");
    std::fs::write(&config, "max_completion_tokens = 50\n").unwrap();
    let forced = distill(&[
        "filter",
        "--input",
        input,
        "--out",
        out,
        "--config",
        config.to_str().unwrap(),
        "--force",
    ]);
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(stdout.contains(" 0 accepted"), "{stdout}");
    assert!(stdout.contains("too_long 60"), "{stdout}");

    std::fs::write(&config, "max_completion_token = 50\n").unwrap();
    let typo = distill(&[
        "filter",
        "--input",
        input,
        "--out",
        out,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!typo.status.success());
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(
        stderr.contains("readability.toml") && stderr.contains("`max_completion_token`"),
        "{stderr}"
    );

    let bad = distill(&[
        "filter", "--input", input, "--out", out, "--policy", "best:3",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("shortest:K"));
}
