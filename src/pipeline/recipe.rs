//! Recipes: one TOML file describes a whole run — prompts, teacher, student, and a section per stage
//! whose fields are the stage's own configuration (see each stage's config struct); the pipeline fills
//! in the paths that connect the stages.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The built-in tiny end-to-end recipe (`distill run` with no argument).
pub const TINY_R1: &str = include_str!("../../recipes/tiny-r1.toml");

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Name shown in the report.
    pub name: String,
    /// Root of every stage's output directory.
    pub out: PathBuf,
    /// Seed shared by every stage that draws random numbers.
    #[serde(default)]
    pub seed: u64,
    /// `cpu` or `cuda:N`, for every local model.
    #[serde(default = "default_device")]
    pub device: String,
    /// Training and evaluation prompts. Every training input (bootstrap corpora, the tokenizer's
    /// text, teacher prompts, GRPO prompts) leaves out the problems of the eval set.
    pub prompts: Prompts,
    /// The tokenizer trained for bootstrapped models.
    #[serde(default)]
    pub tokenizer: Option<TokenizerSpec>,
    /// The teacher: an existing model or endpoint, or one bootstrapped from programmatic traces.
    pub teacher: ModelSpec,
    /// The student base.
    pub student: ModelSpec,
    /// `distill generate` settings (a GenerateConfig without prompts/out; `teacher` defaults to the
    /// local teacher model).
    #[serde(default)]
    pub generate: toml::Table,
    /// `distill filter` settings (a FilterConfig without input/out).
    #[serde(default)]
    pub filter: toml::Table,
    /// SFT of the student on accepted traces (an SftConfig without student/data/out).
    #[serde(default)]
    pub sft: toml::Table,
    /// GRPO of the student base (a GrpoConfig without policy/out).
    #[serde(default)]
    pub grpo: GrpoStage,
    /// Optional third arm: preference pairs from the filter's output, then DPO of the SFT student
    /// on them (a DpoConfig without policy/reference/data/out, plus a `[dpo.pairs]` table).
    #[serde(default)]
    pub dpo: Option<DpoStage>,
    /// Evaluation of base, SFT, GRPO (and DPO) students (an EvalConfig without model/out).
    #[serde(default)]
    pub eval: toml::Table,
    /// The distillation-vs-RL report (a CompareConfig without runs/out).
    #[serde(default)]
    pub compare: toml::Table,
}

fn default_device() -> String {
    "cpu".into()
}

/// Where prompts come from: a JSONL/Parquet file (real sets accepted as they are) or `synth:` spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompts {
    /// Prompts the teacher answers and GRPO trains on.
    pub train: String,
    /// Held-out prompts every student is evaluated on.
    pub eval: String,
}

/// A byte-level BPE tokenizer trained on the bootstrap corpora.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSpec {
    /// Target vocabulary size.
    pub vocab_size: usize,
    /// One token per digit (as in Qwen; the default); `false` keeps runs of digits together so
    /// the corpus's numbers become single tokens.
    #[serde(default = "default_split_digits")]
    pub split_digits: bool,
}

fn default_split_digits() -> bool {
    true
}

/// An existing model, or one the recipe bootstraps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// An existing model (directory, hub id or llama2.c file); exclusive with `bootstrap`.
    #[serde(default)]
    pub model: Option<String>,
    /// A model to create and train on programmatic traces of a synthetic task.
    #[serde(default)]
    pub bootstrap: Option<Bootstrap>,
}

/// How a stand-in model is made: random init of a shape, then SFT on a programmatic corpus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// The corpus: a `synth:` spec; the teacher gets long chains of thought, the student short answers.
    pub corpus: String,
    /// SFT settings (an SftConfig without student/data/out).
    #[serde(default)]
    pub train: toml::Table,
}

/// GRPO settings plus how its compute budget is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GrpoStage {
    /// Stop GRPO once its estimated FLOPs reach those of the SFT stage (matched compute).
    #[serde(default)]
    pub match_sft_compute: bool,
    /// The GrpoConfig fields.
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// The DPO arm: how pairs are made, plus the DpoConfig fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DpoStage {
    /// How the filter's output becomes preference pairs.
    #[serde(default)]
    pub pairs: PairOptions,
    /// The DpoConfig fields.
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// `distill pairs` settings in a recipe (see [`crate::filter::pairs::PairConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairOptions {
    /// Most pairs per problem.
    #[serde(default = "default_pairs_per_problem")]
    pub max_pairs_per_problem: usize,
    /// Rejection reasons that make a trace a rejected side, most preferred first (default: wrong
    /// and missing answers, then the rest).
    #[serde(default)]
    pub rejected_reasons: Option<Vec<String>>,
    /// Pair each chosen trace with the rejected trace closest to it in length.
    #[serde(default)]
    pub length_matched: bool,
}

impl Default for PairOptions {
    fn default() -> Self {
        PairOptions {
            max_pairs_per_problem: default_pairs_per_problem(),
            rejected_reasons: None,
            length_matched: false,
        }
    }
}

fn default_pairs_per_problem() -> usize {
    4
}

impl Recipe {
    /// Reads a recipe file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the recipe", path.display()))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses recipe text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> anyhow::Result<Self> {
        let recipe: Recipe =
            toml::from_str(text).with_context(|| format!("{origin}: invalid recipe"))?;
        for (role, spec) in [("teacher", &recipe.teacher), ("student", &recipe.student)] {
            match (&spec.model, &spec.bootstrap) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    anyhow::bail!("{origin}: [{role}] needs exactly one of `model` or `bootstrap`")
                }
            }
            if spec.bootstrap.is_some() && recipe.tokenizer.is_none() {
                anyhow::bail!(
                    "{origin}: [{role}] is bootstrapped, so the recipe needs a [tokenizer] section"
                );
            }
        }
        Ok(recipe)
    }
}

/// Builds a stage config from its recipe section plus the fields the pipeline fixes (paths, models);
/// errors name the section and the field serde rejected.
pub fn stage_config<T: DeserializeOwned>(
    section: &str,
    settings: &toml::Table,
    fixed: &[(&str, toml::Value)],
) -> anyhow::Result<T> {
    let mut table = settings.clone();
    for (key, value) in fixed {
        table.insert((*key).to_string(), value.clone());
    }
    toml::Value::Table(table)
        .try_into()
        .with_context(|| format!("recipe section [{section}]"))
}

/// A path as a TOML string value.
pub fn path_value(path: &Path) -> toml::Value {
    toml::Value::String(path.display().to_string())
}
