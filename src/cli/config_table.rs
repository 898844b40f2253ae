//! Stage configurations on the command line: defaults, then an optional TOML file, then flags —
//! assembled as one TOML table and deserialised into the stage's config struct.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;

/// A TOML table being filled from a file and flags.
pub struct ConfigTable {
    table: toml::Table,
    origin: String,
}

impl ConfigTable {
    /// Starts from `file` (a TOML table of config fields) or from nothing.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let table = match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
                toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("{}: not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        let origin = file.map_or_else(
            || "command-line flags".to_string(),
            |p| p.display().to_string(),
        );
        Ok(ConfigTable { table, origin })
    }

    /// Sets `key` (a dotted path for nested tables, e.g. `optimizer.weight_decay`) when `value` is given.
    pub fn set(&mut self, key: &str, value: Option<impl Into<toml::Value>>) {
        let Some(value) = value else { return };
        let mut table = &mut self.table;
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap_or(key);
        for part in parts {
            let entry = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            let toml::Value::Table(inner) = entry else {
                return;
            };
            table = inner;
        }
        table.insert(last.to_string(), value.into());
    }

    /// Whether the file gave top-level `key` (before any flag was set).
    pub fn contains(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// Sets `key` to a path.
    pub fn set_path(&mut self, key: &str, value: Option<&PathBuf>) {
        self.set(key, value.map(|p| p.display().to_string()));
    }

    /// Sets `key` to an enum's serde name.
    pub fn set_enum<E: serde::Serialize>(&mut self, key: &str, value: Option<E>) {
        let value = value.and_then(|v| toml::Value::try_from(v).ok());
        self.set(key, value);
    }

    /// The config struct; errors name the file (or the flags) and the field serde rejected.
    pub fn finish<T: DeserializeOwned>(self, required: &str) -> anyhow::Result<T> {
        toml::Value::Table(self.table).try_into().with_context(|| {
            format!(
                "{}: invalid configuration ({required} are required)",
                self.origin
            )
        })
    }
}

/// A `usize` flag as a TOML integer.
pub fn int(value: Option<usize>) -> Option<i64> {
    value.map(|v| v as i64)
}

/// A `u64` flag as a TOML integer.
pub fn int64(value: Option<u64>) -> Option<i64> {
    value.map(|v| v as i64)
}
