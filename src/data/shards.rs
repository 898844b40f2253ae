//! Crash-safe Parquet shards: [`ShardWriter`] encodes rows (a few at a time, so memory holds a
//! shard's compressed bytes, not its rows) and writes zstd Parquet files of
//! `rows_per_shard` rows into the directory's `data/` folder (`data/part-00000.parquet`, …) with
//! `manifest.json` beside that folder; the readers ([`read_shard`], [`read_rows`],
//! [`read_trace_rows`]) read them back.
//!
//! Layout: the Hugging Face Hub's. `data/` holds nothing but Parquet shards (and hidden
//! temporary files, which every reader skips), so pandas, pyarrow, Polars, DuckDB and
//! `load_dataset("parquet", data_dir=…)` open it as one table; the manifest, a stage's summary and
//! its dataset card (`README.md`, see [`crate::data::card`]) sit beside it. Directories written
//! before this layout (format version 1: shards and manifest side by side) are still read as they
//! are, and [`ShardWriter::open`] migrates them: it moves their shards into `data/` (one rename
//! each) and rewrites the manifest.
//!
//! Crash safety: every file is written under a hidden, per-process temporary name
//! (`.part-00003.parquet.4711-0.tmp`, `.manifest.json.4711-1.tmp`) in its own directory, fsync'd, renamed to its final name, and the
//! directory fsync'd; a final name therefore always holds a complete file. Rows still buffered
//! when the process dies are lost, and a rerun regenerates them, because resume skips exactly the
//! keys (problem id, sample index) present in complete shards.
//!
//! Resume: [`ShardWriter::open`] on an existing directory deletes stale temporary files, checks
//! the manifest's shards exist with the recorded sizes, adopts complete shards that a crash left
//! out of the manifest (killed between the shard's rename and the manifest's), refuses a
//! different recipe hash unless forced, and loads the keys already written. One writer per
//! directory at a time; parallel workers each write their own directory (see
//! [`crate::data::split`]).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::columns::for_each_batch;
use super::errors::{DataError, Result};
use super::hashing::sha256_hex;
use super::schema::{rows_to_batch, ArrowRow, RowKey, TraceRow};

/// File name of the manifest inside a shard directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Version of the manifest layout written by this code: 2 lists shards as `data/part-….parquet`.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;
/// The manifest version of directories written before the `data/` folder (shards beside the
/// manifest); still read, and migrated when a writer opens them.
pub const LEGACY_MANIFEST_FORMAT_VERSION: u32 = 1;
/// Folder inside a shard directory that holds the Parquet shards and nothing else.
pub const DATA_DIR: &str = "data";
/// Default number of rows per shard.
pub const DEFAULT_ROWS_PER_SHARD: usize = 1000;

/// One complete shard listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Path relative to the shard directory, `/`-separated: `data/part-00000.parquet`
    /// (format version 1 listed bare names, `part-00000.parquet`).
    pub file: String,
    /// Number of rows.
    pub rows: usize,
    /// File size in bytes.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the file bytes.
    pub sha256: String,
}

/// `manifest.json`: what a shard directory holds and which recipe produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`] at write time.
    pub format_version: u32,
    /// Caller-supplied hash of the run's recipe/config; resume requires it to match.
    pub recipe_hash: String,
    /// Rows per full shard (the last shard of a run may hold fewer).
    pub rows_per_shard: usize,
    /// Sum of the shards' rows.
    pub total_rows: usize,
    /// The complete shards, in write order.
    pub shards: Vec<ShardEntry>,
}

/// How to open a shard directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardOptions {
    /// Rows per shard file (at least 1).
    pub rows_per_shard: usize,
    /// Hash of the recipe/config of this run, recorded in the manifest.
    pub recipe_hash: String,
    /// Resume even if the manifest's recipe hash differs; the manifest then records this
    /// run's hash and the existing rows are kept.
    pub force: bool,
}

