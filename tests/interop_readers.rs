//! Every kind of output directory distill writes opens in the readers people use: HF `datasets`
//! (`load_dataset(DIR)` through the dataset card, and the `parquet` builder on the data folder),
//! pandas, pyarrow, Polars and DuckDB. The outputs are made here (generate with the tiny
//! stories260K teacher, filter on hand-made traces, pairs from the filter's output, eval with
//! stories260K) and checked by
//! `tests/support/interop_readers.py` for row counts, column types and the `messages` structure,
//! plus a negative control: the legacy layout (shards beside `manifest.json`) must fail to open.
//!
//! The Python packages come from `DISTILL_INTEROP_PYTHON` (set by `.ci/run`), else `python3`.
//! Without them the test says so loudly and passes — unless `CI` or `DISTILL_INTEROP_PYTHON` is
//! set, where it fails.

mod filter_common;
mod generate_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use distill::data::prompt_source::load_prompts;
use distill::data::shards::{read_manifest, read_trace_rows, MANIFEST_FILE};
use distill::eval::{run_eval, EvalConfig};
use distill::filter::pairs::{run_pairs, PairConfig, PAIRS_DIR};
use distill::filter::{run_filter, FilterConfig};
use distill::generate::run_generate;
use serde_json::json;

const SCRIPT: &str = "tests/support/interop_readers.py";
const MODULES: &str = "import datasets, duckdb, huggingface_hub, pandas, polars, pyarrow, yaml";

/// The Python that has the readers, or `None` (with a loud message) where that is allowed.
fn readers_python() -> Option<String> {
    let configured = std::env::var("DISTILL_INTEROP_PYTHON").ok();
    let required = configured.is_some() || std::env::var_os("CI").is_some();
    let python = configured.unwrap_or_else(|| "python3".into());
    let probe = Command::new(&python).args(["-c", MODULES]).output();
    match probe {
        Ok(out) if out.status.success() => Some(python),
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_string(),
                Err(error) => error.to_string(),
            };
            assert!(
                !required,
                "the interop readers are required here (CI or DISTILL_INTEROP_PYTHON is set) but \
                 `{python}` cannot import them: {why}"
            );
            eprintln!(
                "\n{bar}\nSKIPPED interop_readers: `{python}` lacks pandas/pyarrow/polars/duckdb/\
                 datasets/huggingface_hub/pyyaml ({why}).\nRun .ci/run, or set \
                 DISTILL_INTEROP_PYTHON to a Python that has them, to check every output against \
                 the real readers.\n{bar}\n",
                bar = "!".repeat(78)
            );
            None
        }
    }
}

/// The Arrow types the readers must see for trace columns (`datasets/SCHEMA.md`).
fn trace_types() -> serde_json::Value {
    json!({
        "id": "string", "source": "string", "problem": "string", "answer": "string",
        "prompt": "string", "generation": "string", "temperature": "double",
        "top_p": "double", "seed": "uint64", "sample_index": "uint32",
        "completion_tokens": "uint32", "created_at": "string",
        "messages": "list<item: struct<role: string, content: string>>",
    })
}

