//! Dataset cards: the `README.md` a stage writes beside its `data/` folder, so that
//! `load_dataset(DIR)` (whose YAML `configs` name the data files) and a Hub upload of the directory
//! both work. [`DatasetCard`] renders the Hugging Face dataset-card front matter — `pretty_name`,
//! `license` when the source has one, `language`, `task_categories`, `tags`, `size_categories` and
//! `configs` with `data_files` per split — followed by a Markdown body that the stage composes.

use std::fmt::Write as _;
use std::path::Path;

use super::errors::Result;
use super::shards::{write_atomically, DATA_DIR};

/// File name of a dataset card.
pub const CARD_FILE: &str = "README.md";

/// One split of a config: its name and the glob of its files, relative to the card's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitFiles {
    /// Split name (`train`, `accepted`, …; letters, digits and `_`).
    pub split: String,
    /// Glob of the split's Parquet files, `/`-separated (`data/*.parquet`).
    pub path: String,
}

/// One `configs` entry of the front matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardConfig {
    /// `config_name`; `default` is what `load_dataset(DIR)` opens without a name.
    pub name: String,
    /// Its splits.
    pub splits: Vec<SplitFiles>,
}

impl CardConfig {
    /// The `default` config with one `train` split: the shards of this directory's `data/`.
    pub fn default_train() -> Self {
        CardConfig {
            name: "default".into(),
            splits: vec![SplitFiles {
                split: "train".into(),
                path: format!("{DATA_DIR}/*.parquet"),
            }],
        }
    }
}

/// A dataset card: front matter fields and the Markdown body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetCard {
    /// Human-readable name (`pretty_name`).
    pub pretty_name: String,
    /// SPDX-style licence id of the source (`mit`, `apache-2.0`); omitted when unknown.
    pub license: Option<String>,
    /// Rows of the largest config, for `size_categories`.
    pub rows: usize,
    /// Extra `tags` after `reasoning` and `distill`.
    pub tags: Vec<String>,
    /// The `configs`; the first is the one `load_dataset(DIR)` opens.
    pub configs: Vec<CardConfig>,
    /// Markdown after the front matter.
    pub body: String,
}

/// The Hub's `size_categories` bucket of a row count.
pub fn size_category(rows: usize) -> &'static str {
    const BUCKETS: [(usize, &str); 6] = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
    ];
    BUCKETS
        .iter()
        .find(|(limit, _)| rows < *limit)
        .map_or("100M<n<1B", |(_, name)| name)
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

impl DatasetCard {
    /// The whole `README.md`: `---`, the YAML front matter, `---`, the body.
    pub fn render(&self) -> String {
        let mut out = String::from("---\n");
        let _ = writeln!(out, "pretty_name: {}", quoted(&self.pretty_name));
        if let Some(license) = &self.license {
            let _ = writeln!(out, "license: {}", quoted(license));
        }
        out.push_str("language:\n- en\ntask_categories:\n- text-generation\ntags:\n");
        for tag in ["reasoning", "distill"]
            .into_iter()
            .chain(self.tags.iter().map(String::as_str))
        {
            let _ = writeln!(out, "- {}", quoted(tag));
        }
        let _ = writeln!(out, "size_categories:\n- {}", size_category(self.rows));
        if !self.configs.is_empty() {
            out.push_str("configs:\n");
        }
        for config in &self.configs {
            let _ = writeln!(out, "- config_name: {}", quoted(&config.name));
            out.push_str("  data_files:\n");
            for split in &config.splits {
                let _ = writeln!(out, "  - split: {}", quoted(&split.split));
                let _ = writeln!(out, "    path: {}", quoted(&split.path));
            }
        }
        out.push_str("---\n\n");
        out.push_str(&self.body);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }

    /// Writes `dir/README.md` (temporary file, then rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomically(&dir.join(CARD_FILE), self.render().as_bytes())
    }
}

/// The "How to load" section of a card for a directory whose default config is `configs[0]`:
/// `load_dataset`, pandas, pyarrow, Polars and DuckDB on the first split's files.
pub fn how_to_load(dir_name: &str, config: &CardConfig) -> String {
    let mut out = String::from("## How to load\n\n```python\n");
    let _ = writeln!(out, "from datasets import load_dataset");
    let _ = writeln!(
        out,
        "ds = load_dataset({})  # this directory, or its Hub id once uploaded",
        quoted(dir_name)
    );
    for split in &config.splits {
        let folder = split
            .path
            .rsplit_once('/')
            .map_or(".", |(folder, _)| folder);
        let full = format!("{dir_name}/{}", split.path);
        let _ = writeln!(out, "\n# split `{}`", split.split);
        let _ = writeln!(
            out,
            "import pandas as pd; df = pd.read_parquet({})",
            quoted(&format!("{dir_name}/{folder}"))
        );
        let _ = writeln!(
            out,
            "import polars as pl; df = pl.read_parquet({})",
            quoted(&full)
        );
        let _ = writeln!(
            out,
            "import duckdb; duckdb.sql(\"SELECT count(*) FROM '{full}'\")"
        );
    }
    out.push_str("```\n");
    out
}

/// The `license` of the dataset card `README.md` in `dir` (a Hub snapshot or a distill output),
/// when it has one: `license: mit` or a one-item list. Best effort: no card, no licence.
pub fn read_license(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(CARD_FILE)).ok()?;
    let front = text.strip_prefix("---")?.split("\n---").next()?;
    let mut lines = front.lines();
    while let Some(line) = lines.next() {
        let Some(value) = line.strip_prefix("license:") else {
            continue;
        };
        let value = match value.trim() {
            "" => lines.next()?.trim().strip_prefix("- ")?.trim(),
            inline => inline,
        };
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        return (!value.is_empty()).then(|| value.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_categories_follow_the_hub_buckets() {
        assert_eq!(size_category(0), "n<1K");
        assert_eq!(size_category(999), "n<1K");
        assert_eq!(size_category(1_000), "1K<n<10K");
        assert_eq!(size_category(220_000), "100K<n<1M");
    }

    #[test]
    fn a_rendered_card_round_trips_its_license() {
        let dir = tempfile::tempdir().unwrap();
        let card = DatasetCard {
            pretty_name: "x: \"quoted\"".into(),
            license: Some("mit".into()),
            rows: 5,
            tags: vec![],
            configs: vec![CardConfig::default_train()],
            body: "# body".into(),
        };
        card.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(CARD_FILE)).unwrap();
        assert!(text.starts_with("---\npretty_name: \"x: \\\"quoted\\\"\"\nlicense: \"mit\"\n"));
        assert!(text.contains("  - split: \"train\"\n    path: \"data/*.parquet\"\n"));
        assert_eq!(read_license(dir.path()).as_deref(), Some("mit"));
        std::fs::write(
            dir.path().join(CARD_FILE),
            "---\nlicense:\n- apache-2.0\n---\n",
        )
        .unwrap();
        assert_eq!(read_license(dir.path()).as_deref(), Some("apache-2.0"));
    }
}
