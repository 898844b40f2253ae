//! `distill run RECIPE`: the whole pipeline, stage by stage — bootstrap a tokenizer, teacher and
//! student base when the recipe asks for stand-ins, generate teacher traces, filter them, SFT the
//! student, (when the recipe has a `[dpo]` section) make preference pairs and DPO the SFT student
//! on them, GRPO the same base at matched compute, evaluate them all and write the report.
//! A finished stage leaves a marker with the hash of its configuration and is skipped on rerun;
//! an interrupted stage resumes from what it already wrote.

pub mod check;
pub mod recipe;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use serde::Serialize;
use serde_json::json;

use crate::data::corpus::{programmatic_row, write_corpus, ReplyStyle};
use crate::data::hashing::sha256_hex;
use crate::data::prompt_source::{load_prompts, problem_texts, synth_tasks};
use crate::data::synth::SynthTask;
use crate::model::init::{random_weights, tiny_config};
use crate::model::save::{save_hf_dir, write_atomic};
use crate::model::{Architecture, Decoder, Tokenizer};
use recipe::{path_value, stage_config, Bootstrap, Recipe};

const MARKER: &str = ".stage-done.json";

/// Paths of one run's stages.
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    fn stage(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// Runs `body` unless `dir` holds a marker for the same configuration hash; writes the marker after.
fn stage<T: Serialize>(
    index: usize,
    total: usize,
    name: &str,
    dir: &Path,
    config: &T,
    body: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let hash = sha256_hex(serde_json::to_string(config)?.as_bytes())[..16].to_string();
    let marker = dir.join(MARKER);
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let done: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if done["hash"] == json!(hash) {
            eprintln!("[{index}/{total}] {name}: done (skipped)");
            return Ok(());
        }
        bail!(
            "{}: stage {name} was finished with a different configuration; remove that directory or change `out`",
            dir.display()
        );
    }
    eprintln!("[{index}/{total}] {name} → {}", dir.display());
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    body().with_context(|| format!("stage {name}"))?;
    write_atomic(
        &marker,
        json!({"stage": name, "hash": hash}).to_string().as_bytes(),
    )?;
    Ok(())
}

