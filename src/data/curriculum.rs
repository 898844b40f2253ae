//! The adaptive difficulty curriculum: after each batch, the measured pass rate moves the
//! difficulty of synthetic tasks up one level when it is above [`CurriculumConfig::raise_above`]
//! and down one level when it is below [`CurriculumConfig::lower_below`], within
//! `[min_difficulty, max_difficulty]`. It is deterministic: the same pass rates give the same
//! difficulties.

use super::errors::{DataError, Result};
use super::synth::MAX_DIFFICULTY;

/// Thresholds and bounds of a [`Curriculum`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurriculumConfig {
    /// Lowest difficulty (default 1).
    pub min_difficulty: u32,
    /// Highest difficulty (default [`MAX_DIFFICULTY`] = 8).
    pub max_difficulty: u32,
    /// Raise the difficulty when a batch's pass rate is strictly above this (default 0.8).
    pub raise_above: f64,
    /// Lower the difficulty when a batch's pass rate is strictly below this (default 0.3).
    pub lower_below: f64,
}

impl Default for CurriculumConfig {
    fn default() -> Self {
        CurriculumConfig {
            min_difficulty: 1,
            max_difficulty: MAX_DIFFICULTY,
            raise_above: 0.8,
            lower_below: 0.3,
        }
    }
}

/// The current difficulty and the rule that moves it.
#[derive(Debug, Clone, PartialEq)]
pub struct Curriculum {
    config: CurriculumConfig,
    difficulty: u32,
}

impl Curriculum {
    /// A curriculum starting at `start`; requires
    /// `1 <= min <= start <= max <= MAX_DIFFICULTY` and `0 <= lower_below <= raise_above <= 1`.
    pub fn new(config: CurriculumConfig, start: u32) -> Result<Self> {
        let bounds_ok = 1 <= config.min_difficulty
            && config.min_difficulty <= start
            && start <= config.max_difficulty
            && config.max_difficulty <= MAX_DIFFICULTY;
        let thresholds_ok = (0.0..=1.0).contains(&config.lower_below)
            && (0.0..=1.0).contains(&config.raise_above)
            && config.lower_below <= config.raise_above;
        if !bounds_ok || !thresholds_ok {
            return Err(DataError::InvalidConfig(format!(
                "curriculum {config:?} with start {start} is inconsistent"
            )));
        }
        Ok(Curriculum {
            config,
            difficulty: start,
        })
    }

    /// The difficulty for the next batch.
    pub fn difficulty(&self) -> u32 {
        self.difficulty
    }

    /// Records a batch's pass rate (in `[0, 1]`) and returns the difficulty for the next batch.
    pub fn observe(&mut self, pass_rate: f64) -> Result<u32> {
        if !(0.0..=1.0).contains(&pass_rate) {
            return Err(DataError::InvalidConfig(format!(
                "pass rate {pass_rate} is outside [0, 1]"
            )));
        }
        if pass_rate > self.config.raise_above {
            self.difficulty = (self.difficulty + 1).min(self.config.max_difficulty);
        } else if pass_rate < self.config.lower_below {
            self.difficulty = self
                .difficulty
                .saturating_sub(1)
                .max(self.config.min_difficulty);
        }
        Ok(self.difficulty)
    }
}
