//! `distill run` end to end on a shrunken tiny recipe: every stage on the real code path, the report's
//! structure, accepted traces all verified correct, no eval problem in any training input, and a run
//! killed mid-way that completes with the same report.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use distill::data::prompt_source::load_prompts;
use distill::data::schema::TraceRow;
use distill::data::shards::read_rows;

/// The built-in recipe's structure with every size shrunk so the whole pipeline runs in about a
/// minute. The teacher memorises programmatic traces of the very prompts it will answer (so the
/// filter has correct traces to accept); the full recipe keeps those sets apart.
fn shrunken_recipe(out: &Path) -> String {
    let built_in: toml::Table = toml::from_str(distill::pipeline::recipe::TINY_R1).unwrap();
    let mut recipe: toml::Table = toml::from_str(&format!(
        r#"

name = "tiny-r1-shrunken"
out = {out:?}
seed = 3

[prompts]
train = "synth:arith:difficulty=1:count=16:seed=11"
eval = "synth:arith:difficulty=1:count=12:seed=12"

[tokenizer]
vocab_size = 320

[teacher.bootstrap]
hidden_size = 64
intermediate_size = 128
layers = 2
heads = 4
kv_heads = 2
corpus = "synth:arith:difficulty=1:count=16:seed=11"
[teacher.bootstrap.train]
learning_rate = 5e-3
min_lr_ratio = 0.1
warmup_steps = 10
epochs = 60
batch_size = 8
eval_fraction = 0.0

[student.bootstrap]
hidden_size = 32
intermediate_size = 64
layers = 1
heads = 4
kv_heads = 2
corpus = "synth:arith:difficulty=1:count=200:seed=2"
[student.bootstrap.train]
learning_rate = 3e-3
epochs = 1
batch_size = 32
eval_fraction = 0.0

[generate]
n = 4
temperature = 1.0
max_new_tokens = 160

[sft]
epochs = 1
batch_size = 8
eval_fraction = 0.0

[dpo]
epochs = 1
batch_size = 4
learning_rate = 1e-4
eval_fraction = 0.0

[grpo]
match_sft_compute = true
steps = 4
group_size = 4
prompts_per_step = 2
max_new_tokens = 24

[eval]
k = 2
max_new_tokens = 160
batch_size = 16

[compare]
bootstrap = 200
"#,
        out = out.display().to_string()
    ))
    .unwrap();
    // Every section of the built-in recipe exists in the shrunken one (same structure, smaller sizes).
    for key in built_in.keys() {
        recipe
            .entry(key.clone())
            .or_insert_with(|| built_in[key].clone());
    }
    toml::to_string(&recipe).unwrap()
}

fn run(recipe: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_distill"))
        .arg("run")
        .arg(recipe)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The report without wall times and directory names.
fn report_numbers(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report/report.json")).unwrap();
    let mut report: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Wall times and the run's own directories differ between the two runs; every number else must not.
    strip_keys(&mut report, &["wall", "dirs"]);
    report
}

fn strip_keys(value: &mut serde_json::Value, keys: &[&str]) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !keys.iter().any(|key| k.contains(key)));
            map.values_mut().for_each(|v| strip_keys(v, keys));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip_keys(v, keys)),
        _ => {}
    }
}

