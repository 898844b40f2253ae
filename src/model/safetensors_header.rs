//! Checking a Hugging Face directory's weights against its `config.json` from the safetensors
//! headers alone, without reading the tensors: every file's header parses, every tensor's byte
//! range lies inside its file and matches its dtype and shape (a truncated download fails here),
//! and the tensors are exactly the ones the config implies, with the shapes it implies.
//! `distill model inspect` reports this.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::load::{is_ignorable_tensor, weight_files};
use super::weights::check_names_accounted_for;

/// Headers larger than this are refused (the format's own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor as a safetensors header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorHeader {
    /// Its dtype as the header spells it (`F32`, `BF16`, …).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The file that holds it.
    pub file: PathBuf,
}

/// What [`check_dir_weights`] found: every tensor, all consistent with the config.
#[derive(Debug, Clone)]
pub struct CheckedWeights {
    /// Tensor name → its header entry.
    pub tensors: BTreeMap<String, TensorHeader>,
    /// The safetensors files read.
    pub files: Vec<PathBuf>,
}

/// Reads the headers of every safetensors file of the HF directory `dir` and checks them
/// against `config` (see the module docs); errors name the file and the tensor.
pub fn check_dir_weights(dir: &Path, config: &ModelConfig) -> Result<CheckedWeights> {
    let listed = weight_files(dir)?;
    let mut tensors = BTreeMap::new();
    for file in &listed.files {
        for (name, header) in read_header(file)? {
            tensors.insert(name, header);
        }
    }
    let expected = config.tensor_shapes();
    let file_of = |name: &str| {
        tensors
            .get(name)
            .map(|t: &TensorHeader| &t.file)
            .or_else(|| listed.expected_in.get(name))
            .unwrap_or(&listed.default_file)
            .display()
            .to_string()
    };
    check_names_accounted_for(
        &expected,
        tensors.keys().map(String::as_str),
        file_of,
        |name| is_ignorable_tensor(name, config.tie_word_embeddings),
    )?;
    for (name, shape) in &expected {
        let header = &tensors[name];
        if &header.shape != shape {
            return Err(ModelError::Weights {
                file: header.file.display().to_string(),
                tensor: name.clone(),
                message: format!(
                    "has shape {:?}, but config.json implies {shape:?}",
                    header.shape
                ),
            });
        }
    }
    Ok(CheckedWeights {
        tensors,
        files: listed.files,
    })
}

/// The tensors one safetensors file's header lists, each checked to lie inside the file with
/// the byte length its dtype and shape need.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, TensorHeader>> {
    let fail = |tensor: &str, message: String| ModelError::Weights {
        file: path.display().to_string(),
        tensor: tensor.to_string(),
        message,
    };
    let io = |cause| ModelError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(|_| {
        fail(
            "(header)",
            format!("only {file_len} bytes: not a safetensors file"),
        )
    })?;
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(fail(
            "(header)",
            format!("header length {header_len} does not fit the file's {file_len} bytes"),
        ));
    }
    let mut text = vec![0u8; header_len as usize];
    file.read_exact(&mut text).map_err(io)?;
    let header: BTreeMap<String, Value> = serde_json::from_slice(&text)
        .map_err(|e| fail("(header)", format!("the header is not a JSON object: {e}")))?;
    let data_len = file_len - 8 - header_len;
    let mut tensors = BTreeMap::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = entry["dtype"].as_str().unwrap_or_default().to_string();
        let shape: Option<Vec<usize>> = entry["shape"].as_array().and_then(|dims| {
            dims.iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        });
        let offsets: Option<Vec<u64>> = entry["data_offsets"]
            .as_array()
            .and_then(|o| o.iter().map(Value::as_u64).collect());
        let (Some(shape), Some([start, end])) = (shape, offsets.as_deref()) else {
            return Err(fail(&name, "needs dtype, shape and data_offsets".into()));
        };
        let Some(width) = dtype_bytes(&dtype) else {
            return Err(fail(&name, format!("unknown dtype `{dtype}`")));
        };
        let needed = shape.iter().product::<usize>() as u64 * width;
        if end < start || end - start != needed {
            return Err(fail(
                &name,
                format!(
                    "data_offsets [{start}, {end}] hold {} bytes, but {dtype} {shape:?} needs {needed}",
                    end.saturating_sub(*start)
                ),
            ));
        }
        if *end > data_len {
            return Err(fail(
                &name,
                format!(
                    "its bytes end at {end} but the file holds only {data_len} bytes of data \
                     (truncated?)"
                ),
            ));
        }
        tensors.insert(
            name,
            TensorHeader {
                dtype,
                shape,
                file: path.to_path_buf(),
            },
        );
    }
    Ok(tensors)
}

/// Bytes per element of a safetensors dtype.
fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}
