//! The second pass: the input rows read again, each joined with its candidate's verdict, and
//! written to `accepted/` and `rejected/` in (problem id, sample index) order — the order and
//! bytes of a filter that held everything in memory — with bounded memory.
//!
//! Rows are gathered until `buffer_bytes` of trace text; an input that fits is sorted in
//! memory and written directly. A larger one is cut into sorted runs, each spilled to a
//! Parquet file in the hidden [`RUNS_DIR`] with small row groups but the last, which stays in
//! memory, and the runs are merged (a k-way merge holding one row group per spilled run). More
//! than [`MERGE_FAN_IN`] spilled runs are first merged [`MERGE_FAN_IN`] at a time into longer
//! runs, so the merge's memory does not grow with the input. The runs are removed when the pass
//! ends and at the start of the next run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::data::columns::{for_each_batch, BatchColumns};
use crate::data::schema::{rows_to_batch, ArrowRow, FilteredRow, RowKey, TraceRow};
use crate::data::shards::{ShardOptions, ShardWriter};
use crate::data::{DataError, Result};

use super::input::{text_bytes, InputFiles};
use super::output::{ACCEPTED_DIR, REJECTED_DIR};
use super::Candidate;

/// Hidden folder of the output directory that holds the sorted runs while they are merged.
pub const RUNS_DIR: &str = ".sort-runs";

/// Fewest and most rows per row group (and per read) of a run file; between them the size is
/// chosen so that a merge, holding one row group of each of its runs, needs half the sort
/// buffer.
const RUN_ROW_GROUP: (usize, usize) = (8, 4096);

/// Most spilled runs one merge reads at once.
const MERGE_FAN_IN: usize = 16;

/// How the rows are sorted.
#[derive(Debug, Clone)]
pub struct Sorting {
    /// Trace text gathered before a run is spilled.
    pub buffer_bytes: usize,
    /// Where runs are spilled.
    pub runs_dir: PathBuf,
}

/// Writes every input row with its verdict, in key order, into `out`'s `accepted/` and
/// `rejected/` shard directories (resuming them: rows already written are skipped).
pub(crate) fn write_sorted(
    input: &InputFiles,
    candidates: &[Candidate],
    out: &Path,
    options: ShardOptions,
    sorting: &Sorting,
    bar: &ProgressBar,
) -> Result<()> {
    let mut sink = SplitSink {
        accepted: ShardWriter::open(&out.join(ACCEPTED_DIR), options.clone())?,
        rejected: ShardWriter::open(&out.join(REJECTED_DIR), options)?,
        bar,
    };
    remove_runs(&sorting.runs_dir)?;
    // rank[position] = the sorted index of the input's row `position`.
    let mut rank = vec![0u32; candidates.len()];
    for (index, candidate) in candidates.iter().enumerate() {
        rank[candidate.facts.position as usize] = index as u32;
    }
    let group_rows = run_row_group(input, sorting.buffer_bytes);
    let mut runs = Vec::new();
    let mut buffer: Vec<(u32, FilteredRow)> = Vec::new();
    let mut buffered_bytes = 0;
    // next[file]: the global number of that file's next row.
    let mut next: Vec<u64> = input.starts.clone();
    std::thread::scope(|scope| -> Result<()> {
        // Decoding the input runs on its own thread, beside sorting and encoding.
        let (sender, receiver) = std::sync::mpsc::sync_channel(2);
        scope.spawn(move || read_batches(&input.files, &sender));
        for message in receiver {
            let (file, rows): (usize, Vec<TraceRow>) = message?;
            for row in rows {
                let index = rank[next[file] as usize];
                next[file] += 1;
                buffered_bytes += text_bytes(&row);
                buffer.push((index, candidates[index as usize].output_row(row)));
            }
            if buffered_bytes >= sorting.buffer_bytes {
                let number = runs.len();
                runs.push(spill_run(
                    &sorting.runs_dir,
                    number,
                    group_rows,
                    &mut buffer,
                )?);
                buffered_bytes = 0;
            }
        }
        Ok(())
    })?;
    for (file, path) in input.files.iter().enumerate() {
        if next[file] != input.starts[file + 1] {
            return Err(DataError::Manifest {
                path: path.clone(),
                message: "the shard changed while it was being filtered".into(),
            });
        }
    }
    buffer.sort_unstable_by_key(|(index, _)| *index);
    let last: Vec<FilteredRow> = buffer.into_iter().map(|(_, row)| row).collect();
    if runs.is_empty() {
        for row in last {
            sink.write(row)?;
        }
    } else {
        let mut next_number = runs.len();
        while runs.len() > MERGE_FAN_IN {
            let group: Vec<PathBuf> = runs.drain(..MERGE_FAN_IN).collect();
            let mut merged = RunWriter::create(&sorting.runs_dir, next_number, group_rows)?;
            next_number += 1;
            merge_runs(&group, group_rows, Vec::new(), &mut |row| merged.push(row))?;
            runs.push(merged.finish()?);
            for path in group {
                fs::remove_file(&path).map_err(|e| DataError::io(&path, e))?;
            }
        }
        // The last run stays in memory and joins the merge.
        merge_runs(&runs, group_rows, last, &mut |row| sink.write(row))?;
        remove_runs(&sorting.runs_dir)?;
    }
    sink.finish()
}

