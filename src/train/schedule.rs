//! Learning-rate schedules: linear warmup, then cosine, linear or constant.

use serde::{Deserialize, Serialize};

/// The shape of the learning rate after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Half a cosine from the peak to `min_lr_ratio × peak`.
    Cosine,
    /// A straight line from the peak to `min_lr_ratio × peak`.
    Linear,
    /// Stay at the peak.
    Constant,
}

/// Warmup then decay over a known number of steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Steps of linear warmup from 0.
    pub warmup_steps: u64,
    /// Total optimiser steps.
    pub total_steps: u64,
    /// The decay after warmup.
    pub decay: Decay,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
}

impl Schedule {
    /// Learning rate of optimiser step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let floor = self.peak * self.min_lr_ratio;
        match self.decay {
            Decay::Constant => self.peak,
            Decay::Linear => floor + (self.peak - floor) * (1.0 - progress),
            Decay::Cosine => {
                floor + (self.peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}