/// Runs generate, filter and eval into `root`; returns the reader spec of their outputs.
fn make_outputs(root: &Path) -> serde_json::Value {
    let traces = root.join("traces");
    let generate =
        generate_common::local_config("synth:arith:difficulty=2:count=6:seed=3", &traces);
    let generated = run_generate(&generate).unwrap();
    assert_eq!(generated.total_rows, 12);

    let input = root.join("hand-made");
    let labelled: Vec<_> = filter_common::labelled()
        .into_iter()
        .map(|(_, row)| row)
        .collect();
    filter_common::write_input(&input, &labelled, 4);
    let filtered = root.join("filtered");
    let mut filter: FilterConfig = serde_json::from_value(json!({
        "input": input, "out": filtered, "progress": false,
    }))
    .unwrap();
    filter.rows_per_shard = 3;
    let summary = run_filter(&filter).unwrap();
    assert!(summary.accepted > 0 && summary.rejected > 0, "{summary:?}");
    let pass_rates = summary.problems;
    let pairs = PairConfig::new(filtered.clone(), root.join("pairs"));
    let pair_summary = run_pairs(&pairs).unwrap();
    assert!(pair_summary.pairs > 0, "{pair_summary:?}");

    let eval_dir = root.join("eval-base");
    let mut eval = EvalConfig::new(&generate_common::stories260k(), eval_dir.clone());
    eval.k = 2;
    eval.max_new_tokens = 8;
    let problems = load_prompts("synth:arith:difficulty=2:count=3:seed=9").unwrap();
    run_eval(&eval, &problems).unwrap();

    let filtered_types = {
        let mut types = trace_types();
        types["verified"] = json!("bool");
        types["extracted_answer"] = json!("string");
        types["reject_reasons"] = json!("list<item: string>");
        types
    };
    let messages = "list<item: struct<role: string, content: string>>";
    json!({"outputs": [
        {"name": "generate", "dir": traces, "types": trace_types(), "messages": true,
         "splits": {"train": {"folder": "data", "rows": 12}}},
        {"name": "filter", "dir": filtered, "types": filtered_types, "messages": true,
         "splits": {"accepted": {"folder": "accepted/data", "rows": summary.accepted},
                    "rejected": {"folder": "rejected/data", "rows": summary.rejected}},
         "configs": {"pass_rates": {"train": pass_rates}}},
        {"name": "filter-accepted", "dir": filtered.join("accepted"), "types": filtered_types,
         "messages": true, "splits": {"train": {"folder": "data", "rows": summary.accepted}}},
        {"name": "pairs", "dir": pairs.out.join(PAIRS_DIR), "messages": false,
         "types": {"prompt": messages, "chosen": messages, "rejected": messages,
                   "id": "string", "pair_index": "uint32", "rejected_reasons": "list<item: string>",
                   "chosen_tokens": "uint32"},
         "splits": {"train": {"folder": "data", "rows": pair_summary.pairs}}},
        {"name": "eval", "dir": eval_dir, "messages": false,
         "types": {"id": "string", "sample_index": "uint32", "completion": "string",
                   "answer": "string", "correct": "bool", "tokens": "uint32"},
         "splits": {"train": {"folder": "data", "rows": 6}}},
    ]})
}

/// A copy of the shard directory `dir` in the layout distill wrote before the `data/` folder.
fn legacy_copy(dir: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    let mut manifest = read_manifest(dir).unwrap();
    for shard in &mut manifest.shards {
        let name = shard.file.rsplit('/').next().unwrap().to_string();
        std::fs::copy(dir.join(&shard.file), to.join(&name)).unwrap();
        shard.file = name;
    }
    manifest.format_version = 1;
    std::fs::write(
        to.join(MANIFEST_FILE),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::copy(dir.join("summary.json"), to.join("summary.json")).unwrap();
    to.to_path_buf()
}

#[test]
fn every_output_opens_in_every_reader() {
    let Some(python) = readers_python() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut spec = make_outputs(root.path());
    let legacy = legacy_copy(
        &root.path().join("traces"),
        &root.path().join("legacy-traces"),
    );
    assert_eq!(
        read_trace_rows(&legacy).unwrap().len(),
        12,
        "distill still reads the legacy layout"
    );
    spec["legacy"] = json!([legacy]);
    let spec_path = root.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let run = Command::new(&python)
        .arg(SCRIPT)
        .arg(&spec_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "the readers failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

/// The cards' bodies (checked without Python): the recipe, the counts, the acceptance tables.
#[test]
fn cards_carry_the_recipe_counts_and_acceptance_tables() {
    let root = tempfile::tempdir().unwrap();
    make_outputs(root.path());
    let card =
        |dir: &str| std::fs::read_to_string(root.path().join(dir).join("README.md")).unwrap();
    let traces = card("traces");
    for expected in [
        "configs:\n- config_name: \"default\"\n  data_files:\n  - split: \"train\"\n    path: \"data/*.parquet\"",
        "| temperature | 0.8 |",
        "| samples per problem (n) | 2 |",
        "12 rows in 3 Parquet shard(s)",
        "pd.read_parquet(\"traces/data\")",
    ] {
        assert!(traces.contains(expected), "{expected}\n{traces}");
    }
    let filtered = card("filtered");
    for expected in [
        "  - split: \"accepted\"\n    path: \"accepted/data/*.parquet\"",
        "- config_name: \"pass_rates\"",
        "| `hand-made` | 0.6 | 0.95 |",
        "| policy | `all` |",
        "### Rejection reasons",
        "| `wrong_answer` |",
        "### Per source",
        "load_dataset(\"filtered\")",
    ] {
        assert!(filtered.contains(expected), "{expected}\n{filtered}");
    }
    assert!(card("filtered/accepted").contains("../README.md"));
    assert!(card("eval-base").contains("pass@1"));
}
