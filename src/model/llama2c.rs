//! llama2.c checkpoints (`.bin`, legacy version-0 export) and their `tokenizer.bin`.
//!
//! The checkpoint is converted to Hugging Face naming; its query/key projections are permuted from
//! llama2.c's interleaved RoPE pairs to the half-split layout, as transformers' conversion script does,
//! so the one decoder runs it unchanged.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Map;

use super::config::{Architecture, ModelConfig};
use super::error::{ModelError, Result};
use super::weights::Weights;

/// The seven int32 header fields of a llama2.c checkpoint.
#[derive(Debug, Clone, Copy)]
struct Header {
    dim: usize,
    hidden_dim: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    vocab_size: usize,
    shared_classifier: bool,
    seq_len: usize,
}

/// Reads a llama2.c checkpoint into a config (Llama architecture) and HF-named f32 weights.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<(ModelConfig, Weights)> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        cause: source,
    })?;
    let header = read_header(&bytes, &file)?;
    let config = config_of(&header);
    let mut reader = F32Reader {
        bytes: &bytes,
        offset: 28,
        file: &file,
    };
    let (d, hd, l) = (header.dim, header.hidden_dim, header.n_layers);
    let head_size = d / header.n_heads;
    let kv_dim = header.n_kv_heads * head_size;
    let embed = reader.take("token_embedding", &[header.vocab_size, d])?;
    let rms_att = reader.take("rms_att_weight", &[l, d])?;
    let wq = reader.take("wq", &[l, d, d])?;
    let wk = reader.take("wk", &[l, kv_dim, d])?;
    let wv = reader.take("wv", &[l, kv_dim, d])?;
    let wo = reader.take("wo", &[l, d, d])?;
    let rms_ffn = reader.take("rms_ffn_weight", &[l, d])?;
    let w1 = reader.take("w1", &[l, hd, d])?;
    let w2 = reader.take("w2", &[l, d, hd])?;
    let w3 = reader.take("w3", &[l, hd, d])?;
    let rms_final = reader.take("rms_final_weight", &[d])?;
    // freq_cis_real and freq_cis_imag follow; RoPE is recomputed from theta instead.
    reader.take("freq_cis_real", &[header.seq_len, head_size / 2])?;
    reader.take("freq_cis_imag", &[header.seq_len, head_size / 2])?;
    let classifier = if header.shared_classifier {
        None
    } else {
        Some(reader.take("wcls", &[header.vocab_size, d])?)
    };

    let mut weights = Weights::new(file.clone());
    let mut put = |name: String, data: Vec<f32>, shape: &[usize]| -> Result<()> {
        weights.insert(name, Tensor::from_vec(data, shape, device)?, file.clone());
        Ok(())
    };
    put(
        "model.embed_tokens.weight".into(),
        embed,
        &[header.vocab_size, d],
    )?;
    put("model.norm.weight".into(), rms_final, &[d])?;
    if let Some(wcls) = classifier {
        put("lm_head.weight".into(), wcls, &[header.vocab_size, d])?;
    }
    let layer_slice = |all: &[f32], i: usize, n: usize| all[i * n..(i + 1) * n].to_vec();
    for i in 0..l {
        let p = format!("model.layers.{i}");
        put(
            format!("{p}.input_layernorm.weight"),
            layer_slice(&rms_att, i, d),
            &[d],
        )?;
        put(
            format!("{p}.post_attention_layernorm.weight"),
            layer_slice(&rms_ffn, i, d),
            &[d],
        )?;
        let q =
            interleaved_to_half_split(&layer_slice(&wq, i, d * d), header.n_heads, head_size, d);
        put(format!("{p}.self_attn.q_proj.weight"), q, &[d, d])?;
        let k = interleaved_to_half_split(
            &layer_slice(&wk, i, kv_dim * d),
            header.n_kv_heads,
            head_size,
            d,
        );
        put(format!("{p}.self_attn.k_proj.weight"), k, &[kv_dim, d])?;
        put(
            format!("{p}.self_attn.v_proj.weight"),
            layer_slice(&wv, i, kv_dim * d),
            &[kv_dim, d],
        )?;
        put(
            format!("{p}.self_attn.o_proj.weight"),
            layer_slice(&wo, i, d * d),
            &[d, d],
        )?;
        put(
            format!("{p}.mlp.gate_proj.weight"),
            layer_slice(&w1, i, hd * d),
            &[hd, d],
        )?;
        put(
            format!("{p}.mlp.down_proj.weight"),
            layer_slice(&w2, i, d * hd),
            &[d, hd],
        )?;
        put(
            format!("{p}.mlp.up_proj.weight"),
            layer_slice(&w3, i, hd * d),
            &[hd, d],
        )?;
    }
    Ok((config, weights))
}