impl ShardOptions {
    /// [`DEFAULT_ROWS_PER_SHARD`] rows per shard, no forcing.
    pub fn new(recipe_hash: impl Into<String>) -> Self {
        ShardOptions {
            rows_per_shard: DEFAULT_ROWS_PER_SHARD,
            recipe_hash: recipe_hash.into(),
            force: false,
        }
    }
}

/// Writes rows of type `R` into Parquet shards of one directory, resumably.
pub struct ShardWriter<R: ArrowRow> {
    dir: PathBuf,
    manifest: Manifest,
    keys: HashSet<RowKey>,
    shard: ShardEncoder<R>,
    next_index: usize,
}

/// Rows encoded into the shard at a time: a shard being written holds its compressed bytes
/// plus at most this many rows, however long the rows are.
const ENCODE_CHUNK_ROWS: usize = 64;

/// The shard being written: rows are encoded into an in-memory zstd Parquet file a chunk of
/// [`ENCODE_CHUNK_ROWS`] at a time (one row group per shard, as if encoded at once).
struct ShardEncoder<R> {
    pending: Vec<R>,
    writer: Option<ArrowWriter<Vec<u8>>>,
    rows: usize,
}

impl<R: ArrowRow> ShardEncoder<R> {
    fn new() -> Self {
        ShardEncoder {
            pending: Vec::new(),
            writer: None,
            rows: 0,
        }
    }

    /// Rows in the shard so far.
    fn rows(&self) -> usize {
        self.rows
    }

    /// Adds a row, encoding the pending chunk when it is full (`path` names errors).
    fn push(&mut self, row: R, path: &Path) -> Result<()> {
        self.pending.push(row);
        self.rows += 1;
        if self.pending.len() >= ENCODE_CHUNK_ROWS {
            self.encode_pending(path)?;
        }
        Ok(())
    }

    fn encode_pending(&mut self, path: &Path) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = rows_to_batch(&self.pending, path)?;
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                let writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(properties))
                    .map_err(|cause| parquet_error(path, cause))?;
                self.writer.insert(writer)
            }
        };
        writer
            .write(&batch)
            .map_err(|cause| parquet_error(path, cause))?;
        self.pending.clear();
        Ok(())
    }

    /// The shard's file bytes; the encoder is empty again.
    fn finish(&mut self, path: &Path) -> Result<Vec<u8>> {
        self.encode_pending(path)?;
        self.rows = 0;
        match self.writer.take() {
            Some(writer) => writer
                .into_inner()
                .map_err(|cause| parquet_error(path, cause)),
            None => Err(DataError::InvalidConfig(format!(
                "{}: no rows to write",
                path.display()
            ))),
        }
    }
}

/// A Parquet error about `path`.
fn parquet_error(path: &Path, cause: parquet::errors::ParquetError) -> DataError {
    DataError::Parquet {
        path: path.to_path_buf(),
        cause,
    }
}

/// The file name of shard number `index` (at least five digits).
pub fn shard_file_name(index: usize) -> String {
    format!("part-{index:05}.parquet")
}

/// The manifest entry (`data/<name>`) of the shard file `name`.
fn data_entry(name: &str) -> String {
    format!("{DATA_DIR}/{name}")
}

/// The bare file name of a manifest entry (`data/part-00000.parquet` → `part-00000.parquet`).
fn entry_name(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

/// The shard number of a final shard file name, `None` for other names.
fn shard_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    if digits.len() >= 5 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// Whether `name` is a temporary file of this module.
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Removes this module's temporary files directly in `dir` and returns its final shard files
/// as (index, name), sorted.
fn remove_temp_files(dir: &Path) -> Result<Vec<(usize, String)>> {
    let mut final_shards = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            fs::remove_file(entry.path()).map_err(|e| DataError::io(entry.path(), e))?;
        } else if let Some(index) = shard_index(&name) {
            final_shards.push((index, name));
        }
    }
    final_shards.sort();
    Ok(final_shards)
}

