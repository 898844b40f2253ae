//! The streaming filter: outputs byte-identical to those of the in-memory filter it replaced
//! (hashes recorded from that implementation in `tests/fixtures/filter/outputs.json`; rerun
//! with `DISTILL_RECORD_FILTER_FIXTURE=1` only when an output is meant to change), and the
//! same bytes whether the sort fits in memory or spills sorted runs to disk.

mod filter_common;

use std::collections::BTreeMap;
use std::path::Path;

use distill::data::hashing::sha256_hex;
use distill::data::schema::TraceRow;
use distill::filter::{run_filter, FilterConfig, Policy};
use filter_common::math500::math500_traces;
use filter_common::{labelled, math500, write_input};

const FIXTURE: &str = "tests/fixtures/filter/outputs.json";

/// MATH-500 traces plus the labelled readability cases, in an order that is not the key
/// order (as generate writes them: problem ids are hashes), 7 rows per shard.
fn write_unsorted_input(dir: &Path) {
    let mut rows: Vec<TraceRow> = math500_traces().0;
    rows.extend(labelled().into_iter().map(|(_, row)| row));
    // A fixed permutation: stride through the rows.
    let n = rows.len();
    let stride = (1..n).find(|s| gcd(*s, n) == 1 && *s > n / 3).unwrap();
    let shuffled: Vec<TraceRow> = (0..n).map(|i| rows[(i * stride) % n].clone()).collect();
    write_input(dir, &shuffled, 7);
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// An evaluation file holding MATH-500 problems 400..440 (so those training problems are
/// contaminated and the others are not).
fn write_eval_set(root: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(math500()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let path = root.join("eval").join("test.jsonl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, lines[400..440].join("\n") + "\n").unwrap();
    path
}

fn config(root: &Path, out: &str, policy: Policy) -> FilterConfig {
    let mut config = FilterConfig::new(root.join("traces"), root.join(out));
    config.decontaminate = vec![root.join("eval").join("test.jsonl")];
    config.policy = policy;
    config.rows_per_shard = 50;
    config
}

/// sha256 of every file a filter run wrote, by path relative to `out` (the lock excluded).
fn output_hashes(out: &Path) -> BTreeMap<String, String> {
    let mut hashes = BTreeMap::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .strip_prefix(out)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".distill.lock") {
                continue;
            }
            hashes.insert(name, sha256_hex(&std::fs::read(&path).unwrap()));
        }
    }
    hashes
}

#[test]
fn outputs_are_byte_identical_to_the_in_memory_filter() {
    let temp = tempfile::tempdir().unwrap();
    // The cards name the input by its last two path components: keep them fixed.
    let root = temp.path().join("run");
    write_unsorted_input(&root.join("traces"));
    write_eval_set(&root);
    let mut runs = BTreeMap::new();
    for (name, policy) in [("all", Policy::All), ("shortest-1", Policy::Shortest(1))] {
        let config = config(&root, name, policy);
        let summary = run_filter(&config).unwrap();
        assert!(summary.contaminated_problems >= 40, "{summary:?}");
        assert!(
            summary.accepted > 300 && summary.rejected > 100,
            "{summary:?}"
        );
        runs.insert(name.to_string(), output_hashes(&config.out));
    }
    if std::env::var_os("DISTILL_RECORD_FILTER_FIXTURE").is_some() {
        let text = serde_json::to_string_pretty(&runs).unwrap();
        std::fs::write(FIXTURE, text + "\n").unwrap();
    }
    let expected: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    assert_eq!(runs, expected);
}

#[test]
fn spilling_sorted_runs_to_disk_gives_the_same_bytes() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("run");
    write_unsorted_input(&root.join("traces"));
    write_eval_set(&root);
    let rows = distill::data::shards::read_trace_rows(&root.join("traces")).unwrap();
    let text: usize = rows
        .iter()
        .map(|r| {
            r.problem.len()
                + r.answer.len()
                + r.prompt.len()
                + r.generation.len()
                + r.reasoning.len()
                + r.final_text.len()
                + r.messages.iter().map(|m| m.content.len()).sum::<usize>()
        })
        .sum();
    assert!(
        text > 1 << 20,
        "the input must need several 0.25 MiB runs: {text} bytes"
    );

    let expected: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    // 0.25 MiB: a few runs merged at once; 0.02 MiB: ~60 runs, merged 16 at a time into longer
    // runs first.
    for (name, policy, buffer_mb) in [
        ("all", Policy::All, 0.25),
        ("shortest-1", Policy::Shortest(1), 0.25),
        ("all", Policy::All, 0.02),
    ] {
        let mut config = config(&root, name, policy);
        config.out = root.join(format!("buffer-{buffer_mb}")).join(name);
        config.sort_buffer_mb = buffer_mb;
        run_filter(&config).unwrap();
        assert_eq!(
            output_hashes(&config.out),
            expected[name],
            "{name}, {buffer_mb} MiB"
        );
        assert!(!config.out.join(".sort-runs").exists(), "runs are removed");
    }
}