/// Runs every stage of `recipe`; returns the path of the report.
pub fn run_recipe(recipe: &Recipe) -> anyhow::Result<PathBuf> {
    let layout = Layout {
        root: recipe.out.clone(),
    };
    // Every section, model and data path is checked before the first stage spends compute.
    let (configs, _) = check::check_recipe(recipe)?;
    let _claim =
        crate::output_dir::OutputDir::claim(&layout.root, crate::output_dir::OutputKind::Recipe)?;
    let bootstraps = usize::from(recipe.teacher.bootstrap.is_some())
        + usize::from(recipe.student.bootstrap.is_some());
    let total =
        6 + bootstraps + usize::from(bootstraps > 0) + 2 * usize::from(recipe.dpo.is_some());
    let mut index = 0;
    let mut next = || {
        index += 1;
        index
    };

    // Evaluation is on unseen problems: every training input leaves out the eval set's problems
    // (small synthetic tasks repeat problem texts across seeds).
    let held_out = problem_texts(std::slice::from_ref(&recipe.prompts.eval))?;
    let tokenizer_dir = layout.stage("tokenizer");
    if let Some(spec) = &recipe.tokenizer {
        let corpora: Vec<&str> = [&recipe.teacher, &recipe.student]
            .iter()
            .filter_map(|m| m.bootstrap.as_ref().map(|b| b.corpus.as_str()))
            .collect();
        stage(
            next(),
            total,
            "tokenizer",
            &tokenizer_dir,
            &(spec, &corpora, &recipe.prompts.eval),
            || {
                let mut texts = Vec::new();
                for corpus in &corpora {
                    for task in decontaminated_tasks(corpus, &held_out)?.0 {
                        for style in [ReplyStyle::LongCot, ReplyStyle::ShortAnswer] {
                            let row = programmatic_row(&task, style);
                            texts.extend(row.messages.into_iter().map(|m| m.content));
                        }
                    }
                }
                crate::model::bpe::train_bpe(
                    &texts,
                    spec.vocab_size,
                    spec.split_digits,
                    &tokenizer_dir,
                )?;
                Ok(())
            },
        )?;
    }

    bootstrap_model(
        recipe,
        &layout,
        ("teacher", &recipe.teacher, ReplyStyle::LongCot),
        &held_out,
        &mut next,
        total,
    )?;
    bootstrap_model(
        recipe,
        &layout,
        ("student", &recipe.student, ReplyStyle::ShortAnswer),
        &held_out,
        &mut next,
        total,
    )?;

    let StageConfigs {
        generate,
        filter,
        sft,
        mut grpo,
        dpo,
        eval: eval_configs,
    } = configs;
    let traces = layout.stage("traces");
    stage(next(), total, "generate", &traces, &generate, || {
        let summary = crate::generate::run_generate(&generate)?;
        eprintln!("{}", summary.human());
        Ok(())
    })?;

    let filtered = layout.stage("filtered");
    stage(next(), total, "filter", &filtered, &filter, || {
        crate::filter::run_filter(&filter)?;
        Ok(())
    })?;

    let sft_dir = layout.stage("sft");
    stage(next(), total, "sft", &sft_dir, &sft, || {
        crate::train::sft::run_sft(&sft, true)?;
        Ok(())
    })?;

    if let Some((pairs, dpo)) = &dpo {
        stage(next(), total, "pairs", &pairs.out, pairs, || {
            let summary = crate::filter::pairs::run_pairs(pairs)?;
            eprintln!(
                "  {} pairs from {} of {} problems",
                summary.pairs, summary.problems_with_pairs, summary.problems
            );
            Ok(())
        })?;
        stage(next(), total, "dpo", &dpo.out, dpo, || {
            crate::train::dpo::run_dpo(dpo, true)?;
            Ok(())
        })?;
    }

    let grpo_dir = layout.stage("grpo");
    if recipe.grpo.match_sft_compute {
        let summary = read_json(&sft_dir.join("summary.json"))?;
        let flops = summary["flops"]
            .as_f64()
            .context("sft/summary.json has no `flops`")?;
        grpo.max_flops = Some(flops);
    }
    stage(next(), total, "grpo", &grpo_dir, &grpo, || {
        let mut problems = load_prompts(&recipe.prompts.train)?;
        problems.retain(|p| !held_out.contains(&p.problem));
        crate::train::grpo::run_grpo(&grpo, &problems, true)?;
        Ok(())
    })?;

    let eval_root = layout.stage("eval");
    stage(next(), total, "eval", &eval_root, &eval_configs, || {
        let problems = load_prompts(&recipe.prompts.eval)?;
        for config in &eval_configs {
            let summary = crate::eval::run_eval(config, &problems)?;
            eprintln!(
                "  {}: pass@1 {:.3}, cons@{} {:.3} over {} problems",
                config.out.display(),
                summary.pass_at_1,
                summary.k,
                summary.cons_at_k,
                summary.problems
            );
        }
        Ok(())
    })?;

    let report_dir = layout.stage("report");
    // Teacher data-generation compute is known when the teacher was a local model.
    let generation_summary = traces.join("summary.json");
    let teacher_compute = read_json(&generation_summary)?["teacher_parameters"]
        .is_u64()
        .then_some(generation_summary);
    let compare = compare_config(recipe, &layout, teacher_compute)?;
    stage(next(), total, "compare", &report_dir, &compare, || {
        crate::compare::run_compare(&compare)?;
        Ok(())
    })?;
    Ok(report_dir.join("report.md"))
}

/// Every stage's configuration, built from the recipe before any stage runs (GRPO's compute
/// budget, when matched to SFT's, is filled in once SFT has run).
pub(crate) struct StageConfigs {
    pub(crate) generate: crate::generate::GenerateConfig,
    pub(crate) filter: crate::filter::FilterConfig,
    pub(crate) sft: crate::train::sft::SftConfig,
    pub(crate) grpo: crate::train::grpo::GrpoConfig,
    /// The DPO arm's pairs and training, when the recipe has one.
    pub(crate) dpo: Option<(
        crate::filter::pairs::PairConfig,
        crate::train::dpo::DpoConfig,
    )>,
    pub(crate) eval: Vec<crate::eval::EvalConfig>,
}

