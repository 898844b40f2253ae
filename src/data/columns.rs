//! Typed, error-reporting access to the columns of an Arrow [`RecordBatch`] read from a file.
//! Every failure names the file, the row (0-based, counted from the start of the file) and the
//! column, as [`DataError`] requires.

use std::fs::File;
use std::path::Path;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array,
    LargeStringArray, ListArray, StringArray, StringViewArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;

use super::errors::{DataError, Location, Result};

/// One record batch of a file plus where it sits in that file, for error messages.
pub struct BatchColumns<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
    first_row: usize,
}

/// A string column in any of Arrow's three string layouts.
pub enum StrColumn<'a> {
    /// `Utf8` (32-bit offsets; what pyarrow and this crate write).
    Utf8(&'a StringArray),
    /// `LargeUtf8` (64-bit offsets).
    Large(&'a LargeStringArray),
    /// `Utf8View` (what Polars writes).
    View(&'a StringViewArray),
}

impl<'a> StrColumn<'a> {
    /// The value at `index`, `None` when null.
    pub fn get(&self, index: usize) -> Option<&'a str> {
        match self {
            StrColumn::Utf8(array) => array.is_valid(index).then(|| array.value(index)),
            StrColumn::Large(array) => array.is_valid(index).then(|| array.value(index)),
            StrColumn::View(array) => array.is_valid(index).then(|| array.value(index)),
        }
    }
}

/// Wraps a string-typed array, or returns `None` for any other type.
pub fn as_str_column(array: &ArrayRef) -> Option<StrColumn<'_>> {
    let any = array.as_any();
    match array.data_type() {
        DataType::Utf8 => any.downcast_ref().map(StrColumn::Utf8),
        DataType::LargeUtf8 => any.downcast_ref().map(StrColumn::Large),
        DataType::Utf8View => any.downcast_ref().map(StrColumn::View),
        _ => None,
    }
}

impl<'a> BatchColumns<'a> {
    /// Wraps `batch`, whose first row is row `first_row` of the file at `path`.
    pub fn new(batch: &'a RecordBatch, path: &'a Path, first_row: usize) -> Self {
        BatchColumns {
            batch,
            path,
            first_row,
        }
    }

    /// The batch's column names, in schema order.
    pub fn names(&self) -> Vec<String> {
        self.batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// Number of rows in the batch.
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The location of row `index` of this batch within its file.
    pub fn location(&self, index: usize) -> Location {
        Location::Row(self.first_row + index)
    }

    /// The column `name`, if the batch has it.
    pub fn get(&self, name: &str) -> Option<&'a ArrayRef> {
        self.batch.column_by_name(name)
    }

