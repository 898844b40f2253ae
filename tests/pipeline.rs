//! `distill run` end to end on a shrunken tiny recipe: every stage on the real code path, the report's
//! structure, accepted traces all verified correct, and a run killed mid-way that completes with the
//! same report.

mod common;

use std::path::Path;
use std::process::Command;

use distill::data::schema::TraceRow;
use distill::data::shards::read_rows;

/// The built-in recipe with every size shrunk so the whole pipeline runs in well under a minute.
fn shrunken_recipe(out: &Path) -> String {
    let recipe = distill::pipeline::recipe::TINY_R1
        .replace(
            "out = \"runs/tiny-r1\"",
            &format!("out = {:?}", out.display().to_string()),
        )
        .replace("count=384:seed=11", "count=24:seed=11")
        .replace("count=128:seed=12", "count=16:seed=12")
        .replace("count=4000:seed=1\"", "count=300:seed=1\"")
        .replace("count=4000:seed=2\"", "count=300:seed=2\"")
        .replace("hidden_size = 128", "hidden_size = 32")
        .replace("hidden_size = 96", "hidden_size = 32")
        .replace("intermediate_size = 384", "intermediate_size = 64")
        .replace("intermediate_size = 256", "intermediate_size = 64")
        .replace("layers = 4", "layers = 1")
        .replace("layers = 3", "layers = 1")
        .replace("epochs = 2", "epochs = 1")
        .replace("epochs = 3", "epochs = 1")
        .replace("max_new_tokens = 160", "max_new_tokens = 48")
        .replace("steps = 400", "steps = 6")
        .replace("k = 4", "k = 2")
        .replace("bootstrap = 1000", "bootstrap = 200");
    assert!(
        recipe.contains("hidden_size = 32") && recipe.contains("steps = 6"),
        "the shrinking applied"
    );
    recipe
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

/// The report's numbers without wall times (which differ between runs).
fn report_numbers(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report/report.json")).unwrap();
    let mut report: serde_json::Value = serde_json::from_str(&text).unwrap();
    strip_keys(
        &mut report,
        &["wall_seconds", "wall_time_s", "generated_at", "wall_s"],
    );
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
    for label in ["base", "sft", "grpo"] {
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

    // Kill a second run in the middle of its SFT stage, rerun it, and compare the reports.
    let killed = tmp.path().join("killed");
    let killed_recipe = tmp.path().join("killed.toml");
    std::fs::write(&killed_recipe, shrunken_recipe(&killed)).unwrap();
    let mut child = run(&killed_recipe);
    let marker = killed.join("sft").join("metrics.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !marker.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
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
