//! The dataset cards of a filter output directory: `README.md` at the top names the accepted and
//! rejected shards as two splits of the `default` config and `pass_rates.parquet` as the
//! `pass_rates` config, with the recipe (teacher, sampling, filter settings), the acceptance
//! tables by reason and source, and how to load it; `accepted/` and `rejected/` get short cards
//! of their own so each also opens with `load_dataset(DIR)`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use super::config::FilterConfig;
use super::output::{ACCEPTED_DIR, PASS_RATES_FILE, REJECTED_DIR};
use super::report::FilterSummary;
use crate::data::card::{how_to_load, read_license, CardConfig, DatasetCard, SplitFiles};
use crate::data::shards::DATA_DIR;
use crate::data::Result;

/// Who sampled the filtered traces: distinct (teacher, temperature, top_p) of the input rows.
pub type Provenance = BTreeSet<(String, String, String)>;

/// Writes the top card into `config.out` and the split cards into its `accepted/` and
/// `rejected/`; the licence is the input directory's (its card's `license`), when it has one.
pub fn write_cards(
    config: &FilterConfig,
    summary: &FilterSummary,
    provenance: &Provenance,
) -> Result<()> {
    let license = read_license(&config.input);
    let split_glob = |name: &str| format!("{name}/{DATA_DIR}/*.parquet");
    let splits = [
        (ACCEPTED_DIR, summary.accepted),
        (REJECTED_DIR, summary.rejected),
    ];
    let default = CardConfig {
        name: "default".into(),
        // A split without rows has no files, which `load_dataset` refuses: leave it out.
        splits: splits
            .iter()
            .filter(|(_, rows)| *rows > 0)
            .map(|(name, _)| SplitFiles {
                split: name.to_string(),
                path: split_glob(name),
            })
            .collect(),
    };
    let pass_rates = CardConfig {
        name: "pass_rates".into(),
        splits: vec![SplitFiles {
            split: "train".into(),
            path: PASS_RATES_FILE.into(),
        }],
    };
    let dir_name = config
        .out
        .file_name()
        .map_or_else(|| "filtered".into(), |n| n.to_string_lossy().into_owned());
    let mut body = recipe_section(config, provenance);
    let report = summary.to_markdown();
    let report = report.split_once('\n').map_or("", |(_, rest)| rest);
    let _ = writeln!(body, "## Acceptance\n{}", report.replace("\n## ", "\n### "));
    body.push_str(&how_to_load(&dir_name, &default));
    let _ = writeln!(
        body,
        "\nPer-problem pass rates (RL candidates): `load_dataset({dir_name:?}, \"pass_rates\")` or \
         `pd.read_parquet(\"{dir_name}/{PASS_RATES_FILE}\")`."
    );
    let mut configs = Vec::new();
    if !default.splits.is_empty() {
        configs.push(default);
    }
    configs.push(pass_rates);
    DatasetCard {
        pretty_name: format!("distill filtered traces ({dir_name})"),
        license: license.clone(),
        rows: summary.traces,
        tags: tags(),
        configs,
        body,
    }
    .write(&config.out)?;
    for (name, rows) in splits {
        let split = CardConfig::default_train();
        let mut body = format!(
            "# {name} traces of `distill filter`\n\n{rows} rows. The recipe, the acceptance \
             tables and the other split are in the card one folder up (`../README.md`).\n\n"
        );
        body.push_str(&how_to_load(name, &split));
        DatasetCard {
            pretty_name: format!("distill {name} traces ({dir_name})"),
            license: license.clone(),
            rows,
            tags: tags(),
            configs: if rows > 0 { vec![split] } else { Vec::new() },
            body,
        }
        .write(&config.out.join(name))?;
    }
    Ok(())
}

/// Tags of every filter card.
fn tags() -> Vec<String> {
    vec![
        "synthetic".into(),
        "chain-of-thought".into(),
        "rejection-sampling".into(),
    ]
}

/// The recipe: where the traces came from and the filter's settings.
fn recipe_section(config: &FilterConfig, provenance: &Provenance) -> String {
    let mut body = String::from(
        "# Filtered teacher traces\n\nRejection sampling by `distill filter`, as DeepSeek-R1 built \
         its SFT data: a trace is accepted only when its final answer verifies against the gold \
         answer and it is readable. Columns: `FilteredRow` in distill's `datasets/SCHEMA.md` \
         (`messages` is TRL's conversational format; `reject_reasons` says why a row was \
         rejected).\n\n## Recipe\n\n| teacher | temperature | top_p |\n|---|---:|---:|\n",
    );
    for (teacher, temperature, top_p) in provenance {
        let _ = writeln!(body, "| `{teacher}` | {temperature} | {top_p} |");
    }
    let decontaminate: Vec<String> = config
        .decontaminate
        .iter()
        .map(|p| format!("`{}`", display_name(p)))
        .collect();
    let _ = writeln!(
        body,
        "\n| filter setting | value |\n|---|---|\n| input | `{}` |\n| policy | `{}` |\n\
         | decontamination | {} ({}-grams) |\n| RL-candidate pass-rate band | [{}, {}] |\n\
         | readability | `{}` |\n| answer equivalence | percent as fraction: {} |\n",
        display_name(&config.input),
        config.policy,
        if decontaminate.is_empty() {
            "none".into()
        } else {
            decontaminate.join(", ")
        },
        config.ngram,
        config.min_pass_rate,
        config.max_pass_rate,
        serde_json::to_string(&config.readability).unwrap_or_default(),
        config.percent_as_fraction,
    );
    body
}

/// A path as a card shows it: its last two components (no machine-specific prefix).
fn display_name(path: &Path) -> String {
    let parts: Vec<String> = path
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}
