//! `distill run --check`: everything about a recipe that can be known before a stage runs —
//! every section parses into its stage's configuration with values in range, both prompt sources
//! load, every model the recipe names resolves with its `config.json` and tokenizer (weights are
//! not read), and the student can be trained on the teacher's traces. `distill run` does this
//! first, so a typo in `[sft]` fails in seconds instead of after hours of generation.

use anyhow::{bail, Context};

use super::recipe::{ModelSpec, Recipe};
use super::{bootstrap_train_config, compare_config, model_path, Layout, StageConfigs};
use crate::data::prompt_source::load_prompts;
use crate::model::load::{self, ModelSource};
use crate::model::{ModelConfig, Tokenizer};

/// Checks `recipe` as described in the module docs; returns the stage configurations and one line
/// per check made.
pub(crate) fn check_recipe(recipe: &Recipe) -> anyhow::Result<(StageConfigs, Vec<String>)> {
    let layout = Layout {
        root: recipe.out.clone(),
    };
    let mut report = Vec::new();
    for (role, source) in [
        ("train", &recipe.prompts.train),
        ("eval", &recipe.prompts.eval),
    ] {
        let problems = load_prompts(source).with_context(|| format!("[prompts] {role}"))?;
        if problems.is_empty() {
            bail!("[prompts] {role}: {source} holds no problems");
        }
        report.push(format!(
            "prompts.{role}: {} problems from {source}",
            problems.len()
        ));
    }
    for (role, spec) in [("teacher", &recipe.teacher), ("student", &recipe.student)] {
        report.push(check_model(recipe, &layout, role, spec)?);
    }
    let configs = StageConfigs::build(recipe, &layout)?;
    crate::generate::validate(&configs.generate).context("recipe section [generate]")?;
    configs
        .filter
        .validate()
        .context("recipe section [filter]")?;
    configs.sft.validate().context("recipe section [sft]")?;
    configs.grpo.validate().context("recipe section [grpo]")?;
    if let Some((_, dpo)) = &configs.dpo {
        dpo.validate().context("recipe section [dpo]")?;
    }
    compare_config(recipe, &layout, None)?;
    report.push(format!(
        "stages: generate ({} samples per problem, {} new tokens), filter, sft ({} epochs, lr {}), \
         grpo ({} steps, group {}), eval ({} models), compare: configurations valid",
        configs.generate.n,
        configs.generate.max_new_tokens,
        configs.sft.epochs,
        configs.sft.learning_rate,
        configs.grpo.steps,
        configs.grpo.group_size,
        configs.eval.len()
    ));
    Ok((configs, report))
}

/// A role's model: a bootstrap's training configuration, or a model that resolves with a readable
/// config.json and tokenizer.
fn check_model(
    recipe: &Recipe,
    layout: &Layout,
    role: &str,
    spec: &ModelSpec,
) -> anyhow::Result<String> {
    if let Some(bootstrap) = &spec.bootstrap {
        let train = bootstrap_train_config(recipe, layout, role, bootstrap)?;
        train
            .validate()
            .with_context(|| format!("recipe section [{role}.bootstrap.train]"))?;
        return Ok(format!(
            "{role}: bootstrapped ({} layers, width {}) at {}",
            bootstrap.layers,
            bootstrap.hidden_size,
            model_path(layout, role, spec)
        ));
    }
    let name = model_path(layout, role, spec);
    let context = || format!("[{role}] model {name}");
    if load::is_uncached_hub_id(&name) {
        if load::hub_offline() {
            bail!("[{role}] model {name}: not in the Hugging Face cache and HF_HUB_OFFLINE is set");
        }
        return Ok(format!(
            "{role}: {name} (hub id, downloaded when its stage runs)"
        ));
    }
    match load::resolve(&name).with_context(context)? {
        ModelSource::HfDir(dir) => {
            let config = ModelConfig::from_file(&dir.join("config.json")).with_context(context)?;
            let tokenizer = Tokenizer::from_dir(&dir).with_context(context)?;
            if tokenizer.vocab_size() > config.vocab_size {
                bail!(
                    "[{role}] model {name}: the tokenizer has {} tokens but config.json's vocab_size is {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                );
            }
            Ok(format!(
                "{role}: {name} ({}, {} parameters, context {})",
                config.architecture.hf_class(),
                config.parameter_count(),
                config.max_position_embeddings
            ))
        }
        ModelSource::Llama2c { checkpoint, .. } => Ok(format!(
            "{role}: {} (llama2.c checkpoint)",
            checkpoint.display()
        )),
    }
}
