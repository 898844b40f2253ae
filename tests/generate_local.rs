//! `distill generate` with the real stories260K model as the local teacher: the shards read
//! back through arrow/parquet with the documented schema, rows are deterministic for a seed,
//! a killed run resumes to exactly the rows of an uninterrupted one, and N=3 workers together
//! write the rows of one.

mod generate_common;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use distill::data::schema::{ArrowRow, TraceRow};
use distill::data::shards::{read_manifest, read_shard_keys, shard_paths, verify_shards};
use distill::generate::{run_generate, GenerateConfig};
use generate_common::{all_files, comparable_rows, local_config, normalise, stories260k};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const PROMPTS: &str = "synth:arith:difficulty=2:count=12:seed=3";

#[test]
fn shards_follow_the_schema_and_rows_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let summary = run_generate(&local_config(PROMPTS, &a)).unwrap();
    let mut other = local_config(PROMPTS, &b);
    if let distill::generate::TeacherConfig::Local { batch_size, .. } = &mut other.teacher {
        *batch_size = 3; // a different batch composition must not change any row
    }
    run_generate(&other).unwrap();

    assert_eq!(summary.problems, 12);
    assert_eq!(summary.rows_written, 24);
    assert_eq!(summary.samples_generated, 24);
    assert!(summary.completion_tokens > 0 && summary.tokens_per_second > 0.0);
    let reasons: usize = summary.finish_reasons.values().sum();
    assert_eq!(reasons, 24);

    // Raw Parquet: the documented 22 columns with their Arrow types, zstd, 5 rows per shard.
    let shards = shard_paths(&a).unwrap();
    assert_eq!(shards.len(), 5);
    for shard in &shards {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(shard).unwrap()).unwrap();
        let codec = builder.metadata().row_group(0).column(0).compression();
        assert!(format!("{codec:?}").starts_with("ZSTD"), "{codec:?}");
        let schema = builder.schema().clone();
        let expected = TraceRow::schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names.len(), 22);
        for (field, want) in schema.fields().iter().zip(expected.fields()) {
            assert_eq!(field.name(), want.name());
            assert_eq!(field.data_type(), want.data_type(), "{}", field.name());
        }
    }
    let manifest = verify_shards(&a).unwrap();
    assert_eq!(manifest.total_rows, 24);
    assert_eq!(
        manifest.recipe_hash,
        local_config(PROMPTS, &a).recipe_hash()
    );

    let rows = comparable_rows(&a);
    assert_eq!(rows, comparable_rows(&b), "same seed, same rows");
    let row = &rows[0];
    assert!(row.id.starts_with("synth-arith-d2-3-"));
    assert!(
        row.prompt.ends_with("<|im_start|>assistant\n"),
        "{}",
        row.prompt
    );
    assert_eq!(row.messages.len(), 2);
    assert!(row.messages[0].content.ends_with("within \\boxed{}."));
    assert_eq!(row.messages[1].content, row.generation);
    assert_eq!(row.teacher, stories260k());
    assert_eq!((row.temperature, row.top_p), (0.8, 0.95));
    assert!(row.completion_tokens.is_some_and(|t| t > 0 && t <= 24));
    assert!(row.prompt_tokens.is_some_and(|t| t > 0));
    assert!(!row.generation.is_empty());
    // Two samples of one problem differ (own seeds); seeds differ across problems.
    assert_ne!(rows[0].seed, rows[1].seed);
    assert_ne!(rows[0].seed, rows[2].seed);
    let created = &read_manifest(&a).unwrap();
    assert_eq!(created.shards.len(), 5);

    // A different run seed changes the samples.
    let c = tmp.path().join("c");
    let mut reseeded = local_config(PROMPTS, &c);
    reseeded.seed = 8;
    run_generate(&reseeded).unwrap();
    let changed = comparable_rows(&c);
    assert_ne!(
        changed.iter().map(|r| &r.generation).collect::<Vec<_>>(),
        rows.iter().map(|r| &r.generation).collect::<Vec<_>>()
    );

    // Rerunning the finished config writes nothing and skips everything.
    let again = run_generate(&local_config(PROMPTS, &a)).unwrap();
    assert_eq!((again.rows_written, again.rows_skipped), (0, 24));
    assert_eq!(again.problems_already_done, 12);
    assert_eq!(comparable_rows(&a), rows);

    // Another recipe into the same directory is refused.
    let mut changed_recipe = local_config(PROMPTS, &a);
    changed_recipe.temperature = 0.3;
    let error = run_generate(&changed_recipe).unwrap_err().to_string();
    assert!(error.contains("recipe"), "{error}");
}

