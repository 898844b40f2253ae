//! Where eval prompts come from: a prompt-set file (the built-in GSM8K / MATH-500 / AIME24 / AMC23
//! layouts detected as they are, else `problem` + `answer` columns) or a synthetic spec
//! `synth:kind=arith,difficulty=2,count=8,seed=0` (kinds: arith, linear, countdown).

use std::path::Path;

use anyhow::{bail, Context};

use crate::data::errors::DataError;
use crate::data::sources::{load_builtin, load_problems, ColumnMapping, Problem};
use crate::data::synth::{generate_tasks, TaskKind};

/// Loads the problems named by `spec`: a `synth:` spec or a `.jsonl` / `.parquet` file.
pub fn load_prompts(spec: &str) -> anyhow::Result<Vec<Problem>> {
    if let Some(rest) = spec.strip_prefix("synth:") {
        return synthetic_prompts(rest);
    }
    let path = Path::new(spec);
    match load_builtin(path, None) {
        Ok(problems) => Ok(problems),
        Err(DataError::UndetectedFormat { .. }) => {
            let source = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "prompts".into());
            Ok(load_problems(
                path,
                &ColumnMapping::new(&source, "problem", "answer"),
            )?)
        }
        Err(error) => Err(error.into()),
    }
}

/// Parses `kind=K,difficulty=D,count=N,seed=S` (only `kind` is required; defaults 1, 16, 0) and
/// generates those tasks.
fn synthetic_prompts(spec: &str) -> anyhow::Result<Vec<Problem>> {
    let (mut kind, mut difficulty, mut count, mut seed) = (None, 1u32, 16u64, 0u64);
    for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            bail!("synthetic prompt spec `synth:{spec}`: `{part}` is not key=value");
        };
        let value = value.trim();
        let number = || {
            value.parse::<u64>().with_context(|| {
                format!("synthetic prompt spec `synth:{spec}`: `{key}` must be a whole number, not `{value}`")
            })
        };
        match key.trim() {
            "kind" => kind = Some(TaskKind::from_name(value)?),
            "difficulty" => difficulty = u32::try_from(number()?).unwrap_or(u32::MAX),
            "count" => count = number()?,
            "seed" => seed = number()?,
            other => bail!(
                "synthetic prompt spec `synth:{spec}`: unknown key `{other}` (known: kind, difficulty, count, seed)"
            ),
        }
    }
    let Some(kind) = kind else {
        bail!("synthetic prompt spec `synth:{spec}`: missing `kind=` (arith, linear or countdown)");
    };
    Ok(generate_tasks(kind, difficulty, seed, count)?
        .iter()
        .map(|task| task.to_problem())
        .collect())
}
