//! Tokenised SFT examples kept on disk, so that training on a million long traces needs the
//! memory of a batch, not of the dataset: each example's token ids (`u32`, little-endian)
//! followed by its loss mask (one byte per token) are appended to one file, and a batch reads
//! back only its own examples. What stays in memory per example is a [`StoredExample`]: its
//! offset, its length and its origin.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::Device;

use super::sft_data::{Batch, BatchPlan, SftExample};
use crate::data::{DataError, Result};

/// Bytes one token takes in the file: its id and its loss-mask byte.
const BYTES_PER_TOKEN: u64 = 5;

/// Where one example lies in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredExample {
    /// Where the example came from (see [`SftExample::id`]).
    pub id: String,
    /// Byte offset of its first token id.
    offset: u64,
    /// Its number of tokens.
    tokens: usize,
}

impl StoredExample {
    /// Its number of tokens.
    pub fn len(&self) -> usize {
        self.tokens
    }

    /// Whether it has no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }
}

/// Removes the store's file when dropped, whether the store was finished or abandoned.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The store while examples are appended.
pub struct TokenStoreWriter {
    path: RemoveOnDrop,
    file: BufWriter<File>,
    end: u64,
}

impl TokenStoreWriter {
    /// Starts a new store at `path` (replacing any file there: a store outlives no run).
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| DataError::io(path, e))?;
        Ok(TokenStoreWriter {
            path: RemoveOnDrop(path.to_path_buf()),
            file: BufWriter::with_capacity(1 << 20, file),
            end: 0,
        })
    }

    /// Appends `example` and says where it lies.
    pub fn append(&mut self, example: &SftExample) -> Result<StoredExample> {
        debug_assert_eq!(example.tokens.len(), example.loss_mask.len());
        let offset = self.end;
        let mut bytes = Vec::with_capacity(example.tokens.len() * BYTES_PER_TOKEN as usize);
        for token in &example.tokens {
            bytes.extend_from_slice(&token.to_le_bytes());
        }
        bytes.extend_from_slice(&example.loss_mask);
        self.file
            .write_all(&bytes)
            .map_err(|e| DataError::io(&self.path.0, e))?;
        self.end += bytes.len() as u64;
        Ok(StoredExample {
            id: example.id.clone(),
            offset,
            tokens: example.tokens.len(),
        })
    }

    /// Ends the writing; the examples can then be read back.
    pub fn finish(self) -> Result<TokenStore> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| DataError::io(&self.path.0, e.into_error()))?;
        Ok(TokenStore {
            path: self.path,
            file,
        })
    }
}

/// A finished store; its file is removed when it is dropped.
pub struct TokenStore {
    path: RemoveOnDrop,
    file: File,
}

impl TokenStore {
    /// Reads one example back.
    pub fn read(&self, stored: &StoredExample) -> Result<SftExample> {
        let mut bytes = vec![0u8; stored.tokens * BYTES_PER_TOKEN as usize];
        self.file
            .read_exact_at(&mut bytes, stored.offset)
            .map_err(|e| DataError::io(&self.path.0, e))?;
        let (ids, mask) = bytes.split_at(stored.tokens * 4);
        Ok(SftExample {
            id: stored.id.clone(),
            tokens: ids
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            loss_mask: mask.to_vec(),
        })
    }

    /// The tensors of the batch `plan` over `examples` (see [`Batch::new`]), reading only the
    /// examples it holds.
    pub fn batch(
        &self,
        examples: &[StoredExample],
        plan: &BatchPlan,
        device: &Device,
    ) -> anyhow::Result<Batch> {
        let mut read = Vec::new();
        let local_plan: BatchPlan = plan
            .iter()
            .map(|row| {
                row.iter()
                    .map(|&index| {
                        read.push(self.read(&examples[index])?);
                        Ok(read.len() - 1)
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        Ok(Batch::new(&read, &local_plan, device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(id: &str, tokens: Vec<u32>) -> SftExample {
        let loss_mask = (0..tokens.len()).map(|i| u8::from(i % 3 != 0)).collect();
        SftExample {
            id: id.into(),
            tokens,
            loss_mask,
        }
    }

    #[test]
    fn examples_read_back_as_written_and_the_file_goes_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let examples = [
            example("a", vec![7, 0, u32::MAX, 151_643]),
            example("empty", vec![]),
            example("b", (0..1000).collect()),
        ];
        let mut writer = TokenStoreWriter::create(&path).unwrap();
        let stored: Vec<StoredExample> =
            examples.iter().map(|e| writer.append(e).unwrap()).collect();
        let store = writer.finish().unwrap();
        // Read back out of order, as batches do.
        for index in [2, 0, 1] {
            assert_eq!(store.read(&stored[index]).unwrap(), examples[index]);
            assert_eq!(stored[index].len(), examples[index].tokens.len());
        }
        assert!(path.exists());
        drop(store);
        assert!(!path.exists(), "a dropped store leaves no file");
        let mut abandoned = TokenStoreWriter::create(&path).unwrap();
        abandoned.append(&examples[0]).unwrap();
        drop(abandoned);
        assert!(!path.exists(), "an abandoned store leaves no file");
    }

    #[test]
    fn a_batch_reads_its_own_examples() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = TokenStoreWriter::create(&dir.path().join("tokens")).unwrap();
        let examples = [
            example("a", vec![1, 2, 3]),
            example("b", vec![4, 5]),
            example("c", vec![6, 7, 8, 9]),
        ];
        let stored: Vec<StoredExample> =
            examples.iter().map(|e| writer.append(e).unwrap()).collect();
        let store = writer.finish().unwrap();
        let plan = vec![vec![2], vec![0, 1]];
        let batch = store.batch(&stored, &plan, &Device::Cpu).unwrap();
        let expected = Batch::new(&examples, &plan, &Device::Cpu).unwrap();
        assert_eq!(
            batch.ids.to_vec2::<u32>().unwrap(),
            expected.ids.to_vec2::<u32>().unwrap()
        );
        assert_eq!(
            batch.loss_mask.to_vec2::<f32>().unwrap(),
            expected.loss_mask.to_vec2::<f32>().unwrap()
        );
        assert_eq!(batch.example_lengths, vec![4, 3, 2]);
    }
}