#[test]
fn the_shrunken_tiny_recipe_runs_end_to_end_and_resumes_to_the_same_report() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let recipe_path = tmp.path().join("straight.toml");
    std::fs::write(&recipe_path, shrunken_recipe(&straight)).unwrap();
    let out = run(&recipe_path).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("report/report.md"), "{stdout}");

    let report = std::fs::read_to_string(straight.join("report/report.md")).unwrap();
    for label in ["base", "sft", "grpo", "sft→dpo"] {
        assert!(
            report.contains(label),
            "the report has a row for {label}:\n{report}"
        );
    }
    assert!(
        report.contains("95%"),
        "accuracy comes with confidence intervals:\n{report}"
    );
    assert!(
        report.contains("FLOP"),
        "training compute is reported:\n{report}"
    );

    let accepted: Vec<distill::data::schema::TraceRow> =
        read_rows::<TraceRow>(&straight.join("filtered/accepted")).unwrap_or_default();
    for row in &accepted {
        let grade = distill::verify::grade(&row.answer, &row.metadata, &row.generation).unwrap();
        assert!(
            grade.correct,
            "accepted trace {} #{} is not verified correct",
            row.id, row.sample_index
        );
    }
    println!("accepted traces: {} (all verified correct)", accepted.len());

    // No eval problem reaches a training input. The student's corpus spec repeats some eval
    // problems (difficulty 1 has few distinct ones), so the exclusion is exercised.
    let recipe =
        distill::pipeline::recipe::Recipe::from_toml(&shrunken_recipe(&straight), "test").unwrap();
    let eval: HashSet<String> = load_prompts(&recipe.prompts.eval)
        .unwrap()
        .into_iter()
        .map(|p| p.problem)
        .collect();
    let student_spec = recipe.student.bootstrap.as_ref().unwrap().corpus.clone();
    let student_tasks = load_prompts(&student_spec).unwrap();
    let repeats = student_tasks
        .iter()
        .filter(|p| eval.contains(&p.problem))
        .count();
    assert!(repeats > 0, "{student_spec} repeats no eval problem");
    let student_corpus = read_rows::<TraceRow>(&straight.join("student/corpus")).unwrap();
    assert_eq!(student_corpus.len(), student_tasks.len() - repeats);
    for dir in ["teacher/corpus", "student/corpus", "traces"] {
        for row in read_rows::<TraceRow>(&straight.join(dir)).unwrap() {
            assert!(
                !eval.contains(&row.problem),
                "{dir} holds eval problem {:?}",
                row.problem
            );
        }
    }

    // Kill a second run once its SFT stage has started, rerun it, and compare the reports.
    let killed = tmp.path().join("killed");
    let killed_recipe = tmp.path().join("killed.toml");
    std::fs::write(&killed_recipe, shrunken_recipe(&killed)).unwrap();
    let mut child = run(&killed_recipe);
    let marker = killed.join("sft").join("metrics.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !marker.exists() && std::time::Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the second run stopped before its SFT stage"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("report").join("report.md").exists(),
        "killed before the end"
    );
    let out = run(&killed_recipe).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report_numbers(&straight),
        report_numbers(&killed),
        "the resumed run reports the same numbers"
    );
}

#[test]
fn every_shipped_recipe_parses_and_its_sections_are_valid_stage_configs() {
    use distill::pipeline::recipe::{path_value, stage_config, Recipe};
    let mut seen = 0;
    for entry in std::fs::read_dir("recipes").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue; // recipes/accelerate/: accelerate configs for the TRL engine
        }
        let recipe =
            Recipe::from_file(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        let dir = path_value(Path::new("x"));
        let mut generate = recipe.generate.clone();
        generate.entry("teacher").or_insert_with(|| {
            toml::Value::Table(toml::from_str("kind = \"local\"\nmodel = \"x\"").unwrap())
        });
        let _: distill::generate::GenerateConfig = stage_config(
            "generate",
            &generate,
            &[("prompts", "x".into()), ("out", dir.clone())],
        )
        .unwrap();
        let _: distill::filter::FilterConfig = stage_config(
            "filter",
            &recipe.filter,
            &[("input", dir.clone()), ("out", dir.clone())],
        )
        .unwrap();
        let sft_fixed = [
            ("student", "x".into()),
            ("data", dir.clone()),
            ("out", dir.clone()),
        ];
        let _: distill::train::sft::SftConfig =
            stage_config("sft", &recipe.sft, &sft_fixed).unwrap();
        for spec in [&recipe.teacher, &recipe.student] {
            if let Some(bootstrap) = &spec.bootstrap {
                let _: distill::train::sft::SftConfig =
                    stage_config("bootstrap", &bootstrap.train, &sft_fixed).unwrap();
            }
        }
        let _: distill::train::grpo::GrpoConfig = stage_config(
            "grpo",
            &recipe.grpo.settings,
            &[("policy", "x".into()), ("out", dir.clone())],
        )
        .unwrap();
        if let Some(dpo) = &recipe.dpo {
            let _: distill::train::dpo::DpoConfig = stage_config(
                "dpo",
                &dpo.settings,
                &[
                    ("policy", "x".into()),
                    ("data", dir.clone()),
                    ("out", dir.clone()),
                ],
            )
            .unwrap();
        }
        let _: distill::eval::EvalConfig = stage_config(
            "eval",
            &recipe.eval,
            &[("model", "x".into()), ("out", dir.clone())],
        )
        .unwrap();
        let _: distill::compare::CompareConfig = stage_config(
            "compare",
            &recipe.compare,
            &[
                ("runs", toml::Value::Array(Vec::new())),
                ("out", dir.clone()),
            ],
        )
        .unwrap();
        seen += 1;
    }
    assert!(seen >= 3, "the tiny recipe and the real-scale recipes");
}