/// Moves the shards of a directory in the legacy layout (`part-*.parquet` beside
/// `manifest.json`) into its `data/` folder. Each move is a rename, so a crash leaves every
/// shard complete in one of the two places; the caller then rewrites the manifest's entries as
/// `data/<name>`, and [`shard_paths`] finds a shard in either place until it has.
fn migrate_legacy_layout(dir: &Path) -> Result<()> {
    let data = dir.join(DATA_DIR);
    for (_, name) in remove_temp_files(dir)? {
        let target = data.join(&name);
        if target.exists() {
            return Err(DataError::Manifest {
                path: dir.join(&name),
                message: format!(
                    "shard exists both here and as {}; keep the right one and remove the other",
                    target.display()
                ),
            });
        }
        fs::create_dir_all(&data).map_err(|e| DataError::io(&data, e))?;
        fs::rename(dir.join(&name), &target).map_err(|e| DataError::io(&target, e))?;
    }
    sync_dir(&data)?;
    sync_dir(dir)
}

impl<R: ArrowRow> ShardWriter<R> {
    /// Opens (creating if needed) the shard directory `dir` for writing or resuming; see the
    /// module docs for what resuming checks.
    pub fn open(dir: &Path, options: ShardOptions) -> Result<Self> {
        if options.rows_per_shard == 0 {
            return Err(DataError::InvalidConfig(
                "rows_per_shard must be at least 1".into(),
            ));
        }
        fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let data = dir.join(DATA_DIR);
        let manifest_path = dir.join(MANIFEST_FILE);
        let mut manifest = if manifest_path.exists() {
            let mut manifest = read_manifest(dir)?;
            if manifest.recipe_hash != options.recipe_hash {
                if !options.force {
                    return Err(DataError::RecipeMismatch {
                        path: manifest_path,
                        existing: manifest.recipe_hash,
                        requested: options.recipe_hash,
                    });
                }
                manifest.recipe_hash = options.recipe_hash.clone();
            }
            manifest
        } else {
            Manifest {
                format_version: MANIFEST_FORMAT_VERSION,
                recipe_hash: options.recipe_hash.clone(),
                rows_per_shard: options.rows_per_shard,
                total_rows: 0,
                shards: Vec::new(),
            }
        };
        fs::create_dir_all(&data).map_err(|e| DataError::io(&data, e))?;
        migrate_legacy_layout(dir)?;
        let final_shards = remove_temp_files(&data)?;
        manifest.format_version = MANIFEST_FORMAT_VERSION;
        manifest.rows_per_shard = options.rows_per_shard;
        for shard in &mut manifest.shards {
            shard.file = data_entry(entry_name(&shard.file));
        }
        check_listed_shards(dir, &manifest)?;
        let listed: HashSet<String> = manifest.shards.iter().map(|s| s.file.clone()).collect();
        for (_, name) in final_shards
            .iter()
            .filter(|(_, name)| !listed.contains(&data_entry(name)))
        {
            manifest
                .shards
                .push(describe_orphan_shard::<R>(&data.join(name))?);
        }
        manifest.total_rows = manifest.shards.iter().map(|s| s.rows).sum();
        write_manifest(dir, &manifest)?;
        let mut keys = HashSet::new();
        for shard in &manifest.shards {
            keys.extend(read_shard_keys::<R>(&dir.join(&shard.file))?);
        }
        let next_index = final_shards.last().map_or(0, |(index, _)| index + 1);
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            manifest,
            keys,
            shard: ShardEncoder::new(),
            next_index,
        })
    }

    /// Whether the row with `key` was already written (in a shard or the buffer); a
    /// generator skips such work.
    pub fn contains(&self, key: &RowKey) -> bool {
        self.keys.contains(key)
    }

    /// Number of rows in complete shards plus buffered rows.
    pub fn rows_written(&self) -> usize {
        self.keys.len()
    }

    /// The manifest as of the last complete shard.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Adds a row; writes a shard when `rows_per_shard` rows are buffered. Returns `false`
    /// (and drops the row) when its key was already written, so no key is ever duplicated.
    pub fn write(&mut self, row: R) -> Result<bool> {
        if !self.keys.insert(row.key()) {
            return Ok(false);
        }
        let path = self
            .dir
            .join(DATA_DIR)
            .join(shard_file_name(self.next_index));
        self.shard.push(row, &path)?;
        if self.shard.rows() >= self.manifest.rows_per_shard {
            self.flush_shard()?;
        }
        Ok(true)
    }

    /// Makes the buffered rows durable now, as a shard of fewer than `rows_per_shard` rows
    /// (nothing when the buffer is empty). For slow teachers: call it every few minutes so a
    /// crash loses at most that much work.
    pub fn flush(&mut self) -> Result<()> {
        if self.shard.rows() == 0 {
            return Ok(());
        }
        self.flush_shard()
    }

    /// Writes the buffered rows (possibly fewer than `rows_per_shard`) as a last shard and
    /// returns the final manifest.
    pub fn finish(mut self) -> Result<Manifest> {
        self.flush()?;
        Ok(self.manifest)
    }

    /// Writes the buffer as the next shard, then the manifest.
    fn flush_shard(&mut self) -> Result<()> {
        let name = shard_file_name(self.next_index);
        let path = self.dir.join(DATA_DIR).join(&name);
        let rows = self.shard.rows();
        let bytes = self.shard.finish(&path)?;
        write_atomically(&path, &bytes)?;
        self.manifest.shards.push(ShardEntry {
            file: data_entry(&name),
            rows,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
        self.manifest.total_rows += rows;
        self.next_index += 1;
        write_manifest(&self.dir, &self.manifest)
    }
}

/// Writes `bytes` to a unique hidden temporary file beside `path`
/// ([`crate::output_dir::temp_path_for`]), fsyncs it, renames it to `path` and fsyncs
/// the directory, so `path` never holds a partial file (also used for the filter's report and
/// pass-rate files).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = crate::output_dir::temp_path_for(path);
    let mut file = File::create(&temp).map_err(|e| DataError::io(&temp, e))?;
    file.write_all(bytes).map_err(|e| DataError::io(&temp, e))?;
    file.sync_all().map_err(|e| DataError::io(&temp, e))?;
    drop(file);
    fs::rename(&temp, path).map_err(|e| DataError::io(path, e))?;
    sync_dir(dir)
}

