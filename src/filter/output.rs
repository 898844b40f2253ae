//! The output directory: its layout, and refusing (or with `force`, clearing) outputs of
//! another configuration (the shards are written by [`super::sorted_output`]).
//!
//! Layout: `accepted/` and `rejected/` (shard directories of [`crate::data::schema::FilteredRow`]s: `data/` with
//! the Parquet shards, `manifest.json` and a short dataset card beside it), `pass_rates.parquet`,
//! `report.json`, `report.md`, and the dataset card `README.md` naming both splits. The report and pass-rate files
//! are removed when a run starts and written last, so their presence means the run completed.

use std::fs;
use std::path::Path;

use crate::data::card::CARD_FILE;
use crate::data::shards::{read_manifest, DATA_DIR, MANIFEST_FILE};
use crate::data::{DataError, Result};

use super::report::{REPORT_JSON, REPORT_MD};

/// Directory of accepted shards inside the output directory.
pub const ACCEPTED_DIR: &str = "accepted";
/// Directory of rejected shards inside the output directory.
pub const REJECTED_DIR: &str = "rejected";
/// File name of the per-problem pass rates.
pub const PASS_RATES_FILE: &str = "pass_rates.parquet";

/// Makes `out` ready for a run with `recipe_hash`: shard directories written with another hash
/// are refused, or cleared when `force`; the completion files of any earlier run are removed.
pub fn prepare(out: &Path, recipe_hash: &str, force: bool) -> Result<()> {
    fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    for name in [ACCEPTED_DIR, REJECTED_DIR] {
        let dir = out.join(name);
        if !dir.join(MANIFEST_FILE).exists() {
            continue;
        }
        let manifest = read_manifest(&dir)?;
        if manifest.recipe_hash == recipe_hash {
            continue;
        }
        if !force {
            return Err(DataError::RecipeMismatch {
                path: dir.join(MANIFEST_FILE),
                existing: manifest.recipe_hash,
                requested: recipe_hash.to_string(),
            });
        }
        clear_shard_dir(&dir)?;
    }
    for name in [REPORT_JSON, REPORT_MD, PASS_RATES_FILE, CARD_FILE] {
        let path = out.join(name);
        if path.exists() {
            fs::remove_file(&path).map_err(|e| DataError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Removes the shard files, manifest, dataset card and temporary files of a shard directory
/// (nothing else), in its `data/` folder and, for the legacy layout, beside the manifest.
fn clear_shard_dir(dir: &Path) -> Result<()> {
    for folder in [dir.join(DATA_DIR), dir.to_path_buf()] {
        if !folder.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&folder).map_err(|e| DataError::io(&folder, e))? {
            let entry = entry.map_err(|e| DataError::io(&folder, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name == MANIFEST_FILE
                || name == CARD_FILE
                || (name.starts_with("part-") && name.ends_with(".parquet"))
                || (name.starts_with('.') && name.ends_with(".tmp"));
            if ours {
                fs::remove_file(entry.path()).map_err(|e| DataError::io(entry.path(), e))?;
            }
        }
    }
    Ok(())
}
