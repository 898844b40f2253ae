//! The errors of loading, saving and running a model; each names the file and the tensor or field.

use std::path::PathBuf;

/// Everything that can go wrong between a model directory on disk and a forward pass.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        cause: std::io::Error,
    },
    /// `config.json` (or a similar JSON file) is malformed or lacks a field.
    #[error("{file}: field `{field}`: {message}")]
    Config {
        /// The file.
        file: String,
        /// The field, dotted for nested ones.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A weight is missing, has the wrong shape, or its file is unreadable.
    #[error("{file}: tensor `{tensor}`: {message}")]
    Weights {
        /// The safetensors (or llama2.c) file.
        file: String,
        /// The tensor name in Hugging Face naming.
        tensor: String,
        /// What is wrong with it.
        message: String,
    },
    /// The tokenizer is missing or cannot be parsed.
    #[error("{file}: {message}")]
    Tokenizer {
        /// The tokenizer file (or the directory that lacks one).
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// A chat template failed to compile or render.
    #[error("chat template from {origin}: {message}")]
    Template {
        /// Where the template came from.
        origin: String,
        /// The template engine's message.
        message: String,
    },
    /// A model reference that names no directory, file or cached hub repository.
    #[error("{0}")]
    NotFound(String),
    /// An argument outside what the model supports (e.g. a prompt longer than the context).
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result of model operations.
pub type Result<T> = std::result::Result<T, ModelError>;