impl StageConfigs {
    /// The configurations of `recipe`'s stages, with the paths that connect them.
    pub(crate) fn build(recipe: &Recipe, layout: &Layout) -> anyhow::Result<Self> {
        let teacher = model_path(layout, "teacher", &recipe.teacher);
        let student = model_path(layout, "student", &recipe.student);
        let traces = layout.stage("traces");
        let mut generate_settings = recipe.generate.clone();
        if !generate_settings.contains_key("teacher") {
            let mut teacher_table = toml::Table::new();
            teacher_table.insert("kind".into(), "local".into());
            teacher_table.insert("model".into(), teacher.into());
            teacher_table.insert("device".into(), recipe.device.clone().into());
            generate_settings.insert("teacher".into(), toml::Value::Table(teacher_table));
        }
        let mut exclude = match generate_settings.get("exclude") {
            Some(toml::Value::Array(sources)) => sources.clone(),
            _ => Vec::new(),
        };
        exclude.push(recipe.prompts.eval.clone().into());
        let seed = || toml::Value::from(recipe.seed as i64);
        let device = || toml::Value::from(recipe.device.clone());
        let generate = stage_config(
            "generate",
            &generate_settings,
            &[
                ("prompts", recipe.prompts.train.clone().into()),
                ("exclude", toml::Value::Array(exclude)),
                ("out", path_value(&traces)),
                ("seed", seed()),
            ],
        )?;
        let filtered = layout.stage("filtered");
        let filter = stage_config(
            "filter",
            &recipe.filter,
            &[
                ("input", path_value(&traces)),
                ("out", path_value(&filtered)),
            ],
        )?;
        let sft_dir = layout.stage("sft");
        let sft = stage_config(
            "sft",
            &recipe.sft,
            &[
                ("student", student.clone().into()),
                ("data", path_value(&filtered.join("accepted"))),
                ("out", path_value(&sft_dir)),
                ("seed", seed()),
                ("device", device()),
            ],
        )?;
        let grpo_dir = layout.stage("grpo");
        let grpo = stage_config(
            "grpo",
            &recipe.grpo.settings,
            &[
                ("policy", student.clone().into()),
                ("out", path_value(&grpo_dir)),
                ("seed", seed()),
                ("device", device()),
            ],
        )?;
        let dpo = match &recipe.dpo {
            Some(stage) => Some(dpo_configs(recipe, layout, stage)?),
            None => None,
        };
        let eval_root = layout.stage("eval");
        let mut candidates = vec![
            ("base", student),
            ("sft", sft_dir.join("final").display().to_string()),
            ("grpo", grpo_dir.join("final").display().to_string()),
        ];
        if let Some((_, dpo)) = &dpo {
            candidates.push(("dpo", dpo.out.join("final").display().to_string()));
        }
        let eval = candidates
            .iter()
            .map(|(label, model)| {
                stage_config(
                    "eval",
                    &recipe.eval,
                    &[
                        ("model", model.clone().into()),
                        ("out", path_value(&eval_root.join(label))),
                        ("seed", seed()),
                        ("device", device()),
                    ],
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(StageConfigs {
            generate,
            filter,
            sft,
            grpo,
            dpo,
            eval,
        })
    }
}

/// The DPO arm's configurations: pairs from the filter's output, and DPO of the SFT student on
/// them with the SFT student as the reference.
fn dpo_configs(
    recipe: &Recipe,
    layout: &Layout,
    stage: &recipe::DpoStage,
) -> anyhow::Result<(
    crate::filter::pairs::PairConfig,
    crate::train::dpo::DpoConfig,
)> {
    let pairs_dir = layout.stage("pairs");
    let mut pairs =
        crate::filter::pairs::PairConfig::new(layout.stage("filtered"), pairs_dir.clone());
    pairs.max_pairs_per_problem = stage.pairs.max_pairs_per_problem;
    pairs.length_matched = stage.pairs.length_matched;
    if let Some(reasons) = &stage.pairs.rejected_reasons {
        pairs.rejected_reasons = reasons.clone();
    }
    let dpo = stage_config(
        "dpo",
        &stage.settings,
        &[
            ("policy", path_value(&layout.stage("sft").join("final"))),
            ("data", path_value(&pairs_dir)),
            ("out", path_value(&layout.stage("dpo"))),
            ("seed", (recipe.seed as i64).into()),
            ("device", recipe.device.clone().into()),
        ],
    )?;
    Ok((pairs, dpo))
}

/// The report's configuration: base, SFT, GRPO (and SFT → DPO) evaluations, with the teacher's
/// generation compute charged to SFT (and to SFT → DPO) when `teacher_compute` (the generate
/// summary) is known.
pub(crate) fn compare_config(
    recipe: &Recipe,
    layout: &Layout,
    teacher_compute: Option<PathBuf>,
) -> anyhow::Result<crate::compare::CompareConfig> {
    let eval_root = layout.stage("eval");
    let mut specs = vec![
        run_spec("base", &eval_root.join("base"), &[], None),
        run_spec(
            "sft",
            &eval_root.join("sft"),
            &[layout.stage("sft")],
            teacher_compute.clone(),
        ),
        run_spec(
            "grpo",
            &eval_root.join("grpo"),
            &[layout.stage("grpo")],
            None,
        ),
    ];
    if recipe.dpo.is_some() {
        specs.push(run_spec(
            "sft→dpo",
            &eval_root.join("dpo"),
            &[layout.stage("sft"), layout.stage("dpo")],
            teacher_compute,
        ));
    }
    let runs = toml::Value::try_from(specs)?;
    stage_config(
        "compare",
        &recipe.compare,
        &[
            ("runs", runs),
            ("out", path_value(&layout.stage("report"))),
            ("seed", (recipe.seed as i64).into()),
        ],
    )
}

fn run_spec(
    label: &str,
    eval: &Path,
    train: &[PathBuf],
    data_generation: Option<PathBuf>,
) -> crate::compare::RunSpec {
    crate::compare::RunSpec {
        label: label.to_string(),
        eval: vec![eval.to_path_buf()],
        train: train.to_vec(),
        data_generation,
    }
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| path.display().to_string())
}

/// The tasks of the `synth:` spec `corpus` whose problem text is not in `held_out`, and how many
/// were left out.
fn decontaminated_tasks(
    corpus: &str,
    held_out: &HashSet<String>,
) -> anyhow::Result<(Vec<SynthTask>, usize)> {
    let mut tasks = synth_tasks(corpus)?;
    let before = tasks.len();
    tasks.retain(|task| !held_out.contains(&task.problem));
    let left_out = before - tasks.len();
    Ok((tasks, left_out))
}

/// Where a role's model is: as the recipe names it, or the bootstrap stage's trained model.
pub(crate) fn model_path(layout: &Layout, role: &str, spec: &recipe::ModelSpec) -> String {
    match &spec.model {
        Some(model) => model.clone(),
        None => layout
            .stage(role)
            .join("train")
            .join("final")
            .display()
            .to_string(),
    }
}

/// The SFT configuration that trains a bootstrapped `role` on its programmatic corpus.
pub(crate) fn bootstrap_train_config(
    recipe: &Recipe,
    layout: &Layout,
    role: &str,
    bootstrap: &Bootstrap,
) -> anyhow::Result<crate::train::sft::SftConfig> {
    let dir = layout.stage(role);
    stage_config(
        &format!("{role}.bootstrap.train"),
        &bootstrap.train,
        &[
            ("student", path_value(&dir.join("init"))),
            ("data", path_value(&dir.join("corpus"))),
            ("out", path_value(&dir.join("train"))),
            ("seed", (recipe.seed as i64).into()),
            ("device", recipe.device.clone().into()),
        ],
    )
}

/// Bootstraps a role's model (a stage of its own) when the recipe asks for one: trained under
/// `layout` on its corpus without the `held_out` problems, its replies written in `style`.
fn bootstrap_model(
    recipe: &Recipe,
    layout: &Layout,
    (role, spec, style): (&str, &recipe::ModelSpec, ReplyStyle),
    held_out: &HashSet<String>,
    next: &mut impl FnMut() -> usize,
    total: usize,
) -> anyhow::Result<()> {
    let Some(bootstrap) = &spec.bootstrap else {
        return Ok(());
    };
    let dir = layout.stage(role);
    let train = bootstrap_train_config(recipe, layout, role, bootstrap)?;
    let tokenizer_dir = layout.stage("tokenizer");
    let hashed = (bootstrap, &train, &recipe.prompts.eval);
    stage(next(), total, role, &dir, &hashed, || {
        let (tasks, left_out) = decontaminated_tasks(&bootstrap.corpus, held_out)?;
        eprintln!(
            "  {role} corpus: {} problems ({left_out} left out: they are eval problems)",
            tasks.len()
        );
        write_corpus(
            &dir.join("corpus"),
            &tasks,
            style,
            &sha256_hex(bootstrap.corpus.as_bytes()),
        )?;
        init_model(bootstrap, &tokenizer_dir, &dir.join("init"), recipe.seed)?;
        crate::train::sft::run_sft(&train, true)?;
        Ok(())
    })
}

/// A random-initialised Qwen2-shaped model of the bootstrap's shape with the trained tokenizer.
fn init_model(
    shape: &Bootstrap,
    tokenizer_dir: &Path,
    out: &Path,
    seed: u64,
) -> anyhow::Result<()> {
    if out.join("config.json").is_file() {
        return Ok(());
    }
    let tokenizer = Tokenizer::from_dir(tokenizer_dir)?;
    let mut config = tiny_config(Architecture::Qwen2, tokenizer.vocab_size());
    config.hidden_size = shape.hidden_size;
    config.intermediate_size = shape.intermediate_size;
    config.num_hidden_layers = shape.layers;
    config.num_attention_heads = shape.heads;
    config.num_key_value_heads = shape.kv_heads;
    config.head_dim = shape.hidden_size / shape.heads;
    config.eos_token_ids = tokenizer.eos_token_id().into_iter().collect();
    let weights = random_weights(&config, seed, &Device::Cpu)?;
    let model = Decoder::from_weights(&config, &weights, DType::F32, &Device::Cpu)?;
    save_hf_dir(&model, &tokenizer, &config.eos_token_ids, out)?;
    Ok(())
}