/// A batch of rows of one file (by index), or the error that ended the reading.
type Batch = Result<(usize, Vec<TraceRow>)>;

/// Decodes every file in order and sends its rows a batch at a time; stops at the first error
/// (sent on) or when the receiver is gone.
fn read_batches(files: &[PathBuf], sender: &std::sync::mpsc::SyncSender<Batch>) {
    for (file, path) in files.iter().enumerate() {
        let read = for_each_batch(path, None, |columns| {
            let rows = TraceRow::from_columns(columns)?;
            sender
                .send(Ok((file, rows)))
                .map_err(|_| DataError::InvalidConfig("the writer stopped".into()))
        });
        if let Err(error) = read {
            let _ = sender.send(Err(error));
            return;
        }
    }
}

/// The accepted and rejected shard writers; a row goes to the first when it has no reason.
struct SplitSink<'a> {
    accepted: ShardWriter<FilteredRow>,
    rejected: ShardWriter<FilteredRow>,
    bar: &'a ProgressBar,
}

impl SplitSink<'_> {
    fn write(&mut self, row: FilteredRow) -> Result<()> {
        if row.reject_reasons.is_empty() {
            self.accepted.write(row)?;
        } else {
            self.rejected.write(row)?;
        }
        self.bar.inc(1);
        Ok(())
    }

    fn finish(self) -> Result<()> {
        self.accepted.finish()?;
        self.rejected.finish()?;
        Ok(())
    }
}

/// Rows per row group of the run files: a merge holds one group of each of its runs (the
/// `input.text_bytes / buffer_bytes` runs, at most [`MERGE_FAN_IN`] and the last) in half the
/// buffer (within [`RUN_ROW_GROUP`]).
fn run_row_group(input: &InputFiles, buffer_bytes: usize) -> usize {
    let rows = input.total_rows().max(1);
    let runs = input
        .text_bytes
        .div_ceil(buffer_bytes.max(1) as u64)
        .clamp(1, MERGE_FAN_IN as u64 + 1);
    let row_bytes = (input.text_bytes / rows).max(1);
    let rows_per_group = (buffer_bytes as u64 / 2) / (runs * row_bytes);
    (rows_per_group as usize).clamp(RUN_ROW_GROUP.0, RUN_ROW_GROUP.1)
}

/// Sorts `buffer`, writes it as run number `number` in row groups of `group_rows`, and
/// empties it.
fn spill_run(
    dir: &Path,
    number: usize,
    group_rows: usize,
    buffer: &mut Vec<(u32, FilteredRow)>,
) -> Result<PathBuf> {
    buffer.sort_unstable_by_key(|(index, _)| *index);
    let mut run = RunWriter::create(dir, number, group_rows)?;
    for (_, row) in buffer.drain(..) {
        run.push(row)?;
    }
    run.finish()
}

/// A run file being written, a row group of `group_rows` rows at a time. Run files are read
/// once, by this pass: fast Snappy compression, no dictionaries, no statistics.
struct RunWriter {
    path: PathBuf,
    writer: ArrowWriter<File>,
    pending: Vec<FilteredRow>,
    group_rows: usize,
}

