//! Repairing a shard directory whose manifest lists a shard that is missing or damaged: the
//! shard is dropped from the manifest and its file moved aside into `damaged/` (never
//! deleted), so a writer resuming the directory no longer sees its keys and writes those rows
//! again. `distill generate --repair` runs this before resuming, which resamples exactly the
//! dropped rows (every sample's seed derives from the run seed and the problem id).

use std::fs;
use std::path::{Path, PathBuf};

use super::errors::{DataError, Result};
use super::schema::TraceRow;
use super::shards::{
    read_manifest, read_shard_keys, shard_path, verify_shard, write_manifest, ShardEntry,
    MANIFEST_FILE,
};

/// Folder of a shard directory that receives the files of dropped shards.
pub const DAMAGED_DIR: &str = "damaged";

/// A shard dropped from the manifest by [`repair_shards`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedShard {
    /// The manifest's entry (file, rows, size, checksum as listed).
    pub entry: ShardEntry,
    /// Why it was dropped.
    pub reason: String,
    /// Where its file now is, inside [`DAMAGED_DIR`]; `None` when it was missing.
    pub moved_to: Option<PathBuf>,
}

impl std::fmt::Display for DroppedShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dropped {} ({} rows): {}",
            self.entry.file, self.entry.rows, self.reason
        )?;
        if let Some(path) = &self.moved_to {
            write!(f, "; its file was moved to {}", path.display())?;
        }
        Ok(())
    }
}

/// Checks every shard listed in `dir`'s manifest (present, the recorded size and SHA-256,
/// readable, the recorded number of rows), drops those that fail from the manifest and moves
/// their files into `dir/damaged/`. Returns the dropped shards; a directory without a
/// manifest, or whose shards are all intact, is left as it is.
pub fn repair_shards(dir: &Path) -> Result<Vec<DroppedShard>> {
    if !dir.join(MANIFEST_FILE).exists() {
        return Ok(Vec::new());
    }
    let mut manifest = read_manifest(dir)?;
    let mut dropped = Vec::new();
    let mut kept = Vec::new();
    for entry in manifest.shards {
        let path = shard_path(dir, &entry);
        match damage(&path, &entry) {
            None => kept.push(entry),
            Some(reason) => {
                let moved_to = if path.exists() {
                    Some(move_aside(dir, &path)?)
                } else {
                    None
                };
                dropped.push(DroppedShard {
                    entry,
                    reason,
                    moved_to,
                });
            }
        }
    }
    if dropped.is_empty() {
        return Ok(dropped);
    }
    manifest.shards = kept;
    manifest.total_rows = manifest.shards.iter().map(|s| s.rows).sum();
    write_manifest(dir, &manifest)?;
    Ok(dropped)
}

/// What is wrong with the shard at `path` listed as `entry`, or `None` when it is intact.
fn damage(path: &Path, entry: &ShardEntry) -> Option<String> {
    if !path.exists() {
        return Some("the file is missing".into());
    }
    if let Err(error) = verify_shard(path, entry) {
        return Some(error.to_string());
    }
    match read_shard_keys::<TraceRow>(path) {
        Err(error) => Some(error.to_string()),
        Ok(keys) if keys.len() != entry.rows => Some(format!(
            "it holds {} rows, the manifest lists {}",
            keys.len(),
            entry.rows
        )),
        Ok(_) => None,
    }
}

/// Moves the file at `path` into `dir/damaged/` under its own name (with a numeric suffix
/// when an earlier repair left a file of that name) and returns its new path.
fn move_aside(dir: &Path, path: &Path) -> Result<PathBuf> {
    let damaged = dir.join(DAMAGED_DIR);
    fs::create_dir_all(&damaged).map_err(|e| DataError::io(&damaged, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut target = damaged.join(&name);
    let mut copy = 1;
    while target.exists() {
        target = damaged.join(format!("{name}.{copy}"));
        copy += 1;
    }
    fs::rename(path, &target).map_err(|e| DataError::io(&target, e))?;
    Ok(target)
}
