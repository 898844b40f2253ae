//! The dataset card (`README.md`) of a generate output directory: front matter naming `data/`
//! as the `train` split, and a body with the recipe (prompts, teacher, sampling), the row counts
//! and how to load the directory.

use std::fmt::Write as _;

use super::config::{GenerateConfig, TeacherConfig};
use super::summary::GenerateSummary;
use crate::data::card::{how_to_load, CardConfig, DatasetCard};

/// The card of a finished run: `config` made the rows, `summary` describes the directory now,
/// `license` is the prompt source's licence when it has one.
pub fn generate_card(
    config: &GenerateConfig,
    summary: &GenerateSummary,
    license: Option<String>,
) -> DatasetCard {
    let config_entry = CardConfig::default_train();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "# Teacher traces of {}\n\n\
         Long chain-of-thought samples written by `distill generate`: every sample of the teacher, \
         with its provenance. Filter them with `distill filter` before training on them. Columns: \
         `TraceRow` in distill's `datasets/SCHEMA.md` (`messages` is TRL's conversational format).\n",
        summary.teacher
    );
    body.push_str("## Recipe\n\n| setting | value |\n|---|---|\n");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(body, "| {name} | {} |", value.replace('|', "\\|"));
    };
    row("prompts", format!("`{}`", config.prompts));
    if !config.exclude.is_empty() {
        row("excluded (decontamination)", config.exclude.join(", "));
    }
    row("teacher", teacher_description(&config.teacher));
    row("samples per problem (n)", config.n.to_string());
    row("temperature", config.temperature.to_string());
    row("top_p", config.top_p.to_string());
    if config.top_k > 0 {
        row("top_k", config.top_k.to_string());
    }
    row("max_new_tokens", config.max_new_tokens.to_string());
    row("seed", config.seed.to_string());
    row(
        "system prompt",
        config
            .system_prompt
            .clone()
            .unwrap_or_else(|| "none".into()),
    );
    row("instruction", format!("`{}`", config.instruction));
    row("recipe hash", format!("`{}`", summary.recipe_hash));
    let reasons: Vec<String> = summary
        .finish_reasons
        .iter()
        .map(|(reason, count)| format!("{count} `{reason}`"))
        .collect();
    let _ = writeln!(
        body,
        "\n## Rows\n\n{} rows in {} Parquet shard(s). The latest run covered {} problems ({} already done), \
         generated {} samples ({} completion tokens{}) and skipped {} rows already present.\n",
        summary.total_rows,
        summary.shards,
        summary.problems,
        summary.problems_already_done,
        summary.samples_generated,
        summary.completion_tokens,
        if reasons.is_empty() {
            String::new()
        } else {
            format!("; finish reasons {}", reasons.join(", "))
        },
        summary.rows_skipped,
    );
    let dir_name = summary
        .out_dir
        .file_name()
        .map_or_else(|| "traces".into(), |n| n.to_string_lossy().into_owned());
    body.push_str(&how_to_load(&dir_name, &config_entry));
    DatasetCard {
        pretty_name: format!("distill traces: {}", summary.teacher),
        license,
        rows: summary.total_rows,
        tags: vec!["synthetic".into(), "chain-of-thought".into()],
        configs: vec![config_entry],
        body,
    }
}

/// The teacher as a card shows it: never an API key (only its variable's name is in the config)
/// nor credentials in the endpoint URL.
fn teacher_description(teacher: &TeacherConfig) -> String {
    match teacher {
        TeacherConfig::Local { model, dtype, .. } => format!("`{model}` (local, {dtype})"),
        TeacherConfig::Openai(teacher) => {
            // Credentials in the URL (`user:password@`) never reach the card.
            let shown: Vec<String> = teacher
                .endpoint
                .iter()
                .chain(teacher.endpoints.iter().map(|e| &e.url))
                .map(|url| crate::teacher::redact::Redactor::new(url, None).scrub(url))
                .collect();
            format!(
                "`{}` at {} ({:?} API)",
                teacher.model,
                shown.join(", "),
                teacher.api
            )
        }
    }
}
