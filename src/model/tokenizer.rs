//! Tokenizers: Hugging Face `tokenizer.json` (through the `tokenizers` crate) with the special tokens
//! and chat template of `tokenizer_config.json`, or a llama2.c `tokenizer.bin`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chat_template::{ChatOptions, ChatTemplate, Message};
use super::config::parse_json;
use super::error::{ModelError, Result};
use super::llama2c::Llama2cTokenizer;

enum Backend {
    Hf(Box<tokenizers::Tokenizer>),
    Llama2c(Llama2cTokenizer),
}

/// Text ↔ token ids, plus the chat template that turns a conversation into a prompt.
pub struct Tokenizer {
    backend: Backend,
    chat_template: ChatTemplate,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Files this tokenizer was read from, copied verbatim when a model is saved.
    source_files: Vec<PathBuf>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("source_files", &self.source_files)
            .finish()
    }
}

impl Tokenizer {
    /// Loads the tokenizer of a model directory: `tokenizer.json` (+ `tokenizer_config.json`,
    /// `chat_template.jinja` when present), or a llama2.c `tokenizer.bin` when there is no tokenizer.json.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json);
        }
        let bin = dir.join("tokenizer.bin");
        if bin.is_file() {
            return Self::from_llama2c(&bin);
        }
        Err(ModelError::Tokenizer {
            file: json.display().to_string(),
            message:
                "missing: a model directory needs tokenizer.json (or a llama2.c tokenizer.bin)"
                    .into(),
        })
    }

    /// Loads `tokenizer.json` and, from the same directory, `tokenizer_config.json` and `chat_template.jinja`.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let hf = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            file: path.display().to_string(),
            message: format!("cannot parse: {e}"),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut source_files = vec![path.to_path_buf()];
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            source_files.push(config_path.clone());
            read_json(&config_path)?
        } else {
            Value::Null
        };
        let bos_token = special_token(&config, "bos_token");
        let eos_token = special_token(&config, "eos_token");
        let template_file = dir.join("chat_template.jinja");
        let chat_template = if template_file.is_file() {
            source_files.push(template_file.clone());
            let source =
                std::fs::read_to_string(&template_file).map_err(|source| ModelError::Io {
                    path: template_file.clone(),
                    cause: source,
                })?;
            ChatTemplate::new(
                &source,
                &template_file.display().to_string(),
                bos_token.clone(),
                eos_token.clone(),
            )?
        } else if let Some(source) = config.get("chat_template").and_then(Value::as_str) {
            let origin = format!("{} (chat_template)", config_path.display());
            ChatTemplate::new(source, &origin, bos_token.clone(), eos_token.clone())?
        } else {
            ChatTemplate::chatml(bos_token.clone(), eos_token.clone())
        };
        Ok(Tokenizer {
            backend: Backend::Hf(Box::new(hf)),
            chat_template,
            bos_token,
            eos_token,
            source_files,
        })
    }

    /// Loads a llama2.c `tokenizer.bin` (ChatML is used as its chat template).
    pub fn from_llama2c(path: &Path) -> Result<Self> {
        let tokenizer = Llama2cTokenizer::from_file(path)?;
        let bos = tokenizer.piece(Llama2cTokenizer::BOS).map(str::to_string);
        let eos = tokenizer.piece(Llama2cTokenizer::EOS).map(str::to_string);
        Ok(Tokenizer {
            backend: Backend::Llama2c(tokenizer),
            chat_template: ChatTemplate::chatml(bos.clone(), eos.clone()),
            bos_token: bos,
            eos_token: eos,
            source_files: vec![path.to_path_buf()],
        })
    }

    /// Replaces the chat template (e.g. the R1-Distill template for a tokenizer that lacks it).
    pub fn set_chat_template(&mut self, source: &str, origin: &str) -> Result<()> {
        self.chat_template = ChatTemplate::new(
            source,
            origin,
            self.bos_token.clone(),
            self.eos_token.clone(),
        )?;
        Ok(())
    }

    /// The chat template in use.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat_template
    }

    /// Renders a conversation with the model's chat template.
    pub fn render_chat(&self, messages: &[Message], options: &ChatOptions) -> Result<String> {
        self.chat_template.render(messages, options)
    }

    /// Token ids of `text`; `add_special_tokens` adds what the tokenizer adds around raw text (e.g. BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Hf(hf) => hf
                .encode(text, add_special_tokens)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| self.error(format!("cannot encode: {e}"))),
            Backend::Llama2c(t) => Ok(t.encode(text, add_special_tokens)),
        }
    }

    /// Text of `ids`; `skip_special_tokens` drops BOS/EOS and other special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        match &self.backend {
            Backend::Hf(hf) => hf
                .decode(ids, skip_special_tokens)
                .map_err(|e| self.error(format!("cannot decode: {e}"))),
            Backend::Llama2c(t) => Ok(t.decode(ids, skip_special_tokens)),
        }
    }

    /// The text `completion` adds after `prompt`: decodes both together and removes the prompt's text,
    /// so tokenizers that strip a leading space at the start of a text decode continuations correctly.
    pub fn decode_continuation(&self, prompt: &[u32], completion: &[u32]) -> Result<String> {
        let prompt_text = self.decode(prompt, false)?;
        let mut all = prompt.to_vec();
        all.extend_from_slice(completion);
        let all_text = self.decode(&all, false)?;
        let text = match all_text.strip_prefix(&prompt_text) {
            Some(rest) => rest.to_string(),
            None => self.decode(completion, false)?,
        };
        Ok(text)
    }

    /// Number of ids the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Hf(hf) => hf.get_vocab_size(true),
            Backend::Llama2c(t) => t.vocab_size(),
        }
    }

    /// The id of a token string, e.g. `"<|im_end|>"`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.backend {
            Backend::Hf(hf) => hf.token_to_id(token),
            Backend::Llama2c(t) => t.token_to_id(token),
        }
    }

    /// The BOS token string, when the tokenizer has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The EOS token string, when the tokenizer has one.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// The id of the EOS token, when it is in the vocabulary.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_to_id(t))
    }

    /// Files to copy into a saved model directory.
    pub fn source_files(&self) -> &[PathBuf] {
        &self.source_files
    }

    fn error(&self, message: String) -> ModelError {
        ModelError::Tokenizer {
            file: self
                .source_files
                .first()
                .map_or_else(|| "(tokenizer)".to_string(), |p| p.display().to_string()),
            message,
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        cause: source,
    })?;
    parse_json(&text, &path.display().to_string())
}

/// A special token of `tokenizer_config.json`, written either as a string or as an AddedToken object.
fn special_token(config: &Value, field: &str) -> Option<String> {
    match config.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}
