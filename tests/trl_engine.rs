//! The TRL engine: refusals and a missing Python stack fail before any work (always run), and —
//! when `DISTILL_TRL_PYTHON` names an interpreter with torch, transformers, trl, accelerate and
//! datasets — the same tiny student, data and settings trained by distill and by TRL give the
//! same per-step losses, and TRL's model loads and generates in distill.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use distill::train::sft::{run_sft, SftConfig};
use distill::train::trl::python::PYTHON_ENV;
use distill::train::trl::Engine;

fn config(student: &str, data: &Path, out: &Path) -> SftConfig {
    toml::from_str(&format!(
        "student = {student:?}\ndata = {:?}\nout = {:?}\neval_fraction = 0.0\nprecision = \"f32\"\n",
        data.display().to_string(),
        out.display().to_string()
    ))
    .unwrap()
}

#[test]
fn unmappable_settings_are_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config("org/none", &tmp.path().join("d"), &tmp.path().join("o"));
    cfg.engine = Engine::Trl;
    cfg.peak_tflops = Some(50.0);
    let err = run_sft(&cfg, false).unwrap_err();
    assert!(format!("{err:#}").contains("field peak_tflops"), "{err:#}");
    cfg.peak_tflops = None;
    cfg.pack = true;
    let err = run_sft(&cfg, false).unwrap_err();
    assert!(format!("{err:#}").contains("field pack"), "{err:#}");
    cfg.pack = false;
    cfg.engine = Engine::Distill;
    cfg.trl.nproc_per_node = Some(2);
    let err = run_sft(&cfg, false).unwrap_err();
    assert!(format!("{err:#}").contains("engine = \"trl\""), "{err:#}");
    assert!(!tmp.path().join("o").exists(), "nothing was written");
}

#[cfg(unix)]
#[test]
fn a_missing_package_is_reported_with_its_install_command() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("python");
    std::fs::write(
        &fake,
        "#!/bin/sh\nprintf 'torch 2.5.0\\ntransformers 5.0.0\\ntrl -\\naccelerate -\\ndatasets 3.0.0\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = config("org/none", &tmp.path().join("d"), &tmp.path().join("o"));
    cfg.engine = Engine::Trl;
    cfg.trl.python = Some(fake.display().to_string());
    let err = format!("{:#}", run_sft(&cfg, false).unwrap_err());
    assert!(
        err.contains(&format!("{} -m pip install trl accelerate", fake.display())),
        "{err}"
    );
}

