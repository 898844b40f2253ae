//! The number format a training run computes in. Master weights and optimiser moments are always
//! f32; with bf16 the forward and backward run on a bf16 copy cast from the master weights at every
//! step, and the cast's backward returns each gradient to its f32 master weight.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

/// A recipe's `precision`: `auto`, `f32` or `bf16`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 compute on a CUDA device, f32 on the CPU (where bf16 has no fast matmul).
    #[default]
    Auto,
    /// f32 weights, activations and gradients.
    F32,
    /// bf16 activations and matmuls over f32 master weights. The output projection and
    /// log-softmax still run in f32, so log-probs, losses and GRPO ratios are f32.
    Bf16,
}

impl Precision {
    /// The dtype activations are computed in on `device`.
    pub fn compute_dtype(self, device: &Device) -> DType {
        match self {
            Precision::Auto if device.is_cuda() => DType::BF16,
            Precision::Auto | Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_f32_on_the_cpu_and_a_recipe_names_each_mode() {
        assert_eq!(Precision::Auto.compute_dtype(&Device::Cpu), DType::F32);
        assert_eq!(Precision::Bf16.compute_dtype(&Device::Cpu), DType::BF16);
        #[derive(Deserialize)]
        struct Recipe {
            precision: Precision,
        }
        let parsed: Recipe = toml::from_str("precision = \"bf16\"").unwrap();
        assert_eq!(parsed.precision, Precision::Bf16);
        assert!(toml::from_str::<Recipe>("precision = \"fp8\"").is_err());
    }
}