fn read_header(bytes: &[u8], file: &str) -> Result<Header> {
    let field = |i: usize| -> Result<i32> {
        bytes
            .get(i * 4..i * 4 + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| header_error(file, "file shorter than the 28-byte header"))
    };
    let positive = |i: usize, name: &str| -> Result<usize> {
        let v = field(i)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| header_error(file, &format!("{name} = {v} is not positive")))
    };
    let vocab = field(5)?;
    let header = Header {
        dim: positive(0, "dim")?,
        hidden_dim: positive(1, "hidden_dim")?,
        n_layers: positive(2, "n_layers")?,
        n_heads: positive(3, "n_heads")?,
        n_kv_heads: positive(4, "n_kv_heads")?,
        vocab_size: vocab.unsigned_abs() as usize,
        shared_classifier: vocab > 0,
        seq_len: positive(6, "seq_len")?,
    };
    if !header.dim.is_multiple_of(header.n_heads)
        || !header.n_heads.is_multiple_of(header.n_kv_heads)
    {
        return Err(header_error(
            file,
            "dim, n_heads and n_kv_heads are inconsistent",
        ));
    }
    Ok(header)
}

fn header_error(file: &str, message: &str) -> ModelError {
    ModelError::Weights {
        file: file.to_string(),
        tensor: "(llama2.c header)".into(),
        message: message.to_string(),
    }
}

fn config_of(h: &Header) -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Llama,
        vocab_size: h.vocab_size,
        hidden_size: h.dim,
        intermediate_size: h.hidden_dim,
        num_hidden_layers: h.n_layers,
        num_attention_heads: h.n_heads,
        num_key_value_heads: h.n_kv_heads,
        head_dim: h.dim / h.n_heads,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: None,
        max_position_embeddings: h.seq_len,
        tie_word_embeddings: h.shared_classifier,
        qkv_bias: false,
        mlp_bias: false,
        qk_norm: false,
        bos_token_id: Some(Llama2cTokenizer::BOS),
        eos_token_ids: vec![Llama2cTokenizer::EOS],
        extra: Map::new(),
    }
}

/// Rows of a `[heads·head_size, cols]` projection reordered so that, within each head, row `2i + j`
/// (interleaved pair `i`, member `j`) moves to row `j·head_size/2 + i` (half-split layout).
fn interleaved_to_half_split(w: &[f32], heads: usize, head_size: usize, cols: usize) -> Vec<f32> {
    let half = head_size / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head_size + 2 * i + j) * cols;
                let dst = (h * head_size + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

struct F32Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
    file: &'a str,
}

impl F32Reader<'_> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let count: usize = shape.iter().product();
        let end = self.offset + count * 4;
        let chunk = self
            .bytes
            .get(self.offset..end)
            .ok_or_else(|| ModelError::Weights {
                file: self.file.to_string(),
                tensor: name.to_string(),
                message: format!(
                    "file ends at byte {} but the header implies {shape:?} up to byte {end}",
                    self.bytes.len()
                ),
            })?;
        self.offset = end;
        Ok(chunk
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

/// The llama2.c tokenizer: SentencePiece-style pieces with scores, merged greedily by score.
#[derive(Debug, Clone)]
pub struct Llama2cTokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    ids: HashMap<String, u32>,
}

impl Llama2cTokenizer {
    /// The beginning-of-sequence id.
    pub const BOS: u32 = 1;
    /// The end-of-sequence id.
    pub const EOS: u32 = 2;
    /// Ids `3..259` are the byte-fallback tokens `<0x00>`..`<0xFF>`.
    const BYTE_OFFSET: u32 = 3;