/// Makes a rename in `dir` durable (a no-op where directories cannot be opened).
fn sync_dir(dir: &Path) -> Result<()> {
    if cfg!(unix) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| DataError::io(dir, e))?;
    }
    Ok(())
}

/// Writes `dir/manifest.json` atomically.
pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let mut text = serde_json::to_string_pretty(manifest).map_err(|e| DataError::Manifest {
        path: path.clone(),
        message: e.to_string(),
    })?;
    text.push('\n');
    write_atomically(&path, text.as_bytes())
}

/// Reads `dir/manifest.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| DataError::Manifest {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if ![LEGACY_MANIFEST_FORMAT_VERSION, MANIFEST_FORMAT_VERSION].contains(&manifest.format_version)
    {
        return Err(DataError::Manifest {
            path,
            message: format!(
                "format_version {} is not one of the supported {LEGACY_MANIFEST_FORMAT_VERSION} \
                 and {MANIFEST_FORMAT_VERSION}",
                manifest.format_version
            ),
        });
    }
    Ok(manifest)
}

/// Checks every shard listed in the manifest exists with the recorded size.
fn check_listed_shards(dir: &Path, manifest: &Manifest) -> Result<()> {
    for shard in &manifest.shards {
        let path = dir.join(&shard.file);
        let bytes = fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| DataError::Manifest {
                path: path.clone(),
                message: format!("listed shard cannot be read: {e}"),
            })?;
        if bytes != shard.bytes {
            return Err(DataError::Manifest {
                path,
                message: format!("shard has {bytes} bytes, the manifest says {}", shard.bytes),
            });
        }
    }
    Ok(())
}

/// Describes a complete shard that the manifest does not list yet.
fn describe_orphan_shard<R: ArrowRow>(path: &Path) -> Result<ShardEntry> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let rows = read_shard_keys::<R>(path)?.len();
    Ok(ShardEntry {
        file: data_entry(
            &path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        rows,
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    })
}

