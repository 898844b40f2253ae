//! `distill rewards`: GRPO's reward terms for the TRL engine. The launch script's reward function
//! keeps one such process per training process and sends it one JSON line per completion
//! (`index` into the prompts file, `completion`, `completion_tokens`); each answer is one line with
//! every term and the weighted `total`, scored exactly as distill's own GRPO scores.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::data::sources::Problem;
use crate::generate::prompts::think_prefill;
use crate::sandbox::SandboxSettings;
use crate::train::rewards::{RewardConfig, Scored};

/// The `rewards` object of a GRPO launch's settings file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSettings {
    /// The reward terms and weights.
    pub terms: RewardConfig,
    /// Where code problems run.
    pub sandbox: SandboxSettings,
    /// The completion length limit (for the length terms).
    pub max_new_tokens: usize,
    /// The prompts file (JSONL rows of [`PromptRow`]).
    pub prompts_file: PathBuf,
}

/// One GRPO prompt as the launch script and the reward process read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRow {
    /// The prompt rendered with the chat template (what TRL tokenises).
    pub prompt: String,
    /// Its row number (the reward function sends it back).
    pub index: usize,
    /// The problem's id.
    pub id: String,
    /// Its prompt set.
    pub source: String,
    /// The question.
    pub problem: String,
    /// The gold answer.
    pub answer: String,
    /// The problem's metadata (how it is checked).
    pub metadata: Map<String, Value>,
}

impl PromptRow {
    /// The row of `problem`, the `index`-th, rendered as `prompt`.
    pub fn new(index: usize, problem: &Problem, prompt: String) -> Self {
        PromptRow {
            prompt,
            index,
            id: problem.id.clone(),
            source: problem.source.clone(),
            problem: problem.problem.clone(),
            answer: problem.answer.clone(),
            metadata: problem.metadata.clone(),
        }
    }

    fn to_problem(&self) -> Problem {
        Problem {
            id: self.id.clone(),
            source: self.source.clone(),
            problem: self.problem.clone(),
            answer: self.answer.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// One completion to score.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    index: usize,
    completion: String,
    completion_tokens: usize,
}

/// Reads the `rewards` object of the settings file at `path`.
pub fn read_settings(path: &Path) -> anyhow::Result<RewardSettings> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let settings: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    serde_json::from_value(settings["rewards"].clone())
        .with_context(|| format!("{}: field rewards", path.display()))
}

/// Scores every request line of `input` onto `output`, one answer line each, flushed at every line.
pub fn serve(
    settings: &RewardSettings,
    input: impl BufRead,
    mut output: impl Write,
) -> anyhow::Result<()> {
    let file = &settings.prompts_file;
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let rows: Vec<PromptRow> = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}: line {}", file.display(), i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    let problems: Vec<Problem> = rows.iter().map(PromptRow::to_problem).collect();
    let checkers = crate::verify::grade::checkers_for(&problems, &settings.sandbox, "prompt")?;
    for (number, line) in input.lines().enumerate() {
        let line = line.context("reading reward requests")?;
        let request: Request = serde_json::from_str(&line)
            .with_context(|| format!("reward request {}: {line:?}", number + 1))?;
        let Some(row) = rows.get(request.index) else {
            bail!(
                "reward request {}: index {} is past the {} prompts of {}",
                number + 1,
                request.index,
                rows.len(),
                file.display()
            );
        };
        let score = settings.terms.score(&Scored {
            prompt: &row.problem,
            prefill: think_prefill(&row.prompt),
            completion: &request.completion,
            gold: &row.answer,
            checker: &checkers[request.index],
            completion_tokens: request.completion_tokens,
            max_new_tokens: settings.max_new_tokens,
        });
        writeln!(output, "{}", serde_json::to_string(&score)?)?;
        output.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_are_scored_as_distill_scores_them() {
        let dir = tempfile::tempdir().unwrap();
        let problem = Problem {
            id: "p1".into(),
            source: "test".into(),
            problem: "What is 2 + 3?".into(),
            answer: "5".into(),
            metadata: Map::new(),
        };
        let row = PromptRow::new(
            0,
            &problem,
            "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n".into(),
        );
        let prompts_file = dir.path().join("prompts.jsonl");
        std::fs::write(&prompts_file, serde_json::to_string(&row).unwrap() + "\n").unwrap();
        let settings = RewardSettings {
            terms: RewardConfig {
                length_penalty: 0.5,
                ..RewardConfig::default()
            },
            sandbox: SandboxSettings::default(),
            max_new_tokens: 10,
            prompts_file,
        };
        let input =
            "{\"index\":0,\"completion\":\"2 + 3 = 5. \\\\boxed{5}\",\"completion_tokens\":4}\n\
                     {\"index\":0,\"completion\":\"\\\\boxed{6}\",\"completion_tokens\":2}\n";
        let mut output = Vec::new();
        serve(&settings, input.as_bytes(), &mut output).unwrap();
        let answers: Vec<Value> = String::from_utf8(output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(answers[0]["accuracy"], 1.0);
        assert!((answers[0]["total"].as_f64().unwrap() - (1.0 - 0.5 * 0.4)).abs() < 1e-12);
        assert_eq!(answers[1]["accuracy"], 0.0);
        assert!((answers[1]["total"].as_f64().unwrap() + 0.5 * 0.2).abs() < 1e-12);
        let bad = "{\"index\":3,\"completion\":\"x\",\"completion_tokens\":1}\n";
        let err = serve(&settings, bad.as_bytes(), Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("index 3 is past the 1 prompts"),
            "{err}"
        );
    }
}
