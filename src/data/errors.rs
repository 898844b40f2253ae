//! The one typed error of the data layer, [`DataError`], and where in a file an error sits
//! ([`Location`]). Every message names the file, the line (JSONL, 1-based) or row (Parquet,
//! 0-based) and the field, so a user can open the file and fix it.

use std::fmt;
use std::path::PathBuf;

/// Result alias used throughout [`crate::data`].
pub type Result<T> = std::result::Result<T, DataError>;

/// A position inside an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A line of a JSONL file, 1-based (as editors and `sed -n Np` count).
    Line(usize),
    /// A row of a Parquet file, 0-based (as pandas `df.iloc[n]` counts).
    Row(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::Row(row) => write!(f, "row {row} (0-based)"),
        }
    }
}

/// Formats the optional field of an invalid UTF-8 error.
fn in_field(field: &Option<String>) -> String {
    match field {
        Some(name) => format!(" in field `{name}`"),
        None => String::new(),
    }
}

/// Everything that can go wrong reading or writing data files.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system error on a file or directory. The causes of this and the Parquet
    /// and Arrow variants are part of the message, not `source()`s, so a printed error chain
    /// shows them once.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A line of a text file is not valid UTF-8.
    #[error("{}: {location}: not valid UTF-8 at byte offset {byte_offset} of the file{}", path.display(), in_field(field))]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// The line holding the bad bytes.
        location: Location,
        /// Byte offset of the first invalid byte from the start of the file.
        byte_offset: usize,
        /// The JSON field holding the bad bytes, when it could be found.
        field: Option<String>,
    },
    /// The file holds no records.
    #[error("{}: the file is empty (no records)", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// A JSONL line is not valid JSON, or not a JSON object.
    #[error("{}: {location}: malformed JSON record: {message}", path.display())]
    MalformedJson {
        /// The file.
        path: PathBuf,
        /// The line.
        location: Location,
        /// What the JSON parser said.
        message: String,
    },
    /// A record lacks a required field.
    #[error("{}: {location}: missing field `{field}`", path.display())]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The line or row.
        location: Location,
        /// The missing field.
        field: String,
    },
    /// A Parquet file lacks a required column (so every row lacks the field).
    #[error("{}: missing column `{column}` (needed in every row; the file has: {available})", path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// Comma-separated names of the columns the file does have.
        available: String,
    },
    /// A value has the wrong JSON type.
    #[error("{}: {location}: field `{field}` has the wrong type: expected {expected}, found {found}", path.display())]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The line or row.
        location: Location,
        /// The field.
        field: String,
        /// The accepted type(s).
        expected: String,
        /// The type found.
        found: String,
    },
    /// A Parquet column has the wrong Arrow type (so every row's field is wrong).
    #[error("{}: column `{column}` has the wrong type in every row: expected {expected}, found {found}", path.display())]
    WrongColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The accepted type(s).
        expected: String,
        /// The Arrow type found.
        found: String,
    },
    /// A required value is null.
    #[error("{}: {location}: field `{field}` is null but is required", path.display())]
    NullValue {
        /// The file.
        path: PathBuf,
        /// The line or row.
        location: Location,
        /// The field.
        field: String,
    },
    /// A value has the right type but an unusable content.
    #[error("{}: {location}: field `{field}` is invalid: {message}", path.display())]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The line or row.
        location: Location,
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Two records of one prompt set got the same problem id.
    #[error("{}: {location}: field `{field}`: duplicate problem id `{id}`", path.display())]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// The line or row of the second occurrence.
        location: Location,
        /// The field the id came from (or `problem` for content-hash ids).
        field: String,
        /// The repeated id.
        id: String,
    },
    /// The Parquet library failed on a file.
    #[error("{}: parquet error: {cause}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: parquet::errors::ParquetError,
    },
    /// The Arrow library failed building or reading a batch for a file.
    #[error("{}: arrow error: {cause}", path.display())]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: arrow::error::ArrowError,
    },
    /// No built-in adapter has this name.
    #[error("unknown prompt-set adapter `{name}` (known: gsm8k, math500, aime24, amc23)")]
    UnknownAdapter {
        /// The name asked for.
        name: String,
    },
    /// The adapter could not be detected from the file's fields.
    #[error("{}: cannot detect the prompt-set format from fields [{fields}]; name an adapter or give a column mapping", path.display())]
    UndetectedFormat {
        /// The file.
        path: PathBuf,
        /// Comma-separated field names of the first record.
        fields: String,
    },
    /// The file extension is neither `.jsonl` nor `.parquet`.
    #[error("{}: unsupported file type (expected .jsonl or .parquet)", path.display())]
    UnsupportedFileType {
        /// The file.
        path: PathBuf,
    },
    /// `manifest.json` cannot be parsed or disagrees with the files on disk.
    #[error("{}: bad manifest: {message}", path.display())]
    Manifest {
        /// The manifest (or shard) path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An output directory was written with another recipe than the one resuming it.
    #[error("{}: recipe hash mismatch: the directory was written with recipe `{existing}`, this run has `{requested}`; use another output directory, or force the resume", path.display())]
    RecipeMismatch {
        /// The manifest path.
        path: PathBuf,
        /// Recipe hash recorded in the manifest.
        existing: String,
        /// Recipe hash of this run.
        requested: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl DataError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            cause: source,
        }
    }
}
