//! Reading the generated shards: every shard file in parallel (rayon), each checked against
//! the manifest first (size, SHA-256 and row count, as generate's resume does), each row
//! remembering the file and row it came from for error messages, sorted by (problem id,
//! sample index).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::data::schema::TraceRow;
use crate::data::shards::{listed_shards, read_shard, verify_shard};
use crate::data::{DataError, Location, Result};

/// A trace and where it was read.
#[derive(Debug)]
pub struct SourcedRow {
    /// The trace.
    pub row: TraceRow,
    /// Index of its file in [`Input::files`].
    pub file: usize,
    /// Its row in that file (0-based).
    pub file_row: usize,
}

/// Every trace of an input directory.
#[derive(Debug)]
pub struct Input {
    /// The shard files, in manifest order.
    pub files: Vec<PathBuf>,
    /// The rows, sorted by (id, sample index).
    pub rows: Vec<SourcedRow>,
}

impl Input {
    /// An "invalid value" error at `row`'s origin.
    pub fn invalid(&self, row: &SourcedRow, field: &str, message: String) -> DataError {
        invalid_at(&self.files, row, field, message)
    }
}

/// An "invalid value" error at `row`'s origin among `files`.
pub fn invalid_at(files: &[PathBuf], row: &SourcedRow, field: &str, message: String) -> DataError {
    DataError::InvalidValue {
        path: files[row.file].clone(),
        location: Location::Row(row.file_row),
        field: field.to_string(),
        message,
    }
}

/// Reads every shard of `dir`, each verified against the manifest; a shard that is missing,
/// changed since it was listed, or holds another number of rows than listed is an error naming
/// it, as is a key (id, sample index) present twice (naming both places).
pub fn read_input(dir: &Path) -> Result<Input> {
    let listed = listed_shards(dir)?;
    let per_file: Vec<Vec<TraceRow>> = listed
        .par_iter()
        .map(|(path, entry)| {
            verify_shard(path, entry)?;
            let rows = read_shard::<TraceRow>(path)?;
            if rows.len() != entry.rows {
                return Err(DataError::Manifest {
                    path: path.clone(),
                    message: format!(
                        "shard holds {} rows, the manifest lists {}",
                        rows.len(),
                        entry.rows
                    ),
                });
            }
            Ok(rows)
        })
        .collect::<Result<_>>()?;
    let files: Vec<PathBuf> = listed.into_iter().map(|(path, _)| path).collect();
    let mut rows: Vec<SourcedRow> = per_file
        .into_iter()
        .enumerate()
        .flat_map(|(file, rows)| {
            rows.into_iter()
                .enumerate()
                .map(move |(file_row, row)| SourcedRow {
                    row,
                    file,
                    file_row,
                })
        })
        .collect();
    rows.par_sort_unstable_by(|a, b| {
        (&a.row.id, a.row.sample_index).cmp(&(&b.row.id, b.row.sample_index))
    });
    let input = Input { files, rows };
    if let Some(pair) = input.rows.windows(2).find(|pair| {
        pair[0].row.id == pair[1].row.id && pair[0].row.sample_index == pair[1].row.sample_index
    }) {
        let first = &pair[0];
        let message = format!(
            "duplicate key (id `{}`, sample_index {}): also at {} row {}",
            first.row.id,
            first.row.sample_index,
            input.files[first.file].display(),
            first.file_row
        );
        return Err(input.invalid(&pair[1], "sample_index", message));
    }
    Ok(input)
}
