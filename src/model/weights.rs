//! Named weight tensors in Hugging Face naming, with the file each came from.
//!
//! Loaders (safetensors, sharded safetensors, llama2.c) produce a [`Weights`]; the decoder takes its
//! tensors by name and shape, so a missing or misshapen tensor is reported with its file and name.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::error::{ModelError, Result};

/// A set of named tensors and, for error messages, the file that holds (or should hold) each.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
    file_of: BTreeMap<String, String>,
    default_file: String,
}

impl Weights {
    /// An empty set whose missing tensors are reported against `default_file`.
    pub fn new(default_file: impl Into<String>) -> Self {
        Weights {
            default_file: default_file.into(),
            ..Default::default()
        }
    }

    /// Adds a tensor that came from `file`.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor, file: impl Into<String>) {
        let name = name.into();
        self.file_of.insert(name.clone(), file.into());
        self.tensors.insert(name, tensor);
    }

    /// Records that `name` is expected in `file` (from a sharded index) without loading it.
    pub fn expect_in(&mut self, name: impl Into<String>, file: impl Into<String>) {
        self.file_of.insert(name.into(), file.into());
    }

    /// The file that holds `name`, or the default file when none was recorded.
    pub fn file_of(&self, name: &str) -> &str {
        self.file_of
            .get(name)
            .map_or(&self.default_file, String::as_str)
    }

    /// The tensor `name`, checked against `shape` and converted to `dtype`.
    pub fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let tensor = self.tensors.get(name).ok_or_else(|| ModelError::Weights {
            file: self.file_of(name).to_string(),
            tensor: name.to_string(),
            message: format!("missing (expected shape {shape:?})"),
        })?;
        if tensor.dims() != shape {
            return Err(ModelError::Weights {
                file: self.file_of(name).to_string(),
                tensor: name.to_string(),
                message: format!(
                    "has shape {:?}, but config.json implies {shape:?}",
                    tensor.dims()
                ),
            });
        }
        Ok(tensor.to_dtype(dtype)?)
    }

    /// Checks that the tensors are exactly those named in `expected`, apart from names `ignorable`
    /// accepts; the error lists every missing tensor, or else every tensor nothing would use.
    pub fn check_accounted_for(
        &self,
        expected: &[(String, Vec<usize>)],
        ignorable: impl Fn(&str) -> bool,
    ) -> Result<()> {
        check_names_accounted_for(
            expected,
            self.tensors.keys().map(String::as_str),
            |name| self.file_of(name).to_string(),
            ignorable,
        )
    }

    /// Whether a tensor named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Iterates over (name, tensor) in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.tensors.iter()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The dtype of the stored tensors (of the first one; loaders store one dtype).
    pub fn dtype(&self) -> Option<DType> {
        self.tensors.values().next().map(Tensor::dtype)
    }

    /// Reads every tensor of one safetensors file onto `device`.
    pub fn read_safetensors(&mut self, path: &Path, device: &Device) -> Result<()> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            cause: source,
        })?;
        let loaded = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
            ModelError::Weights {
                file: file.clone(),
                tensor: "(header)".into(),
                message: format!("not a readable safetensors file: {e}"),
            }
        })?;
        for (name, tensor) in loaded {
            self.insert(name, tensor, file.clone());
        }
        Ok(())
    }
}

/// Checks that the `present` tensor names are exactly those named in `expected`, apart from
/// names `ignorable` accepts; the error (naming the file `file_of` gives) lists every missing
/// tensor, or else every tensor nothing would use.
pub fn check_names_accounted_for<'a>(
    expected: &[(String, Vec<usize>)],
    present: impl Iterator<Item = &'a str>,
    file_of: impl Fn(&str) -> String,
    ignorable: impl Fn(&str) -> bool,
) -> Result<()> {
    let expected_names: std::collections::BTreeSet<&str> =
        expected.iter().map(|(name, _)| name.as_str()).collect();
    let present: std::collections::BTreeSet<&str> = present.collect();
    let missing: Vec<&str> = expected_names
        .iter()
        .copied()
        .filter(|name| !present.contains(name))
        .collect();
    if let Some(first) = missing.first() {
        return Err(ModelError::Weights {
            file: file_of(first),
            tensor: name_list(&missing),
            message: format!(
                "{} tensor(s) config.json implies are missing from the checkpoint{}",
                missing.len(),
                shown_note(missing.len())
            ),
        });
    }
    let unused: Vec<&str> = present
        .iter()
        .copied()
        .filter(|name| !expected_names.contains(name) && !ignorable(name))
        .collect();
    if let Some(first) = unused.first() {
        return Err(ModelError::Weights {
            file: file_of(first),
            tensor: name_list(&unused),
            message: format!(
                "{} tensor(s) in the checkpoint are not used by the model config.json describes{} \
                 (a flag such as attention_bias or mlp_bias may be wrong)",
                unused.len(),
                shown_note(unused.len())
            ),
        });
    }
    Ok(())
}

/// How many names an error lists.
const NAMES_SHOWN: usize = 8;

/// The first [`NAMES_SHOWN`] names, for the `tensor` of an error (which quotes it in backticks).
fn name_list(names: &[&str]) -> String {
    names[..names.len().min(NAMES_SHOWN)].join("`, `")
}

/// "(the first 8 shown)" when a list was cut.
fn shown_note(count: usize) -> String {
    if count > NAMES_SHOWN {
        format!(" (the first {NAMES_SHOWN} shown)")
    } else {
        String::new()
    }
}