    /// The column `name`, or a [`DataError::MissingColumn`].
    pub fn column(&self, name: &str) -> Result<&'a ArrayRef> {
        self.batch.column_by_name(name).ok_or_else(|| {
            let available = self
                .batch
                .schema()
                .fields()
                .iter()
                .map(|field| field.name().as_str())
                .collect::<Vec<_>>()
                .join(", ");
            DataError::MissingColumn {
                path: self.path.to_path_buf(),
                column: name.to_string(),
                available,
            }
        })
    }

    /// A wrong-column-type error for `name`.
    pub fn wrong_type(&self, name: &str, expected: &str, found: &DataType) -> DataError {
        DataError::WrongColumnType {
            path: self.path.to_path_buf(),
            column: name.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    /// A null-value error for row `index` of column `name`.
    pub fn null_error(&self, name: &str, index: usize) -> DataError {
        DataError::NullValue {
            path: self.path.to_path_buf(),
            location: self.location(index),
            field: name.to_string(),
        }
    }

    /// An invalid-value error for row `index` of column `name`.
    pub fn invalid(&self, name: &str, index: usize, message: impl Into<String>) -> DataError {
        DataError::InvalidValue {
            path: self.path.to_path_buf(),
            location: self.location(index),
            field: name.to_string(),
            message: message.into(),
        }
    }

    /// The string column `name` (Utf8, LargeUtf8 or Utf8View).
    pub fn strings(&self, name: &str) -> Result<StrColumn<'a>> {
        let array = self.column(name)?;
        as_str_column(array).ok_or_else(|| self.wrong_type(name, "string", array.data_type()))
    }

    /// All values of the required string column `name`; a null is an error.
    pub fn required_strings(&self, name: &str) -> Result<Vec<&'a str>> {
        let column = self.strings(name)?;
        (0..self.num_rows())
            .map(|index| {
                column
                    .get(index)
                    .ok_or_else(|| self.null_error(name, index))
            })
            .collect()
    }

    /// Downcasts column `name` to the primitive array `T` of Arrow type `expected`.
    fn typed<T: 'static>(&self, name: &str, expected: DataType) -> Result<&'a T> {
        let array = self.column(name)?;
        if array.data_type() != &expected {
            return Err(self.wrong_type(name, &expected.to_string(), array.data_type()));
        }
        array
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| self.wrong_type(name, &expected.to_string(), array.data_type()))
    }

    /// All values of the required `UInt64` column `name`.
    pub fn required_u64(&self, name: &str) -> Result<Vec<u64>> {
        let array: &UInt64Array = self.typed(name, DataType::UInt64)?;
        self.collect_required(name, array, |a, i| a.value(i))
    }

    /// All values of the required `UInt32` column `name`.
    pub fn required_u32(&self, name: &str) -> Result<Vec<u32>> {
        let array: &UInt32Array = self.typed(name, DataType::UInt32)?;
        self.collect_required(name, array, |a, i| a.value(i))
    }

    /// All values of the `UInt32` column `name`, `None` where a value is null.
    pub fn nullable_u32(&self, name: &str) -> Result<Vec<Option<u32>>> {
        let array: &UInt32Array = self.typed(name, DataType::UInt32)?;
        Ok(array.iter().collect())
    }

    /// All values of the required `Float64` column `name`.
    pub fn required_f64(&self, name: &str) -> Result<Vec<f64>> {
        let array: &Float64Array = self.typed(name, DataType::Float64)?;
        self.collect_required(name, array, |a, i| a.value(i))
    }

    /// All values of the required `Boolean` column `name`.
    pub fn required_bool(&self, name: &str) -> Result<Vec<bool>> {
        let array: &BooleanArray = self.typed(name, DataType::Boolean)?;
        self.collect_required(name, array, |a, i| a.value(i))
    }

    /// The `List<Utf8>`-like column `name`: per row, the list of its non-null strings.
    pub fn required_string_lists(&self, name: &str) -> Result<Vec<Vec<String>>> {
        let array = self.column(name)?;
        let list = array
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| self.wrong_type(name, "list<string>", array.data_type()))?;
        let mut rows = Vec::with_capacity(list.len());
        for index in 0..list.len() {
            if list.is_null(index) {
                return Err(self.null_error(name, index));
            }
            let items = list.value(index);
            let strings = as_str_column(&items)
                .ok_or_else(|| self.wrong_type(name, "list<string>", array.data_type()))?;
            let mut row = Vec::with_capacity(items.len());
            for item in 0..items.len() {
                let value = strings
                    .get(item)
                    .ok_or_else(|| self.invalid(name, index, format!("item {item} is null")))?;
                row.push(value.to_string());
            }
            rows.push(row);
        }
        Ok(rows)
    }

    /// Collects every value of `array`, turning the first null into an error.
    fn collect_required<A: Array, T>(
        &self,
        name: &str,
        array: &A,
        value: impl Fn(&A, usize) -> T,
    ) -> Result<Vec<T>> {
        (0..array.len())
            .map(|index| {
                if array.is_null(index) {
                    Err(self.null_error(name, index))
                } else {
                    Ok(value(array, index))
                }
            })
            .collect()
    }
}

/// Whether [`cell_to_json`] can convert cells of this type: strings, integers, floats, booleans.
pub fn is_scalar_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int64
            | DataType::Int32
            | DataType::UInt64
            | DataType::UInt32
            | DataType::Float64
            | DataType::Float32
            | DataType::Boolean
    )
}

