//! Prompt sources named by one string: a JSONL/Parquet file or a Hub dataset split
//! (`hf:ORG/NAME[:CONFIG][:SPLIT]`, see [`crate::data::hub`]) read by a built-in adapter (GSM8K,
//! MATH-500, AIME24, AMC23, NuminaMath, OpenR1-Math, and the code sets HumanEval, MBPP and the
//! generic code layout of [`crate::data::code_sources`] — detected from the file; other files by their
//! `problem` and `answer` columns), or a synthetic spec
//! `synth:KIND[:key=value]...` with KIND `arith` (or `arithmetic`), `linear` or `countdown` and keys
//! `difficulty` (1–8, default 3), `count` (default 100) and `seed` (default 0), e.g.
//! `synth:arith:difficulty=3:count=200:seed=1`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::code_sources::load_code_problems;
use super::errors::{DataError, Result};
use super::hub::{self, HubDatasetSpec};
use super::sources::{file_stem, load_builtin_named, load_problems, ColumnMapping, Problem};
use super::synth::{generate_tasks, SynthTask, TaskKind};

/// A parsed `synth:` prompt source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthSpec {
    /// The task family.
    pub kind: TaskKind,
    /// Difficulty level.
    pub difficulty: u32,
    /// Number of tasks.
    pub count: u64,
    /// Seed of the task set.
    pub seed: u64,
}

impl SynthSpec {
    /// Parses `synth:KIND[:key=value]...`; `None` when `text` does not start with `synth:`.
    pub fn parse(text: &str) -> Option<Result<Self>> {
        let rest = text.strip_prefix("synth:")?;
        Some(Self::parse_body(text, rest))
    }

    fn parse_body(text: &str, rest: &str) -> Result<Self> {
        let bad = |message: String| {
            DataError::InvalidConfig(format!(
                "prompt source {text:?}: {message} (expected synth:KIND[:difficulty=D][:count=N][:seed=S], KIND one of arith, linear, countdown)"
            ))
        };
        let mut parts = rest.split(':');
        let kind_name = parts.next().unwrap_or_default();
        let kind_name = if kind_name == "arithmetic" {
            "arith"
        } else {
            kind_name
        };
        let kind = TaskKind::from_name(kind_name)
            .map_err(|_| bad(format!("unknown task kind `{kind_name}`")))?;
        let mut spec = SynthSpec {
            kind,
            difficulty: 3,
            count: 100,
            seed: 0,
        };
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| bad(format!("{what} `{value}` is not a non-negative integer")))
            };
            match key {
                "difficulty" => {
                    spec.difficulty = u32::try_from(number("difficulty")?)
                        .map_err(|_| bad(format!("difficulty `{value}` is too large")))?
                }
                "count" => spec.count = number("count")?,
                "seed" => spec.seed = number("seed")?,
                other => return Err(bad(format!("unknown key `{other}`"))),
            }
        }
        Ok(spec)
    }

    /// The spec's problems.
    pub fn problems(&self) -> Result<Vec<Problem>> {
        Ok(self.tasks()?.iter().map(SynthTask::to_problem).collect())
    }

    /// The spec's tasks (with the structure behind each problem).
    pub fn tasks(&self) -> Result<Vec<SynthTask>> {
        generate_tasks(self.kind, self.difficulty, self.seed, self.count)
    }
}

/// One data file of a prompt source and the name its problems' source is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptFile {
    /// The `.jsonl`/`.parquet` file.
    pub path: PathBuf,
    /// The set's name: the file stem of a local file, the split of a Hub dataset (`test`).
    pub stem: String,
}

/// The data files of a prompt source that is not synthetic: the file itself, or the files of a
/// Hub dataset's split (`hf:ORG/NAME[:CONFIG][:SPLIT]`, see [`crate::data::hub`]).
pub fn prompt_files(source: &str) -> Result<Vec<PromptFile>> {
    match HubDatasetSpec::parse(source) {
        Some(spec) => {
            let dataset = hub::resolve(&spec?)?;
            Ok(dataset
                .files
                .into_iter()
                .map(|path| PromptFile {
                    path,
                    stem: dataset.split.clone(),
                })
                .collect())
        }
        None => Ok(vec![PromptFile {
            path: PathBuf::from(source),
            stem: file_stem(Path::new(source)),
        }]),
    }
}