/// Per-step losses of a run's `metrics.jsonl`.
fn losses(run: &Path) -> Vec<f64> {
    distill::train::metrics::MetricsLog::read(&run.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .collect()
}

/// Greedy replies of a model to the prompts of the synthetic tasks seeded `seed`.
fn greedy(model_dir: &Path, seed: u64) -> Vec<String> {
    use distill::model::generate::{generate, GenerationConfig, GenerationRequest};
    let loaded =
        distill::model::load(model_dir.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    let requests: Vec<GenerationRequest> = common::synthetic_conversations(6, 2, seed)
        .iter()
        .map(|(problem, _)| GenerationRequest {
            prompt: distill::train::grpo::render_prompt(
                &loaded.tokenizer,
                problem,
                None,
                distill::data::schema::DEFAULT_INSTRUCTION,
            )
            .unwrap(),
            seed: 0,
        })
        .collect();
    let config = GenerationConfig {
        sampler: distill::model::SamplerConfig::greedy(),
        max_new_tokens: 24,
        n: 1,
        eos_token_ids: loaded.eos_token_ids.clone(),
        stop_strings: Vec::new(),
    };
    generate(&loaded.model, &loaded.tokenizer, &requests, &config)
        .unwrap()
        .into_iter()
        .map(|c| c.text)
        .collect()
}

#[test]
fn distill_and_trl_train_the_same_steps() {
    let Some(python) = std::env::var(PYTHON_ENV).ok().filter(|p| !p.is_empty()) else {
        println!("skipped: set {PYTHON_ENV} to a Python with torch, transformers, trl, accelerate, datasets");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 3);
    let data = tmp.path().join("accepted");
    common::write_trace_shards(&data, 16, 5);
    // One micro-batch holds the whole data set, so both trainers see the same rows every step
    // whatever order each draws them in.
    let make = |engine: Engine, out: &str| {
        let mut cfg = config(&student, &data, &tmp.path().join(out));
        cfg.engine = engine;
        cfg.trl.python = (engine == Engine::Trl).then(|| python.clone());
        cfg.learning_rate = 3e-3;
        cfg.warmup_steps = 2;
        cfg.min_lr_ratio = 0.1;
        cfg.batch_size = 16;
        cfg.max_steps = Some(6);
        cfg.optimizer.weight_decay = 0.1;
        cfg
    };
    let ours = run_sft(&make(Engine::Distill, "distill"), false).unwrap();
    let theirs = run_sft(&make(Engine::Trl, "trl"), false).unwrap();
    let (a, b) = (
        losses(&tmp.path().join("distill")),
        losses(&tmp.path().join("trl")),
    );
    assert_eq!(a.len(), 6);
    assert_eq!(b.len(), 6, "TRL logged one loss per step");
    let mean_rel = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / x.abs())
        .sum::<f64>()
        / a.len() as f64;
    println!("distill {a:?}\nTRL     {b:?}\nmean relative difference {mean_rel:.2e}");
    assert!(
        mean_rel < 0.01,
        "per-step losses differ by {mean_rel} on average"
    );
    assert!(a[5] < a[0] - 0.1, "the runs learnt something: {a:?}");
    assert_eq!(
        ours.tokens_seen, theirs.tokens_seen,
        "both count the same tokens"
    );
    assert_eq!(ours.flops, theirs.flops);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("trl/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["engine"], "trl");
    assert!(tmp.path().join("trl/trl/launch.sh").is_file());
    // Resume: without the last checkpoint, a rerun continues from the one before and logs the
    // same losses.
    let mut resumable = make(Engine::Trl, "resumed");
    resumable.save_every = 3;
    run_sft(&resumable, false).unwrap();
    let resumed = tmp.path().join("resumed");
    std::fs::remove_dir_all(resumed.join("checkpoints/checkpoint-6")).unwrap();
    std::fs::remove_dir_all(resumed.join("final")).unwrap();
    let kept = resumed.join("checkpoints/checkpoint-3/model.safetensors");
    let written = std::fs::metadata(&kept).unwrap().modified().unwrap();
    run_sft(&resumable, true).unwrap();
    assert!(resumed.join("final/model.safetensors").is_file());
    assert_eq!(
        std::fs::metadata(&kept).unwrap().modified().unwrap(),
        written,
        "resumed from step 3, not trained again from the start"
    );
    assert_eq!(
        losses(&resumed),
        b,
        "the resumed run logs the uninterrupted losses"
    );
    let (ours, theirs) = (
        greedy(&tmp.path().join("distill/final"), 77),
        greedy(&tmp.path().join("trl/final"), 77),
    );
    let same = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
    println!(
        "greedy replies identical on {same} of {} held-out prompts",
        ours.len()
    );
    for (a, b) in ours.iter().zip(&theirs).filter(|(a, b)| a != b) {
        println!("  distill: {a:?}\n  TRL:     {b:?}");
    }
}

/// The built-in recipe as a TOML table, with its output under `out`.
fn tiny_recipe(out: &Path) -> toml::Table {
    let mut recipe: toml::Table =
        toml::from_str(&std::fs::read_to_string("recipes/tiny-r1.toml").unwrap()).unwrap();
    recipe.insert("out".into(), out.display().to_string().into());
    recipe
}

/// `distill run RECIPE --check` on `recipe`: whether it passed, and its stderr.
fn check(dir: &Path, recipe: &toml::Table) -> (bool, String) {
    let path = dir.join("recipe.toml");
    std::fs::write(&path, toml::to_string(recipe).unwrap()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(["run", path.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_recipe_chooses_the_engine_per_stage_and_is_checked_before_running() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut recipe = tiny_recipe(&out);
    for stage in ["sft", "grpo"] {
        let section = recipe[stage].as_table_mut().unwrap();
        section.insert("engine".into(), "trl".into());
        section.insert(
            "trl".into(),
            toml::Value::Table(toml::from_str("nproc_per_node = 2").unwrap()),
        );
    }
    let (ok, stderr) = check(tmp.path(), &recipe);
    assert!(ok, "{stderr}");
    assert!(!out.exists(), "--check runs nothing");

    let mut odd = recipe.clone();
    odd["grpo"]["trl"]
        .as_table_mut()
        .unwrap()
        .insert("nproc_per_node".into(), 3.into());
    let (ok, stderr) = check(tmp.path(), &odd);
    assert!(
        !ok && stderr.contains("[grpo]") && stderr.contains("prompts_per_step × group_size"),
        "{stderr}"
    );

    let mut packed = recipe.clone();
    packed["sft"]
        .as_table_mut()
        .unwrap()
        .insert("pack".into(), true.into());
    let (ok, stderr) = check(tmp.path(), &packed);
    assert!(
        !ok && stderr.contains("[sft]") && stderr.contains("field pack"),
        "{stderr}"
    );

    let mut unknown = recipe;
    unknown["sft"]["trl"]
        .as_table_mut()
        .unwrap()
        .insert("nprocs".into(), 2.into());
    let (ok, stderr) = check(tmp.path(), &unknown);
    assert!(!ok && stderr.contains("nprocs"), "{stderr}");
}

#[test]
fn grpo_through_trl_is_scored_by_distill_and_lands_in_distills_layout() {
    let Some(python) = std::env::var(PYTHON_ENV).ok().filter(|p| !p.is_empty()) else {
        println!("skipped: set {PYTHON_ENV} to a Python with torch, transformers, trl, accelerate, datasets");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let student = common::early_stopping_student(tmp.path(), 4);
    let out = tmp.path().join("grpo");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_distill"))
        .args([
            "grpo",
            "--policy",
            &student,
            "--prompts",
            "synth:arith:difficulty=1:count=16:seed=3",
            "--out",
            out.to_str().unwrap(),
            "--engine",
            "trl",
            "--python",
            &python,
            "--steps",
            "2",
            "--group-size",
            "4",
            "--prompts-per-step",
            "2",
            "--max-new-tokens",
            "16",
            "--beta",
            "0.04",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["engine"], "trl");
    assert_eq!(summary["steps"], 2);
    let rollout = summary["rollout_tokens"].as_u64().unwrap();
    assert!(
        rollout > 2 * 8 * 10,
        "8 completions a step, each prompt and completion counted: {rollout}"
    );
    assert_eq!(
        summary["reference_tokens"].as_u64().unwrap(),
        rollout,
        "beta > 0 scores them again"
    );
    let metrics = distill::train::metrics::MetricsLog::read(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 2);
    for record in &metrics {
        let accuracy = record["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy), "{record}");
        assert!(record["reward"].is_number(), "{record}");
    }
    distill::model::load(
        out.join("final").to_str().unwrap(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let run = distill::compare::runs::load_train(&out).unwrap();
    assert_eq!(run.kind, distill::compare::runs::TrainKind::Grpo);
}