/// A scalar cell converted to JSON, for carrying arbitrary prompt-set columns as metadata.
/// `None` for types outside [`is_scalar_type`]; nulls become JSON `null`.
pub fn cell_to_json(array: &ArrayRef, index: usize) -> Option<serde_json::Value> {
    use serde_json::Value;
    if !is_scalar_type(array.data_type()) {
        return None;
    }
    if array.is_null(index) {
        return Some(Value::Null);
    }
    if let Some(strings) = as_str_column(array) {
        return strings.get(index).map(|s| Value::String(s.to_string()));
    }
    let any = array.as_any();
    match array.data_type() {
        DataType::Int64 => any
            .downcast_ref::<Int64Array>()
            .map(|a| Value::from(a.value(index))),
        DataType::Int32 => any
            .downcast_ref::<Int32Array>()
            .map(|a| Value::from(a.value(index))),
        DataType::UInt64 => any
            .downcast_ref::<UInt64Array>()
            .map(|a| Value::from(a.value(index))),
        DataType::UInt32 => any
            .downcast_ref::<UInt32Array>()
            .map(|a| Value::from(a.value(index))),
        DataType::Float64 => any
            .downcast_ref::<Float64Array>()
            .map(|a| Value::from(a.value(index))),
        DataType::Float32 => any
            .downcast_ref::<Float32Array>()
            .map(|a| Value::from(f64::from(a.value(index)))),
        DataType::Boolean => any
            .downcast_ref::<BooleanArray>()
            .map(|a| Value::Bool(a.value(index))),
        _ => None,
    }
}

/// Decoded bytes a batch of [`for_each_batch`] aims at: rows of long traces come a few at a
/// time, short rows up to [`MAX_BATCH_ROWS`] at a time.
const BATCH_BYTES: u64 = 16 << 20;

/// Most rows in one batch of [`for_each_batch`] (the Parquet reader's usual batch).
const MAX_BATCH_ROWS: u64 = 1024;

/// Rows per batch so that a batch of the `columns` read holds about [`BATCH_BYTES`], from the
/// uncompressed sizes the file's metadata records.
fn batch_rows(metadata: &ParquetMetaData, columns: Option<&[&str]>) -> usize {
    let rows = metadata.file_metadata().num_rows().max(1) as u64;
    let bytes: u64 = metadata
        .row_groups()
        .iter()
        .flat_map(|group| group.columns())
        .filter(|chunk| {
            columns.is_none_or(|wanted| {
                let root = chunk.column_path().parts().first();
                root.is_some_and(|root| wanted.contains(&root.as_str()))
            })
        })
        .map(|chunk| chunk.uncompressed_size().max(0) as u64)
        .sum();
    (BATCH_BYTES / (bytes / rows).max(1)).clamp(1, MAX_BATCH_ROWS) as usize
}

/// Opens a Parquet file for reading `columns` (all when `None`) and calls `visit` on each
/// batch with its position in the file; open and decode errors name the file. Batches hold
/// about 16 MiB of decoded data (at most 1,024 rows), so memory does not grow with the length
/// of the rows.
pub fn for_each_batch(
    path: &Path,
    columns: Option<&[&str]>,
    mut visit: impl FnMut(&BatchColumns<'_>) -> Result<()>,
) -> Result<()> {
    let parquet_error = |source| DataError::Parquet {
        path: path.to_path_buf(),
        cause: source,
    };
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_error)?;
    if let Some(columns) = columns {
        let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
        builder = builder.with_projection(mask);
    }
    let rows = batch_rows(builder.metadata(), columns);
    builder = builder.with_batch_size(rows);
    let mut first_row = 0;
    for batch in builder.build().map_err(parquet_error)? {
        let batch = batch.map_err(|source| DataError::Arrow {
            path: path.to_path_buf(),
            cause: source,
        })?;
        visit(&BatchColumns::new(&batch, path, first_row))?;
        first_row += batch.num_rows();
    }
    Ok(())
}