/// The licence of a prompt source when it declares one (a Hub dataset's card `license`).
pub fn prompt_license(source: &str) -> Option<String> {
    let spec = HubDatasetSpec::parse(source)?.ok()?;
    hub::resolve(&spec).ok()?.license
}

/// The problems of several files of one set, in file order; a problem id seen in an earlier file
/// is skipped (sharded Hub splits may repeat a problem).
pub fn load_files(
    files: &[PromptFile],
    load: impl Fn(&PromptFile) -> Result<Vec<Problem>>,
) -> Result<Vec<Problem>> {
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    for file in files {
        problems.extend(
            load(file)?
                .into_iter()
                .filter(|p| seen.insert(p.id.clone())),
        );
    }
    Ok(problems)
}

/// The problems of a prompt source string: a `synth:` spec, or a file (or Hub dataset split)
/// read by its built-in adapter (detected: code sets first, see [`crate::data::code_sources`]),
/// or else by its `problem` and `answer` columns.
pub fn load_prompts(source: &str) -> Result<Vec<Problem>> {
    if let Some(spec) = SynthSpec::parse(source) {
        return spec?.problems();
    }
    load_files(&prompt_files(source)?, |file| {
        if let Some(problems) = load_code_problems(&file.path, &file.stem)? {
            return Ok(problems);
        }
        match load_builtin_named(&file.path, None, &file.stem) {
            Err(DataError::UndetectedFormat { .. }) => {
                let name = if file.stem.is_empty() {
                    "prompts"
                } else {
                    file.stem.as_str()
                };
                load_problems(&file.path, &ColumnMapping::new(name, "problem", "answer"))
            }
            other => other,
        }
    })
}

/// The problem texts of every source in `sources` (prompt-source strings as for [`load_prompts`]):
/// what exact-text decontamination leaves out of training data, e.g. a run's evaluation set.
pub fn problem_texts(sources: &[String]) -> Result<HashSet<String>> {
    let mut texts = HashSet::new();
    for source in sources {
        texts.extend(load_prompts(source)?.into_iter().map(|p| p.problem));
    }
    Ok(texts)
}

/// The tasks of a `synth:` spec (an error for anything else).
pub fn synth_tasks(source: &str) -> Result<Vec<SynthTask>> {
    match SynthSpec::parse(source) {
        Some(spec) => spec?.tasks(),
        None => Err(DataError::InvalidConfig(format!(
            "{source:?} is not a synth: spec (a bootstrap corpus must be synthetic)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_texts_collect_every_source_and_catch_repeats_across_seeds() {
        let eval = "synth:arith:difficulty=1:count=64:seed=12".to_string();
        let texts = problem_texts(std::slice::from_ref(&eval)).unwrap();
        let problems = load_prompts(&eval).unwrap();
        assert!(problems.iter().all(|p| texts.contains(&p.problem)));
        // Difficulty 1 has a few thousand distinct problems, so another seed repeats some texts.
        let train = load_prompts("synth:arith:difficulty=1:count=2000:seed=11").unwrap();
        assert!(train.iter().any(|p| texts.contains(&p.problem)));
        assert!(train.iter().any(|p| !texts.contains(&p.problem)));
        let both = problem_texts(&[eval, "synth:linear:count=3".into()]).unwrap();
        assert!(both.len() > texts.len() && both.is_superset(&texts));
    }

    #[test]
    fn synth_specs_parse_with_defaults_and_reject_nonsense() {
        let spec = SynthSpec::parse("synth:arithmetic:difficulty=2:count=5:seed=9")
            .unwrap()
            .unwrap();
        assert_eq!(
            spec,
            SynthSpec {
                kind: TaskKind::Arithmetic,
                difficulty: 2,
                count: 5,
                seed: 9
            }
        );
        let spec = SynthSpec::parse("synth:countdown").unwrap().unwrap();
        assert_eq!((spec.difficulty, spec.count, spec.seed), (3, 100, 0));
        assert!(SynthSpec::parse("data/x.jsonl").is_none());
        for bad in [
            "synth:nope",
            "synth:arith:count=x",
            "synth:arith:depth=2",
            "synth:arith:3",
        ] {
            assert!(SynthSpec::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