impl RunWriter {
    /// Starts run number `number` in `dir`.
    fn create(dir: &Path, number: usize, group_rows: usize) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let path = dir.join(format!("run-{number:05}.parquet"));
        let file = File::create(&path).map_err(|e| DataError::io(&path, e))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(group_rows))
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .build();
        let writer = ArrowWriter::try_new(file, FilteredRow::schema(), Some(properties))
            .map_err(|cause| run_error(&path, cause))?;
        Ok(RunWriter {
            path,
            writer,
            pending: Vec::with_capacity(group_rows),
            group_rows,
        })
    }

    /// Adds the next row (rows come in key order).
    fn push(&mut self, row: FilteredRow) -> Result<()> {
        self.pending.push(row);
        if self.pending.len() >= self.group_rows {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let batch = rows_to_batch(&self.pending, &self.path)?;
            self.writer
                .write(&batch)
                .map_err(|cause| run_error(&self.path, cause))?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Closes the file and returns its path.
    fn finish(mut self) -> Result<PathBuf> {
        self.write_pending()?;
        self.writer
            .close()
            .map_err(|cause| run_error(&self.path, cause))?;
        Ok(self.path)
    }
}

/// A Parquet error about the run file `path`.
fn run_error(path: &Path, cause: parquet::errors::ParquetError) -> DataError {
    DataError::Parquet {
        path: path.to_path_buf(),
        cause,
    }
}

/// One run being merged: its reader and the rows of its current row group.
struct RunCursor {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    pending: VecDeque<FilteredRow>,
    rows_read: usize,
}

impl RunCursor {
    fn open(path: &Path, group_rows: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|cause| run_error(path, cause))?
            .with_batch_size(group_rows)
            .build()
            .map_err(|cause| run_error(path, cause))?;
        Ok(RunCursor {
            path: path.to_path_buf(),
            reader,
            pending: VecDeque::new(),
            rows_read: 0,
        })
    }

    /// The run's next row, reading its next row group when the current one is used up.
    fn next_row(&mut self) -> Result<Option<FilteredRow>> {
        if self.pending.is_empty() {
            if let Some(batch) = self.reader.next() {
                let batch = batch.map_err(|cause| DataError::Arrow {
                    path: self.path.clone(),
                    cause,
                })?;
                let columns = BatchColumns::new(&batch, &self.path, self.rows_read);
                self.pending.extend(FilteredRow::from_columns(&columns)?);
                self.rows_read += batch.num_rows();
            }
        }
        Ok(self.pending.pop_front())
    }
}

/// A sorted run being merged: spilled to a file, or the last one, still in memory.
enum Run {
    Spilled(RunCursor),
    InMemory(std::vec::IntoIter<FilteredRow>),
}

impl Run {
    fn next_row(&mut self) -> Result<Option<FilteredRow>> {
        match self {
            Run::Spilled(cursor) => cursor.next_row(),
            Run::InMemory(rows) => Ok(rows.next()),
        }
    }
}

/// Merges the spilled runs (row groups of `group_rows`) and the sorted rows `last`, handing
/// the rows to `emit` in key order.
fn merge_runs(
    spilled: &[PathBuf],
    group_rows: usize,
    last: Vec<FilteredRow>,
    emit: &mut dyn FnMut(FilteredRow) -> Result<()>,
) -> Result<()> {
    let mut runs = spilled
        .iter()
        .map(|path| RunCursor::open(path, group_rows).map(Run::Spilled))
        .collect::<Result<Vec<_>>>()?;
    runs.push(Run::InMemory(last.into_iter()));
    let mut heads: Vec<Option<FilteredRow>> = Vec::with_capacity(runs.len());
    let mut heap: BinaryHeap<Reverse<(RowKey, usize)>> = BinaryHeap::new();
    for (number, run) in runs.iter_mut().enumerate() {
        let head = run.next_row()?;
        if let Some(row) = &head {
            heap.push(Reverse((row.key(), number)));
        }
        heads.push(head);
    }
    while let Some(Reverse((_, number))) = heap.pop() {
        let Some(row) = heads[number].take() else {
            continue;
        };
        emit(row)?;
        heads[number] = runs[number].next_row()?;
        if let Some(next) = &heads[number] {
            heap.push(Reverse((next.key(), number)));
        }
    }
    Ok(())
}

/// Removes the run folder and everything in it, if it exists.
fn remove_runs(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    Ok(())
}
