//! n-gram decontamination of problem texts against evaluation sets.
//!
//! Texts are normalised to lowercase word tokens (maximal runs of Unicode letters and digits;
//! everything else, LaTeX punctuation included, separates words). Every window of `n`
//! consecutive tokens of every evaluation problem goes into an index; a training problem that
//! shares any window with it is contaminated. A text with fewer than `n` tokens contributes its
//! whole token sequence as one shorter window, so short problems match only when an evaluation
//! problem has the identical short token sequence.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use crate::data::prompt_source::prompt_files;
use crate::data::sources::load_builtin_named;
use crate::data::Result;

/// The lowercase word tokens of `text`.
pub fn word_tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Hashes of the `n`-token windows of `text` (one window of all tokens when there are fewer
/// than `n`; none for a text without words).
fn window_hashes(text: &str, n: usize) -> Vec<u64> {
    let tokens = word_tokens(text);
    if tokens.is_empty() {
        return Vec::new();
    }
    let hash = |window: &[String]| {
        let mut hasher = DefaultHasher::new();
        window.hash(&mut hasher);
        hasher.finish()
    };
    if tokens.len() < n {
        return vec![hash(&tokens)];
    }
    tokens.windows(n).map(hash).collect()
}

/// The n-grams of a set of evaluation problems, each remembering the first problem id it
/// came from.
#[derive(Debug)]
pub struct NgramIndex {
    /// Tokens per window.
    n: usize,
    /// Window hash → the first evaluation problem id it came from.
    windows: HashMap<u64, String>,
    /// Evaluation problems added.
    problems: usize,
}

impl NgramIndex {
    /// Indexes the problems of every file in `files` (read with the built-in prompt-set
    /// adapters: MATH-500, GSM8K, AIME24, AMC23) with windows of `n` tokens.
    pub fn from_files(files: &[PathBuf], n: usize) -> Result<Self> {
        let mut index = NgramIndex::new(n);
        for file in files {
            for part in prompt_files(&file.to_string_lossy())? {
                for problem in load_builtin_named(&part.path, None, &part.stem)? {
                    index.add(&problem.id, &problem.problem);
                }
            }
        }
        Ok(index)
    }

    /// An empty index of `n`-token windows (`n` below 1 counts as 1).
    pub fn new(n: usize) -> Self {
        NgramIndex {
            n: n.max(1),
            windows: HashMap::new(),
            problems: 0,
        }
    }

    /// Adds one evaluation problem.
    pub fn add(&mut self, id: &str, text: &str) {
        self.problems += 1;
        for window in window_hashes(text, self.n) {
            self.windows.entry(window).or_insert_with(|| id.to_string());
        }
    }

    /// Number of evaluation problems indexed.
    pub fn problems(&self) -> usize {
        self.problems
    }

    /// The id of an evaluation problem sharing an n-gram with `text`, if any.
    pub fn find(&self, text: &str) -> Option<&str> {
        if self.windows.is_empty() {
            return None;
        }
        window_hashes(text, self.n)
            .into_iter()
            .find_map(|window| self.windows.get(&window).map(String::as_str))
    }
}