/// Reads only the resume keys (`id`, `sample_index`) of one shard.
pub fn read_shard_keys<R: ArrowRow>(path: &Path) -> Result<Vec<RowKey>> {
    let [id_column, index_column] = R::KEY_COLUMNS;
    let mut keys = Vec::new();
    for_each_batch(path, Some(&R::KEY_COLUMNS), |columns| {
        let ids = columns.required_strings(id_column)?;
        let samples = columns.required_u32(index_column)?;
        keys.extend(
            ids.into_iter()
                .zip(samples)
                .map(|(id, sample_index)| RowKey {
                    problem_id: id.to_string(),
                    sample_index,
                }),
        );
        Ok(())
    })?;
    Ok(keys)
}

/// Reads every row of one shard file, in file order. Independent of other files, so shards
/// can be read in parallel.
pub fn read_shard<R: ArrowRow>(path: &Path) -> Result<Vec<R>> {
    let mut rows = Vec::new();
    for_each_batch(path, None, |columns| {
        rows.extend(R::from_columns(columns)?);
        Ok(())
    })?;
    Ok(rows)
}

/// The shard files of `dir` in manifest order, in either layout: a legacy entry whose file
/// has already moved into `data/` (an interrupted migration) is found there.
pub fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(listed_shards(dir)?
        .into_iter()
        .map(|(path, _)| path)
        .collect())
}

/// Where the shard of `entry` is: as listed, or in `data/` when a legacy entry's file moved.
pub(crate) fn shard_path(dir: &Path, entry: &ShardEntry) -> PathBuf {
    let listed = dir.join(&entry.file);
    let moved = dir.join(DATA_DIR).join(entry_name(&entry.file));
    if !listed.exists() && moved.exists() {
        moved
    } else {
        listed
    }
}

/// Reads all shards of `dir` (manifest order) and returns the rows sorted by
/// (problem id, sample index), so equal row sets compare equal however they were sharded.
pub fn read_rows<R: ArrowRow>(dir: &Path) -> Result<Vec<R>> {
    let mut rows = Vec::new();
    for path in shard_paths(dir)? {
        rows.extend(read_shard::<R>(&path)?);
    }
    rows.sort_by_cached_key(|row| row.key());
    Ok(rows)
}

/// [`read_rows`] for [`TraceRow`]s.
pub fn read_trace_rows(dir: &Path) -> Result<Vec<TraceRow>> {
    read_rows(dir)
}

/// Re-hashes every shard of `dir` and checks sizes and SHA-256 against the manifest.
pub fn verify_shards(dir: &Path) -> Result<Manifest> {
    let manifest = read_manifest(dir)?;
    for shard in &manifest.shards {
        verify_shard(&shard_path(dir, shard), shard)?;
    }
    Ok(manifest)
}

/// The listed shards of `dir` with their files, in manifest order (see [`shard_paths`]).
pub fn listed_shards(dir: &Path) -> Result<Vec<(PathBuf, ShardEntry)>> {
    Ok(read_manifest(dir)?
        .shards
        .into_iter()
        .map(|shard| (shard_path(dir, &shard), shard))
        .collect())
}

/// Checks the file at `path` has the size and SHA-256 that the manifest's `entry` records.
pub fn verify_shard(path: &Path, entry: &ShardEntry) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| DataError::Manifest {
        path: path.to_path_buf(),
        message: format!("listed shard cannot be read: {e}"),
    })?;
    let (size, sha256) = (bytes.len() as u64, sha256_hex(&bytes));
    if size != entry.bytes || sha256 != entry.sha256 {
        return Err(DataError::Manifest {
            path: path.to_path_buf(),
            message: format!(
                "shard bytes do not match the manifest: {size} bytes with sha256 {sha256}, \
                 the manifest records {} bytes with sha256 {} (the file changed after it was written)",
                entry.bytes, entry.sha256
            ),
        });
    }
    Ok(())
}