    /// Reads `tokenizer.bin`: int32 max length, then per token a float32 score, int32 length, bytes.
    pub fn from_file(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            cause: source,
        })?;
        let error = |message: String| ModelError::Tokenizer {
            file: file.clone(),
            message,
        };
        let mut offset = 4;
        let mut pieces = Vec::new();
        let mut scores = Vec::new();
        while offset < bytes.len() {
            let read4 = |at: usize| -> Result<[u8; 4]> {
                bytes
                    .get(at..at + 4)
                    .map(|b| [b[0], b[1], b[2], b[3]])
                    .ok_or_else(|| {
                        error(format!(
                            "truncated entry for token {} at byte {at}",
                            pieces.len()
                        ))
                    })
            };
            let score = f32::from_le_bytes(read4(offset)?);
            let len = i32::from_le_bytes(read4(offset + 4)?);
            let len = usize::try_from(len)
                .map_err(|_| error(format!("negative length for token {}", pieces.len())))?;
            let start = offset + 8;
            let raw = bytes.get(start..start + len).ok_or_else(|| {
                error(format!(
                    "truncated piece for token {} at byte {start}",
                    pieces.len()
                ))
            })?;
            pieces.push(String::from_utf8_lossy(raw).into_owned());
            scores.push(score);
            offset = start + len;
        }
        if pieces.len() <= (Self::BYTE_OFFSET + 255) as usize {
            return Err(error(format!(
                "only {} tokens; expected at least 259",
                pieces.len()
            )));
        }
        let ids = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        Ok(Llama2cTokenizer {
            pieces,
            scores,
            ids,
        })
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The piece of token `id`.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The id of an exact piece.
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    /// llama2.c's encoder: a dummy leading space, one piece per character (byte fallback for unknown
    /// characters), then repeated merging of the adjacent pair whose merge has the highest score.
    pub fn encode(&self, text: &str, add_bos: bool) -> Vec<u32> {
        let mut tokens: Vec<u32> = Vec::new();
        if add_bos {
            tokens.push(Self::BOS);
        }
        if text.is_empty() {
            return tokens;
        }
        let mut ids: Vec<u32> = Vec::new();
        if let Some(space) = self.token_to_id(" ") {
            ids.push(space);
        }
        for ch in text.chars() {
            let mut buf = [0u8; 4];
            let s = ch.encode_utf8(&mut buf);
            match self.token_to_id(s) {
                Some(id) => ids.push(id),
                None => ids.extend(s.bytes().map(|b| u32::from(b) + Self::BYTE_OFFSET)),
            }
        }
        while let Some((at, merged)) = self.best_merge(&ids) {
            ids[at] = merged;
            ids.remove(at + 1);
        }
        tokens.extend(ids);
        tokens
    }

    fn best_merge(&self, ids: &[u32]) -> Option<(usize, u32)> {
        let mut best: Option<(f32, usize, u32)> = None;
        for (at, pair) in ids.windows(2).enumerate() {
            let joined = format!(
                "{}{}",
                self.pieces[pair[0] as usize], self.pieces[pair[1] as usize]
            );
            if let Some(&id) = self.ids.get(&joined) {
                let score = self.scores[id as usize];
                if best.is_none_or(|(s, _, _)| score > s) {
                    best = Some((score, at, id));
                }
            }
        }
        best.map(|(_, at, id)| (at, id))
    }

    /// Joins pieces, turning `<0xXX>` into raw bytes and dropping the leading space of the piece
    /// that follows BOS (or starts the text), as SentencePiece decoding does.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        let mut bytes: Vec<u8> = Vec::new();
        let mut previous: Option<u32> = None;
        for &id in ids {
            let special = id == Self::BOS || id == Self::EOS;
            if special && skip_special_tokens {
                previous = Some(id);
                continue;
            }
            let Some(piece) = self.piece(id) else {
                continue;
            };
            let piece = match previous {
                None | Some(Self::BOS) => piece.strip_prefix(' ').unwrap_or(piece),
                _ => piece,
            };
            match byte_fallback(piece) {
                Some(b) => bytes.push(b),
                None => bytes.extend_from_slice(piece.as_bytes()),
            }
            previous = Some(id);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The byte of a `<0xXX>` piece.
fn byte_fallback(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() == 2 {
        u8::from_str_radix(hex, 16).ok()
    } else {
        None
    }
}
