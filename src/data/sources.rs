//! Prompt sources: reading problem sets (JSONL or Parquet) into [`Problem`]s with a
//! [`ColumnMapping`], and the built-in [`Adapter`]s for GSM8K, MATH-500, AIME 2024, AMC 2023,
//! NuminaMath-1.5 / OpenR1-Math-220k and NuminaMath-CoT.
//!
//! Ids are stable across runs and machines: the mapped id column (with a per-set prefix) when
//! there is one, else `<source>-<first 16 hex digits of sha256(source + "\n" + problem)>`.
//! Bad input never panics; every error names the file, the line (JSONL, 1-based) or row
//! (Parquet, 0-based) and the field.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{Map, Value};

use super::columns::{cell_to_json, for_each_batch, is_scalar_type};
use super::errors::{DataError, Location, Result};
use super::hashing::sha256_hex;

/// One prompt with its gold answer, as every later stage sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Stable unique id (see the module docs).
    pub id: String,
    /// Prompt-set name, e.g. `gsm8k-test`.
    pub source: String,
    /// The question text shown to the model.
    pub problem: String,
    /// The gold final answer as text (for numbers: canonical form, e.g. `27` not `27.0`).
    pub answer: String,
    /// Carried-through columns of the input record, by column name.
    pub metadata: Map<String, Value>,
}

/// How the gold answer is taken out of the answer column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// The value as text, trimmed (numbers in canonical form).
    Text,
    /// GSM8K: the text after the last `####`, trimmed, thousands separators (commas) removed.
    Gsm8k,
    /// A number (JSON number or numeric string) in canonical form: integers without leading
    /// zeros or `.0` (`"025"` → `25`, `27.0` → `27`).
    Number,
    /// A worked solution whose last `\boxed{…}` is the answer (NuminaMath-CoT's `solution`).
    Boxed,
}

/// Which columns of a prompt-set file hold what.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMapping {
    /// Prompt-set name stored in [`Problem::source`] and used in content-hash ids.
    pub source: String,
    /// Column holding the question text.
    pub problem: String,
    /// Column holding the gold answer.
    pub answer: String,
    /// How to read the gold answer.
    pub answer_format: AnswerFormat,
    /// Column holding the id (string or integer); `None` means content-hash ids.
    pub id: Option<String>,
    /// Prefix put before values of the id column, e.g. `aime24-`.
    pub id_prefix: String,
    /// Columns copied into [`Problem::metadata`] (must exist; values may be null).
    pub metadata: Vec<String>,
}

impl ColumnMapping {
    /// A mapping with content-hash ids, text answers and no metadata.
    pub fn new(source: &str, problem: &str, answer: &str) -> Self {
        ColumnMapping {
            source: source.to_string(),
            problem: problem.to_string(),
            answer: answer.to_string(),
            answer_format: AnswerFormat::Text,
            id: None,
            id_prefix: String::new(),
            metadata: Vec::new(),
        }
    }
}

/// A built-in prompt set with a known layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// GSM8K (`question`, `answer` with the gold after `#### `); content-hash ids.
    Gsm8k,
    /// MATH-500 (`problem`, `answer`, id from `unique_id`; carries `subject`, `level`, `unique_id`).
    Math500,
    /// AIME 2024 from Qwen2.5-Math eval (`problem`, string `answer` with leading zeros, integer `id`).
    Aime24,
    /// AMC 2023 from Qwen2.5-Math eval (`problem`, float `answer`, integer `id`).
    Amc23,
    /// NuminaMath-1.5 and OpenR1-Math-220k (`problem`, text `answer`, `problem_type`,
    /// `question_type`, `source`); content-hash ids, the three carried as metadata.
    Numina,
    /// NuminaMath-CoT (`problem`, worked `solution` whose last `\boxed{}` is the answer,
    /// `source`); content-hash ids, `source` carried as metadata.
    NuminaCot,
}

impl Adapter {
    /// Every built-in adapter.
    pub const ALL: [Adapter; 6] = [
        Adapter::Gsm8k,
        Adapter::Math500,
        Adapter::Aime24,
        Adapter::Amc23,
        Adapter::Numina,
        Adapter::NuminaCot,
    ];

