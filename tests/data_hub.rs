//! Hub datasets as inputs (`hf:ORG/NAME[:CONFIG][:SPLIT]`), resolved offline from a cache laid out
//! exactly as hf-hub and `huggingface_hub` lay it out (`datasets--ORG--NAME/refs/main`,
//! `snapshots/<commit>/…` symlinks into `blobs/`): GSM8K (configs in the card, Parquet shards),
//! MATH-500 (a bare `test.jsonl`), OpenR1-Math-220k and NuminaMath-CoT columns, the card's licence
//! on the generate output, SFT conversations, and the errors for what is not there.
//!
//! Every case runs in one test: `HF_HOME` and `HF_HUB_OFFLINE` are process-wide.

mod common;
mod generate_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray, StringArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema};
use arrow::record_batch::RecordBatch;
use distill::data::prompt_source::load_prompts;
use parquet::arrow::ArrowWriter;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A Parquet file of string columns.
fn parquet_bytes(columns: &[(&str, Vec<&str>)], extra: Option<(&str, ArrayRef)>) -> Vec<u8> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, values) in columns {
        fields.push(Field::new(*name, DataType::Utf8, false));
        arrays.push(Arc::new(StringArray::from(values.clone())));
    }
    if let Some((name, array)) = extra {
        fields.push(Field::new(name, array.data_type().clone(), false));
        arrays.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

/// A `messages` column: per row a user turn and an assistant turn.
fn messages(rows: &[(&str, &str)]) -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ]);
    let roles: Vec<&str> = rows.iter().flat_map(|_| ["user", "assistant"]).collect();
    let contents: Vec<&str> = rows.iter().flat_map(|(u, a)| [*u, *a]).collect();
    let items = StructArray::new(
        fields.clone(),
        vec![
            Arc::new(StringArray::from(roles)) as ArrayRef,
            Arc::new(StringArray::from(contents)) as ArrayRef,
        ],
        None,
    );
    let offsets = OffsetBuffer::from_lengths(rows.iter().map(|_| 2));
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Struct(fields), false)),
        offsets,
        Arc::new(items),
        None,
    ))
}

/// Lays out `files` (path in the repo, bytes) as hf-hub's cache does under `home/hub`.
fn cache_dataset(home: &Path, repo: &str, files: &[(&str, Vec<u8>)]) {
    let root = home
        .join("hub")
        .join(format!("datasets--{}", repo.replace('/', "--")));
    let snapshot = root.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::write(root.join("refs").join("main"), COMMIT).unwrap();
    for (path, bytes) in files {
        let blob = distill::data::hashing::sha256_hex(bytes);
        std::fs::write(root.join("blobs").join(&blob), bytes).unwrap();
        let link = snapshot.join(path);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = path.matches('/').count() + 2;
        let target: PathBuf = std::iter::repeat_n("..", depth)
            .collect::<PathBuf>()
            .join("blobs")
            .join(&blob);
        std::os::unix::fs::symlink(target, &link).unwrap();
        assert!(link.is_file(), "{} resolves", link.display());
    }
}

const GSM8K_CARD: &str = "---\nlicense: mit\nconfigs:\n- config_name: main\n  data_files:\n  \
- split: train\n    path: main/train-*\n  - split: test\n    path: main/test-*\n\
- config_name: socratic\n  data_files:\n  - split: test\n    path: socratic/test-*\n---\n# GSM8K\n";

