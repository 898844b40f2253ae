//! Where the generate stage's problems come from and how each becomes a prompt: the prompt
//! source (a file with an adapter or a column mapping, or a synthetic spec), `limit`, and the
//! rendering of a problem into the conversation and the exact prompt text the teacher sees.
//!
//! Synthetic specs (`synth:KIND[:key=value]...`) are parsed by [`crate::data::prompt_source`].

use super::config::GenerateConfig;
use super::GenerateError;
use crate::data::hashing::sha256_u64;
use crate::data::prompt_source::{
    load_files, load_prompts, problem_texts, prompt_files, SynthSpec,
};
use crate::data::sources::{load_builtin_named, load_problems, Adapter, ColumnMapping, Problem};
use crate::model::{ChatOptions, Message, Tokenizer};

/// Loads the configured prompt set, leaves out the problems of `exclude` and keeps the first
/// `limit` problems.
pub fn load_prompt_set(config: &GenerateConfig) -> Result<Vec<Problem>, GenerateError> {
    let mut problems = match SynthSpec::parse(&config.prompts) {
        Some(spec) => spec?.problems()?,
        None => load_file(config)?,
    };
    if !config.exclude.is_empty() {
        let excluded = problem_texts(&config.exclude)?;
        problems.retain(|p| !excluded.contains(&p.problem));
    }
    if let Some(limit) = config.limit {
        problems.truncate(limit);
    }
    Ok(problems)
}

/// Loads a prompt file (or Hub dataset split) with a custom column mapping, a named adapter or
/// a detected one.
fn load_file(config: &GenerateConfig) -> Result<Vec<Problem>, GenerateError> {
    match (&config.problem_column, &config.adapter) {
        (Some(_), Some(_)) => Err(GenerateError::Config(
            "give either --adapter or --problem-column/--answer-column, not both".into(),
        )),
        (Some(problem), None) => {
            let answer = config.answer_column.as_deref().ok_or_else(|| {
                GenerateError::Config("--problem-column needs --answer-column too".into())
            })?;
            let files = prompt_files(&config.prompts)?;
            Ok(load_files(&files, |file| {
                let stem = if file.stem.is_empty() {
                    "prompts"
                } else {
                    file.stem.as_str()
                };
                let mapping = ColumnMapping {
                    id: config.id_column.clone(),
                    ..ColumnMapping::new(stem, problem, answer)
                };
                load_problems(&file.path, &mapping)
            })?)
        }
        (None, adapter) => {
            if config.answer_column.is_some() || config.id_column.is_some() {
                return Err(GenerateError::Config(
                    "--answer-column/--id-column need --problem-column".into(),
                ));
            }
            match adapter {
                Some(name) => {
                    let adapter = Adapter::from_name(name)?;
                    let files = prompt_files(&config.prompts)?;
                    Ok(load_files(&files, |file| {
                        load_builtin_named(&file.path, Some(adapter), &file.stem)
                    })?)
                }
                // The reader every verb uses: a detected format (files or a Hub split), else
                // `problem` + `answer` columns.
                None => Ok(load_prompts(&config.prompts)?),
            }
        }
    }
}

/// The seed of a problem: a hash of the run seed and the problem id, so it does not depend on
/// the problem's position, the batch or the worker split.
pub fn problem_seed(run_seed: u64, problem_id: &str) -> u64 {
    sha256_u64(format!("{run_seed}\n{problem_id}").as_bytes())
}

/// A problem made ready for the teacher.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPrompt {
    /// System turn (when configured) and user turn.
    pub messages: Vec<Message>,
    /// The exact prompt text: the chat template's rendering, or for an endpoint that applies
    /// its own template, the JSON of `messages`.
    pub prompt: String,
    /// What the template opened the assistant turn with (`<think>\n` for R1-Distill
    /// templates), to prepend to the generation; empty otherwise.
    pub prefill: String,
}

/// Renders problems into prompts with an optional system turn and instruction suffix.
pub struct Renderer<'a> {
    /// The teacher's tokenizer, whose chat template renders the prompt; `None` for an
    /// endpoint's chat API without a local tokenizer.
    pub tokenizer: Option<&'a Tokenizer>,
    /// System turn, if any.
    pub system_prompt: Option<&'a str>,
    /// Instruction appended after a blank line (empty: none).
    pub instruction: &'a str,
}

impl Renderer<'_> {
    /// The user turn: the problem, then a blank line and the instruction when there is one.
    pub fn user_turn(&self, problem: &str) -> String {
        if self.instruction.is_empty() {
            problem.to_string()
        } else {
            format!("{problem}\n\n{}", self.instruction)
        }
    }

    /// Renders one problem.
    pub fn render(&self, problem: &Problem) -> Result<RenderedPrompt, GenerateError> {
        let mut messages = Vec::new();
        if let Some(system) = self.system_prompt {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::user(self.user_turn(&problem.problem)));
        let (prompt, prefill) = match self.tokenizer {
            Some(tokenizer) => {
                let options = ChatOptions {
                    add_generation_prompt: true,
                    enable_thinking: None,
                };
                let prompt = tokenizer.render_chat(&messages, &options)?;
                let prefill = think_prefill(&prompt).to_string();
                (prompt, prefill)
            }
            None => (
                serde_json::to_string(&messages).unwrap_or_default(),
                String::new(),
            ),
        };
        Ok(RenderedPrompt {
            messages,
            prompt,
            prefill,
        })
    }
}

/// `<think>\n` or `<think>` when a rendered prompt ends with it (the template opened the
/// thought), else empty.
pub fn think_prefill(prompt: &str) -> &'static str {
    if prompt.ends_with("<think>\n") {
        "<think>\n"
    } else if prompt.ends_with("<think>") {
        "<think>"
    } else {
        ""
    }
}

/// The full generation of a sample: the prefill, then the text, unless the text already
/// opens the thought itself.
pub fn full_generation(prefill: &str, text: &str) -> String {
    if prefill.is_empty() || text.trim_start().starts_with("<think>") {
        text.to_string()
    } else {
        format!("{prefill}{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_problems_are_left_out_before_the_limit() {
        let config: GenerateConfig = toml::from_str(
            "prompts = \"synth:arith:difficulty=1:count=300:seed=11\"\nout = \"o\"\nlimit = 250\n\
             exclude = [\"synth:arith:difficulty=1:count=64:seed=12\"]\n\
             [teacher]\nkind = \"local\"\nmodel = \"m\"\n",
        )
        .unwrap();
        let excluded = problem_texts(&config.exclude).unwrap();
        let clean: Vec<String> = crate::data::prompt_source::load_prompts(&config.prompts)
            .unwrap()
            .into_iter()
            .filter(|p| !excluded.contains(&p.problem))
            .map(|p| p.id)
            .collect();
        assert!(
            clean.len() < 300,
            "some training problems repeat an excluded one"
        );
        let kept: Vec<String> = load_prompt_set(&config)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(kept, clean[..250.min(clean.len())]);
    }

    #[test]
    fn the_r1_prefill_is_detected_and_prepended_once() {
        assert_eq!(think_prefill("<｜Assistant｜><think>\n"), "<think>\n");
        assert_eq!(think_prefill("x<think>"), "<think>");
        assert_eq!(think_prefill("<|im_start|>assistant\n"), "");
        assert_eq!(
            full_generation("<think>\n", "a</think>b"),
            "<think>\na</think>b"
        );
        assert_eq!(
            full_generation("<think>\n", "<think>a</think>b"),
            "<think>a</think>b"
        );
        assert_eq!(full_generation("", "a"), "a");
    }
}
