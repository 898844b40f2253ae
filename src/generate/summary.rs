//! What a generate run reports: the [`GenerateSummary`] (written as `summary.json` beside the
//! shards, temp + rename, and returned to the caller), its one-paragraph human form, and the
//! progress bar shown while it runs.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// File name of the summary inside the output directory.
pub const SUMMARY_FILE: &str = "summary.json";

/// The outcome of one generate run (one worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateSummary {
    /// Where the shards are.
    pub out_dir: PathBuf,
    /// The teacher's name as recorded in the rows.
    pub teacher: String,
    /// Parameters of the teacher model, when known (local teachers), for compute accounting.
    pub teacher_parameters: Option<usize>,
    /// The manifest's recipe hash.
    pub recipe_hash: String,
    /// Problems this worker owns.
    pub problems: usize,
    /// Of those, problems whose samples were all already written (skipped entirely).
    pub problems_already_done: usize,
    /// Samples the teacher generated in this run.
    pub samples_generated: usize,
    /// Rows written in this run.
    pub rows_written: usize,
    /// Rows not written because the directory already held their key.
    pub rows_skipped: usize,
    /// Rows in the directory now.
    pub total_rows: usize,
    /// Shard files in the directory now.
    pub shards: usize,
    /// Prompt tokens of the generated samples.
    pub prompt_tokens: u64,
    /// Completion tokens generated.
    pub completion_tokens: u64,
    /// Wall time of the run, in seconds.
    pub wall_seconds: f64,
    /// Completion tokens per second of wall time.
    pub tokens_per_second: f64,
    /// Generated samples per finish reason (`stop`, `length`).
    pub finish_reasons: BTreeMap<String, usize>,
    /// Samples whose token counts are unknown (null in the rows): the endpoint reported no
    /// usage and no tokenizer was given to count them.
    #[serde(default)]
    pub samples_without_token_counts: usize,
    /// What the generated samples cost at their endpoints' prices; `None` without prices.
    #[serde(default)]
    pub cost: Option<f64>,
    /// Per endpoint that served samples (its URL without credentials): samples, tokens, cost.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointTotals>,
    /// With `--until-verified`: problems that reached the wanted number of passing samples
    /// (the others used up `--max-samples`).
    #[serde(default)]
    pub problems_verified: Option<usize>,
}

/// What one endpoint served in a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointTotals {
    /// Samples it returned.
    pub samples: usize,
    /// Their prompt tokens (each sample counts its request's prompt).
    pub prompt_tokens: u64,
    /// Their completion tokens.
    pub completion_tokens: u64,
    /// Their cost; `None` without prices.
    pub cost: Option<f64>,
}

impl EndpointTotals {
    /// Counts `sample` in.
    pub fn add(&mut self, sample: &crate::teacher::TeacherSample) {
        self.samples += 1;
        self.prompt_tokens += u64::from(sample.prompt_tokens.unwrap_or(0));
        self.completion_tokens += u64::from(sample.completion_tokens.unwrap_or(0));
        if let Some(cost) = sample.cost {
            *self.cost.get_or_insert(0.0) += cost;
        }
    }
}

impl GenerateSummary {
    /// Writes `summary.json` into the output directory (temp file, then rename).
    pub fn write(&self) -> std::io::Result<PathBuf> {
        let path = self.out_dir.join(SUMMARY_FILE);
        let temp = crate::output_dir::temp_path_for(&path);
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        let mut file = File::create(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, &path)?;
        Ok(path)
    }

    /// One paragraph for people.
    pub fn human(&self) -> String {
        let reasons: Vec<String> = self
            .finish_reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        let reasons = if reasons.is_empty() {
            String::new()
        } else {
            format!(" (finish reasons: {})", reasons.join(", "))
        };
        let mut tail = self
            .cost
            .map_or(String::new(), |cost| format!(" Cost: {cost:.4}."));
        if let Some(verified) = self.problems_verified {
            tail += &format!(
                " {verified} of {} problems reached the --until-verified target.",
                self.problems
            );
        }
        format!(
            "Generated {} samples for {} problems with {} in {:.1} s ({} completion tokens, {:.1} tokens/s){reasons}. \
             Wrote {} rows, skipped {} already present; {} holds {} rows in {} shards.{tail}",
            self.samples_generated,
            self.problems - self.problems_already_done,
            self.teacher,
            self.wall_seconds,
            self.completion_tokens,
            self.tokens_per_second,
            self.rows_written,
            self.rows_skipped,
            self.out_dir.display(),
            self.total_rows,
            self.shards,
        )
    }
}

/// A progress bar over problems with samples and generated tokens/s in its message; hidden
/// when disabled or when stderr is not a terminal.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `problems` problems; with `streamed` (a streaming teacher's counter of
    /// tokens received) it also shows the tokens arriving while requests are in flight.
    pub fn new(problems: usize, enabled: bool, streamed: Option<Arc<AtomicU64>>) -> Self {
        if !(enabled && std::io::stderr().is_terminal()) {
            return Progress {
                bar: ProgressBar::hidden(),
            };
        }
        let bar = ProgressBar::new(problems as u64);
        let template = if streamed.is_some() {
            "{bar:30.cyan/blue} {pos}/{len} problems · {msg} · {streamed} tokens streamed · {elapsed_precise} (ETA {eta})"
        } else {
            "{bar:30.cyan/blue} {pos}/{len} problems · {msg} · {elapsed_precise} (ETA {eta})"
        };
        if let Ok(mut style) = ProgressStyle::with_template(template) {
            if let Some(counter) = streamed {
                style = style.with_key(
                    "streamed",
                    move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}", counter.load(Ordering::Relaxed));
                    },
                );
            }
            bar.set_style(style);
        }
        bar.set_message("0 samples");
        bar.enable_steady_tick(Duration::from_millis(500));
        Progress { bar }
    }

    /// Records `problems` more problems done; `samples` and `tokens` are the run's totals.
    pub fn advance(&self, problems: usize, samples: usize, tokens: u64, elapsed: Duration) {
        let rate = tokens as f64 / elapsed.as_secs_f64().max(1e-9);
        self.bar
            .set_message(format!("{samples} samples · {rate:.1} tok/s"));
        self.bar.inc(problems as u64);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_written_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let summary = GenerateSummary {
            out_dir: dir.path().to_path_buf(),
            teacher: "t".into(),
            teacher_parameters: Some(1000),
            recipe_hash: "h".into(),
            problems: 3,
            problems_already_done: 1,
            samples_generated: 4,
            rows_written: 4,
            rows_skipped: 2,
            total_rows: 6,
            shards: 2,
            prompt_tokens: 10,
            completion_tokens: 40,
            wall_seconds: 2.0,
            tokens_per_second: 20.0,
            finish_reasons: BTreeMap::from([("stop".to_string(), 4)]),
            samples_without_token_counts: 0,
            cost: Some(0.25),
            endpoints: BTreeMap::from([(
                "http://a/v1/chat/completions".to_string(),
                EndpointTotals {
                    samples: 4,
                    prompt_tokens: 10,
                    completion_tokens: 40,
                    cost: Some(0.25),
                },
            )]),
            problems_verified: Some(2),
        };
        let path = summary.write().unwrap();
        let back: GenerateSummary =
            serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(back, summary);
        assert!(summary.human().contains("4 samples for 2 problems"));
        assert!(summary.human().contains("2 of 3 problems reached"));
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![SUMMARY_FILE.to_string()]);
    }
}
