//! Training a small byte-level BPE tokenizer on a corpus and saving it as a real `tokenizer.json`
//! (+ `tokenizer_config.json` with ChatML), so CPU demos can use a vocabulary of a few hundred tokens.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::AddedToken;

use super::chat_template::CHATML_TEMPLATE;
use super::error::{ModelError, Result};
use super::save::write_atomic;
use super::tokenizer::Tokenizer;

/// The special tokens of a trained tokenizer: ChatML markers and the end-of-text token.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// Reasoning markers, added as ordinary (non-special) tokens so decoding keeps them.
pub const THINK_TOKENS: [&str; 2] = ["<think>", "</think>"];

/// Trains a byte-level BPE tokenizer of about `vocab_size` tokens on `corpus` and writes
/// `tokenizer.json` and `tokenizer_config.json` into `dir`. With `split_digits` every digit is a
/// token of its own (as in Qwen); without it a run of digits is one pre-token, so the frequent
/// numbers of the corpus become single tokens.
pub fn train_bpe(
    corpus: &[String],
    vocab_size: usize,
    split_digits: bool,
    dir: &Path,
) -> Result<Tokenizer> {
    let error = |message: String| ModelError::Tokenizer {
        file: dir.join("tokenizer.json").display().to_string(),
        message,
    };
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    let mut tokenizer = tokenizers::Tokenizer::new(BPE::default());
    let pre_tokenizer = Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(split_digits)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer
        .train(&mut trainer, corpus.iter())
        .map_err(|e| error(format!("training failed: {e}")))?;
    tokenizer
        .add_tokens(THINK_TOKENS.iter().map(|t| AddedToken::from(*t, false)))
        .map_err(|e| error(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        cause: source,
    })?;
    let json = tokenizer
        .to_string(false)
        .map_err(|e| error(e.to_string()))?;
    write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 4096,
        "chat_template": CHATML_TEMPLATE,
    });
    write_atomic(
        &dir.join("tokenizer_config.json"),
        config.to_string().as_bytes(),
    )?;
    Tokenizer::from_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_split_one_per_token_or_kept_as_whole_numbers() {
        let corpus: Vec<String> = (0..300)
            .map(|i| format!("{} + {} = {}.", i % 30, i % 7, i % 30 + i % 7))
            .collect();
        for (split_digits, tokens_of_12) in [(true, 2), (false, 1)] {
            let dir = tempfile::tempdir().unwrap();
            let tokenizer = train_bpe(&corpus, 400, split_digits, dir.path()).unwrap();
            let ids = tokenizer.encode("12", false).unwrap();
            assert_eq!(ids.len(), tokens_of_12, "split_digits = {split_digits}");
            let text = "Start with 12. 12 + 5 = 17.";
            let round_trip = tokenizer
                .decode(&tokenizer.encode(text, false).unwrap(), false)
                .unwrap();
            assert_eq!(round_trip, text);
        }
    }
}