fn fill_cache(home: &Path) {
    let gsm8k = |questions: Vec<&str>, answers: Vec<&str>| {
        parquet_bytes(&[("question", questions), ("answer", answers)], None)
    };
    cache_dataset(
        home,
        "openai/gsm8k",
        &[
            ("README.md", GSM8K_CARD.as_bytes().to_vec()),
            (
                "main/test-00000-of-00002.parquet",
                gsm8k(vec!["What is 2 + 3?"], vec!["2 + 3 = 5\n#### 5"]),
            ),
            (
                "main/test-00001-of-00002.parquet",
                gsm8k(vec!["What is 1,000 + 1?"], vec!["#### 1,001"]),
            ),
            (
                "main/train-00000-of-00001.parquet",
                gsm8k(vec!["What is 9 - 4?"], vec!["#### 5"]),
            ),
            (
                "socratic/test-00000-of-00001.parquet",
                gsm8k(vec!["Socratic?"], vec!["#### 1"]),
            ),
        ],
    );
    let math500: String = std::fs::read_to_string("../shared/data/math500/test.jsonl")
        .unwrap()
        .lines()
        .take(3)
        .map(|line| format!("{line}\n"))
        .collect();
    cache_dataset(
        home,
        "HuggingFaceH4/MATH-500",
        &[("test.jsonl", math500.into_bytes())],
    );
    cache_dataset(
        home,
        "open-r1/OpenR1-Math-220k",
        &[(
            "data/train-00000-of-00001.parquet",
            parquet_bytes(
                &[
                    ("problem", vec!["Find x if 2x = 8."]),
                    ("solution", vec!["x = 4"]),
                    ("answer", vec!["4"]),
                    ("problem_type", vec!["Algebra"]),
                    ("question_type", vec!["math-word-problem"]),
                    ("source", vec!["olympiads"]),
                    ("uuid", vec!["u-1"]),
                ],
                Some((
                    "messages",
                    messages(&[("Find x if 2x = 8.", "<think>\n8/2\n</think>\n\\boxed{4}")]),
                )),
            ),
        )],
    );
    cache_dataset(
        home,
        "AI-MO/NuminaMath-CoT",
        &[(
            "data/train-00000-of-00001.parquet",
            parquet_bytes(
                &[
                    ("source", vec!["amc_aime"]),
                    ("problem", vec!["What is 6 * 7?"]),
                    (
                        "solution",
                        vec!["6 * 7 = 42, so the answer is $\\boxed{42}$."],
                    ),
                ],
                Some(("messages", messages(&[("What is 6 * 7?", "\\boxed{42}")]))),
            ),
        )],
    );
}

#[test]
fn hub_datasets_resolve_offline_from_the_standard_cache() {
    let home = tempfile::tempdir().unwrap();
    fill_cache(home.path());
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let gsm8k = load_prompts("hf:openai/gsm8k:main:test").unwrap();
    assert_eq!(gsm8k.len(), 2, "both test shards, not train or socratic");
    assert_eq!(
        gsm8k[0].source, "gsm8k-test",
        "named like the file gsm8k/test.jsonl"
    );
    assert_eq!(
        (gsm8k[0].answer.as_str(), gsm8k[1].answer.as_str()),
        ("5", "1001")
    );
    assert_eq!(load_prompts("hf:openai/gsm8k:main:train").unwrap().len(), 1);
    assert_eq!(load_prompts("hf:openai/gsm8k:socratic").unwrap().len(), 1);

    let math500 = load_prompts("hf:HuggingFaceH4/MATH-500:test").unwrap();
    assert_eq!(math500.len(), 3);
    assert_eq!(math500[0].source, "math500-test");
    assert!(
        math500[0].id.starts_with("math500-test/"),
        "{}",
        math500[0].id
    );
    assert_eq!(load_prompts("hf:HuggingFaceH4/MATH-500").unwrap(), math500);

    let openr1 = load_prompts("hf:open-r1/OpenR1-Math-220k").unwrap();
    assert_eq!(
        (openr1[0].answer.as_str(), openr1[0].source.as_str()),
        ("4", "numina-train")
    );
    assert_eq!(openr1[0].metadata["problem_type"], "Algebra");
    let numina = load_prompts("hf:AI-MO/NuminaMath-CoT:train").unwrap();
    assert_eq!(
        numina[0].answer, "42",
        "the last \\boxed{{}} of the solution"
    );

    let conversations =
        common::load_conversations(Path::new("hf:open-r1/OpenR1-Math-220k:default:train")).unwrap();
    assert_eq!(conversations.len(), 1);
    assert_eq!(conversations[0].messages[1].role, "assistant");

    for (spec, expected) in [
        ("hf:openai/gsm8k", "name a config: it has main, socratic"),
        (
            "hf:openai/gsm8k:main",
            "name a split: config `main` has train, test",
        ),
        ("hf:openai/gsm8k:main:validation", "no split `validation`"),
        ("hf:nobody/nothing", "not in the Hugging Face cache"),
        ("hf:gsm8k", "ORG/NAME"),
    ] {
        let error = load_prompts(spec).unwrap_err().to_string();
        assert!(error.contains(expected), "{spec}: {error}");
    }

    // The generate stage takes the same name and carries the card's licence into its own card.
    let out = home.path().join("traces");
    let run = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args([
            "generate",
            "--prompts",
            "hf:openai/gsm8k:main:test",
            "--teacher",
        ])
        .arg(generate_common::stories260k())
        .args(["--max-new-tokens", "4", "--no-progress", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("license: \"mit\""), "{card}");
    assert!(card.contains("`hf:openai/gsm8k:main:test`"), "{card}");
}