#[test]
fn three_workers_write_the_rows_of_one() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    run_generate(&local_config(PROMPTS, &whole)).unwrap();
    let split = tmp.path().join("split");
    let mut rows = Vec::new();
    let mut sizes = Vec::new();
    for index in 0..3 {
        let config = GenerateConfig {
            num_shards: 3,
            shard_index: index,
            ..local_config(PROMPTS, &split)
        };
        let summary = run_generate(&config).unwrap();
        let dir = split.join(format!("worker-{index:02}-of-03"));
        assert_eq!(summary.out_dir, dir);
        let part = distill::data::shards::read_trace_rows(&dir).unwrap();
        sizes.push(part.len());
        rows.extend(part);
    }
    normalise(&mut rows);
    assert_eq!(rows, comparable_rows(&whole));
    assert!(sizes.iter().all(|&s| s < 24), "work is split: {sizes:?}");
}

fn generate_command(out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distill"));
    command.args([
        "generate",
        "--prompts",
        "synth:linear:difficulty=2:count=40:seed=5",
        "--teacher",
        &stories260k(),
        "--max-new-tokens",
        "24",
        "-n",
        "2",
        "--temperature",
        "0.7",
        "--seed",
        "11",
        "--batch-size",
        "1",
        "--rows-per-shard",
        "3",
        "--out",
    ]);
    command.arg(out);
    command
}

#[test]
fn a_killed_run_resumes_to_the_rows_of_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let out = generate_command(&reference).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Wrote 80 rows"));

    let resumed = tmp.path().join("resumed");
    let mut child = generate_command(&resumed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while shard_paths(&resumed).map_or(true, |s| s.is_empty()) {
        assert!(Instant::now() < deadline, "no shard appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Count rows in every complete shard file, including one a kill may have left out of the
    // manifest (renamed, manifest not yet rewritten): resume adopts it.
    let partial: usize = all_files(&resumed)
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("part-") && name.ends_with(".parquet")
        })
        .map(|p| read_shard_keys::<TraceRow>(p).unwrap().len())
        .sum();
    assert!(
        partial > 0 && partial < 80,
        "killed mid-run: {partial} rows"
    );

    let out = generate_command(&resumed).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("skipped {partial} already present")),
        "{stdout}"
    );

    let rows = comparable_rows(&resumed);
    assert_eq!(rows.len(), 80, "no row lost, none duplicated");
    assert_eq!(rows, comparable_rows(&reference));
    verify_shards(&resumed).unwrap();
    let temps: Vec<_> = all_files(&resumed)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

#[test]
fn file_prompts_through_a_column_mapping_or_a_detected_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("mine.jsonl");
    std::fs::write(
        &prompts,
        "{\"key\": \"p1\", \"q\": \"What is 2 + 3?\", \"a\": \"5\"}\n{\"key\": \"p2\", \"q\": \"What is 4 + 4?\", \"a\": \"8\"}\n{\"key\": \"p3\", \"q\": \"What is 1 + 1?\", \"a\": \"2\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("mapped");
    let config = GenerateConfig {
        problem_column: Some("q".into()),
        answer_column: Some("a".into()),
        id_column: Some("key".into()),
        limit: Some(2),
        system_prompt: Some("Be brief.".into()),
        instruction: String::new(),
        n: 1,
        ..local_config(&prompts.to_string_lossy(), &out)
    };
    let summary = run_generate(&config).unwrap();
    assert_eq!(summary.problems, 2);
    let rows = comparable_rows(&out);
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["p1", "p2"]);
    assert_eq!(rows[0].source, "mine");
    assert_eq!(rows[0].answer, "5");
    let roles: Vec<&str> = rows[0].messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
    assert_eq!(
        rows[0].messages[1].content, "What is 2 + 3?",
        "no instruction"
    );
    assert!(rows[0]
        .prompt
        .starts_with("<|im_start|>system\nBe brief.<|im_end|>"));

    let out = tmp.path().join("math500");
    let config = GenerateConfig {
        limit: Some(2),
        n: 1,
        ..local_config("../shared/data/math500/test.jsonl", &out)
    };
    run_generate(&config).unwrap();
    let rows = comparable_rows(&out);
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| r.id.starts_with("math500-")),
        "{}",
        rows[0].id
    );
    assert!(rows[0].metadata.contains_key("subject"));
}