    /// The adapter's name (`gsm8k`, `math500`, `aime24`, `amc23`, `numina`, `numinacot`).
    pub fn name(self) -> &'static str {
        match self {
            Adapter::Gsm8k => "gsm8k",
            Adapter::Math500 => "math500",
            Adapter::Aime24 => "aime24",
            Adapter::Amc23 => "amc23",
            Adapter::Numina => "numina",
            Adapter::NuminaCot => "numinacot",
        }
    }

    /// The adapter called `name` (case-insensitive; `-`/`_` ignored, so `math-500` works).
    pub fn from_name(name: &str) -> Result<Self> {
        let wanted: String = name
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_lowercase();
        Adapter::ALL
            .into_iter()
            .find(|adapter| adapter.name() == wanted)
            .ok_or_else(|| DataError::UnknownAdapter {
                name: name.to_string(),
            })
    }

    /// Detects the adapter from the first record's fields (and, for AIME/AMC, its `url` or
    /// the file path).
    pub fn detect(path: &Path) -> Result<Self> {
        let records = read_records(path, None)?;
        let first =
            records
                .first()
                .map(|(_, record)| record)
                .ok_or_else(|| DataError::EmptyFile {
                    path: path.to_path_buf(),
                })?;
        let has = |field: &str| first.contains_key(field);
        let url = first.get("url").and_then(Value::as_str).unwrap_or_default();
        let path_text = path.to_string_lossy().to_lowercase();
        let detected = if has("unique_id") && has("subject") && has("level") {
            Some(Adapter::Math500)
        } else if has("problem") && has("answer") && has("problem_type") && has("question_type") {
            Some(Adapter::Numina)
        } else if has("problem") && has("solution") && has("source") && !has("answer") {
            Some(Adapter::NuminaCot)
        } else if has("question") && has("answer") && first.len() == 2 {
            Some(Adapter::Gsm8k)
        } else if has("problem") && has("answer") && has("url") {
            if url.contains("AIME") || path_text.contains("aime") {
                Some(Adapter::Aime24)
            } else if url.contains("AMC") || path_text.contains("amc") {
                Some(Adapter::Amc23)
            } else {
                None
            }
        } else {
            None
        };
        detected.ok_or_else(|| DataError::UndetectedFormat {
            path: path.to_path_buf(),
            fields: first.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// The column mapping of this adapter for `path`; the source is `<name>-<file stem>`,
    /// e.g. `gsm8k-test`.
    pub fn mapping(self, path: &Path) -> ColumnMapping {
        self.mapping_named(&file_stem(path))
    }

    /// The column mapping of this adapter for a set called `stem`: the source is
    /// `<name>-<stem>` (a Hub split passes its split name, so `hf:openai/gsm8k:main:test` gives
    /// `gsm8k-test` like the file `gsm8k/test.jsonl`).
    pub fn mapping_named(self, stem: &str) -> ColumnMapping {
        let source = format!("{}-{stem}", self.name());
        let id_prefix = format!("{}-", self.name());
        let strings = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        match self {
            Adapter::Gsm8k => ColumnMapping {
                answer_format: AnswerFormat::Gsm8k,
                ..ColumnMapping::new(&source, "question", "answer")
            },
            Adapter::Math500 => ColumnMapping {
                id: Some("unique_id".into()),
                id_prefix,
                metadata: strings(&["subject", "level", "unique_id"]),
                ..ColumnMapping::new(&source, "problem", "answer")
            },
            Adapter::Numina => ColumnMapping {
                metadata: strings(&["problem_type", "question_type", "source"]),
                ..ColumnMapping::new(&source, "problem", "answer")
            },
            Adapter::NuminaCot => ColumnMapping {
                answer_format: AnswerFormat::Boxed,
                metadata: strings(&["source"]),
                ..ColumnMapping::new(&source, "problem", "solution")
            },
            Adapter::Aime24 | Adapter::Amc23 => ColumnMapping {
                answer_format: AnswerFormat::Number,
                id: Some("id".into()),
                id_prefix,
                metadata: strings(&["url"]),
                ..ColumnMapping::new(&source, "problem", "answer")
            },
        }
    }
}

/// Loads a built-in prompt set; `adapter: None` detects it with [`Adapter::detect`].
pub fn load_builtin(path: &Path, adapter: Option<Adapter>) -> Result<Vec<Problem>> {
    load_builtin_named(path, adapter, &file_stem(path))
}

/// [`load_builtin`] with the set's name given (see [`Adapter::mapping_named`]).
pub fn load_builtin_named(
    path: &Path,
    adapter: Option<Adapter>,
    stem: &str,
) -> Result<Vec<Problem>> {
    let adapter = match adapter {
        Some(adapter) => adapter,
        None => Adapter::detect(path)?,
    };
    load_problems(path, &adapter.mapping_named(stem))
}

/// The file name of `path` without its extension (empty when it has none).
pub fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads every record of a `.jsonl` or `.parquet` file into [`Problem`]s using `mapping`.
/// Ids must be unique within the file.
pub fn load_problems(path: &Path, mapping: &ColumnMapping) -> Result<Vec<Problem>> {
    let mut wanted = vec![mapping.problem.clone(), mapping.answer.clone()];
    wanted.extend(mapping.id.clone());
    wanted.extend(mapping.metadata.iter().cloned());
    let records = read_records(path, Some(&wanted))?;
    let mut seen = HashSet::new();
    let mut problems = Vec::with_capacity(records.len());
    for (location, record) in &records {
        let fields = RecordFields {
            path,
            location: *location,
            record,
        };
        let problem = fields.problem(mapping)?;
        if !seen.insert(problem.id.clone()) {
            return Err(DataError::DuplicateId {
                path: path.to_path_buf(),
                location: *location,
                field: mapping
                    .id
                    .clone()
                    .unwrap_or_else(|| mapping.problem.clone()),
                id: problem.id,
            });
        }
        problems.push(problem);
    }
    Ok(problems)
}

/// The id of a problem without an id column: `<source>-<16 hex of sha256(source\nproblem)>`.
pub fn content_hash_id(source: &str, problem: &str) -> String {
    let digest = sha256_hex(format!("{source}\n{problem}").as_bytes());
    format!("{source}-{}", &digest[..16])
}

/// One input record being turned into a [`Problem`] (here, and for code problems in
/// [`super::code_sources`]), with its position for errors.
pub(crate) struct RecordFields<'a> {
    /// The file.
    pub(crate) path: &'a Path,
    /// The line or row of the record.
    pub(crate) location: Location,
    /// The record.
    pub(crate) record: &'a Map<String, Value>,
}

impl RecordFields<'_> {
    fn problem(&self, mapping: &ColumnMapping) -> Result<Problem> {
        let problem = self.text(&mapping.problem)?;
        if problem.trim().is_empty() {
            return Err(self.invalid(&mapping.problem, "the question is empty"));
        }
        let answer = self.answer(&mapping.answer, mapping.answer_format)?;
        let id = match &mapping.id {
            Some(column) => format!("{}{}", mapping.id_prefix, self.id(column)?),
            None => content_hash_id(&mapping.source, &problem),
        };
        let mut metadata = Map::new();
        for column in &mapping.metadata {
            metadata.insert(column.clone(), self.value(column)?.clone());
        }
        Ok(Problem {
            id,
            source: mapping.source.clone(),
            problem,
            answer,
            metadata,
        })
    }

    fn value(&self, field: &str) -> Result<&Value> {
        self.record
            .get(field)
            .ok_or_else(|| DataError::MissingField {
                path: self.path.to_path_buf(),
                location: self.location,
                field: field.to_string(),
            })
    }

    /// The value of `field`; missing or null is an error.
    pub(crate) fn non_null(&self, field: &str) -> Result<&Value> {
        match self.value(field)? {
            Value::Null => Err(DataError::NullValue {
                path: self.path.to_path_buf(),
                location: self.location,
                field: field.to_string(),
            }),
            value => Ok(value),
        }
    }

    /// A "wrong type" error for `field`, which holds `found`.
    pub(crate) fn wrong_type(&self, field: &str, expected: &str, found: &Value) -> DataError {
        DataError::WrongType {
            path: self.path.to_path_buf(),
            location: self.location,
            field: field.to_string(),
            expected: expected.to_string(),
            found: json_type_name(found).to_string(),
        }
    }

    /// An "invalid value" error for `field`.
    pub(crate) fn invalid(&self, field: &str, message: &str) -> DataError {
        DataError::InvalidValue {
            path: self.path.to_path_buf(),
            location: self.location,
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    /// The string `field`.
    pub(crate) fn text(&self, field: &str) -> Result<String> {
        match self.non_null(field)? {
            Value::String(text) => Ok(text.clone()),
            other => Err(self.wrong_type(field, "string", other)),
        }
    }

    /// The non-negative integer `field`.
    pub(crate) fn integer(&self, field: &str) -> Result<u64> {
        let value = self.non_null(field)?;
        value
            .as_u64()
            .ok_or_else(|| self.wrong_type(field, "non-negative integer", value))
    }

    /// The array of strings `field`.
    pub(crate) fn strings(&self, field: &str) -> Result<Vec<String>> {
        let value = self.non_null(field)?;
        let strings = match value {
            Value::Array(items) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        };
        strings.ok_or_else(|| self.wrong_type(field, "array of strings", value))
    }

    fn id(&self, field: &str) -> Result<String> {
        match self.non_null(field)? {
            Value::String(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            Value::String(_) => Err(self.invalid(field, "the id is empty")),
            Value::Number(number) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
            other => Err(self.wrong_type(field, "string or integer", other)),
        }
    }

    fn answer(&self, field: &str, format: AnswerFormat) -> Result<String> {
        let value = self.non_null(field)?;
        match (format, value) {
            (AnswerFormat::Text, Value::String(text)) => Ok(text.trim().to_string()),
            (AnswerFormat::Text | AnswerFormat::Number, Value::Number(number)) => {
                Ok(canonical_number(&number.to_string()).unwrap_or_else(|| number.to_string()))
            }
            (AnswerFormat::Number, Value::String(text)) => canonical_number(text.trim())
                .ok_or_else(|| self.invalid(field, &format!("`{text}` is not a number"))),
            (AnswerFormat::Gsm8k, Value::String(text)) => {
                let (_, gold) = text
                    .rsplit_once("####")
                    .ok_or_else(|| self.invalid(field, "no `####` before the final answer"))?;
                let gold = gold.trim().replace(',', "");
                if gold.is_empty() {
                    return Err(self.invalid(field, "nothing after `####`"));
                }
                Ok(gold)
            }
            (AnswerFormat::Boxed, Value::String(text)) => crate::verify::extract::last_boxed(text)
                .map(|found| found.answer)
                .filter(|answer| !answer.is_empty())
                .ok_or_else(|| self.invalid(field, "no \\boxed{} answer in the solution")),
            (AnswerFormat::Gsm8k | AnswerFormat::Boxed, other) => {
                Err(self.wrong_type(field, "string", other))
            }
            (_, other) => Err(self.wrong_type(field, "string or number", other)),
        }
    }
}

/// Canonical text of a number: integers without sign noise, leading zeros or `.0`; other
/// finite numbers as Rust prints the `f64`. `None` when `text` is not a number.
pub fn canonical_number(text: &str) -> Option<String> {
    if let Ok(integer) = text.parse::<i128>() {
        return Some(integer.to_string());
    }
    let float: f64 = text.parse().ok().filter(|f: &f64| f.is_finite())?;
    if float.fract() == 0.0 && float.abs() < 9.0e15 {
        Some(format!("{}", float as i64))
    } else {
        Some(float.to_string())
    }
}

pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The lowercased extension of `path` (`""` when it has none): how data files are told apart.
pub fn file_extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// Records of a file as JSON objects with their locations. For Parquet, `columns` names the
/// columns to read (each must be a scalar column); `None` reads every scalar column and skips
/// nested ones.
pub(crate) fn read_records(
    path: &Path,
    columns: Option<&[String]>,
) -> Result<Vec<(Location, Map<String, Value>)>> {
    let records = match file_extension(path).as_str() {
        "jsonl" | "json" => read_jsonl(path)?,
        "parquet" => read_parquet(path, columns)?,
        _ => {
            return Err(DataError::UnsupportedFileType {
                path: path.to_path_buf(),
            })
        }
    };
    if records.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(records)
}

/// Calls `visit` with every line of a UTF-8 text file (without its `\n` or `\r\n`) and its
/// 1-based number, reading one line at a time, so a file of any size needs the memory of its
/// longest line. Invalid UTF-8 is an error naming the line, the byte offset in the file and,
/// when the line parses as JSON once repaired, the field holding the bad bytes.
pub(crate) fn for_each_line(
    path: &Path,
    mut visit: impl FnMut(Location, &str) -> Result<()>,
) -> Result<()> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut bytes = Vec::new();
    let (mut number, mut line_start) = (0, 0);
    loop {
        bytes.clear();
        let read = reader
            .read_until(b'\n', &mut bytes)
            .map_err(|e| DataError::io(path, e))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let location = Location::Line(number);
        let content = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        let line = std::str::from_utf8(content).map_err(|error| {
            invalid_utf8_error(path, content, location, line_start + error.valid_up_to())
        })?;
        visit(location, line)?;
        line_start += read;
    }
}

/// Parses a JSONL file; blank lines are skipped.
fn read_jsonl(path: &Path) -> Result<Vec<(Location, Map<String, Value>)>> {
    let mut records = Vec::new();
    for_each_line(path, |location, line| {
        if line.trim().is_empty() {
            return Ok(());
        }
        let value: Value =
            serde_json::from_str(line).map_err(|error| DataError::MalformedJson {
                path: path.to_path_buf(),
                location,
                message: error.to_string(),
            })?;
        match value {
            Value::Object(record) => {
                records.push((location, record));
                Ok(())
            }
            other => Err(DataError::MalformedJson {
                path: path.to_path_buf(),
                location,
                message: format!("expected a JSON object, found {}", json_type_name(&other)),
            }),
        }
    })?;
    Ok(records)
}

/// The error for invalid UTF-8 in `line` (at `location`) at `byte_offset` of the file, naming
/// the field holding the bad bytes when the line parses as JSON once repaired.
fn invalid_utf8_error(
    path: &Path,
    line: &[u8],
    location: Location,
    byte_offset: usize,
) -> DataError {
    let repaired = String::from_utf8_lossy(line);
    let field = match serde_json::from_str::<Value>(&repaired) {
        Ok(Value::Object(record)) => record
            .iter()
            .find(|(_, value)| value.to_string().contains('\u{FFFD}'))
            .map(|(key, _)| key.clone()),
        _ => None,
    };
    DataError::InvalidUtf8 {
        path: path.to_path_buf(),
        location,
        byte_offset,
        field,
    }
}

/// Reads a Parquet file's scalar columns into JSON records.
fn read_parquet(
    path: &Path,
    columns: Option<&[String]>,
) -> Result<Vec<(Location, Map<String, Value>)>> {
    let mut records = Vec::new();
    for_each_batch(path, None, |view| {
        let names = columns.map_or_else(|| view.names(), <[String]>::to_vec);
        let mut arrays = Vec::with_capacity(names.len());
        for name in &names {
            let array = view.column(name)?;
            if columns.is_some() || is_scalar_type(array.data_type()) {
                arrays.push((name, array));
            }
        }
        for row in 0..view.num_rows() {
            let mut record = Map::new();
            for (name, array) in &arrays {
                let value = cell_to_json(array, row).ok_or_else(|| {
                    view.wrong_type(name, "string, integer, float or boolean", array.data_type())
                })?;
                record.insert(name.to_string(), value);
            }
            records.push((view.location(row), record));
        }
        Ok(())
    })?;
    Ok(records)
}
