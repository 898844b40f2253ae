//! Compute accounting shared by the training stages and the report: FLOPs estimated as
//! 6·params·tokens for forward+backward updates plus 2·params·tokens for forward-only passes
//! (generation, a frozen reference's scoring), and the model FLOPs utilisation (MFU) of a step.

use candle_core::{DType, Device};

use crate::model::ModelConfig;

/// Estimated FLOPs of `update_tokens` trained (forward and backward) and `forward_tokens` only run
/// forward (sampled, prefilled or scored) by a model of `parameters` parameters.
pub fn estimated_flops(parameters: usize, update_tokens: u64, forward_tokens: u64) -> f64 {
    let p = parameters as f64;
    6.0 * p * update_tokens as f64 + 2.0 * p * forward_tokens as f64
}

/// Model FLOPs of one forward and backward pass over examples of `example_lengths` tokens, in
/// PaLM's convention (appendix B): 6 per matmul weight per token (the output projection included,
/// the embedding lookup and norms not), plus 12·layers·(heads·head_dim)·T per token of a T-token
/// example for the attention scores and their weighted sum (causal masking not subtracted).
pub fn training_flops(
    config: &ModelConfig,
    example_lengths: impl IntoIterator<Item = usize>,
) -> f64 {
    let d = config.hidden_size as f64;
    let q = (config.num_attention_heads * config.head_dim) as f64;
    let kv = (config.num_key_value_heads * config.head_dim) as f64;
    let layer = 2.0 * d * q + 2.0 * d * kv + 3.0 * d * config.intermediate_size as f64;
    let matmul_weights = config.num_hidden_layers as f64 * layer + (config.vocab_size as f64) * d;
    let attention_per_token_and_context = 12.0 * config.num_hidden_layers as f64 * q;
    example_lengths
        .into_iter()
        .map(|len| {
            let t = len as f64;
            6.0 * matmul_weights * t + attention_per_token_and_context * t * t
        })
        .sum()
}

/// Dense peak FLOP/s of a known GPU (by its CUDA device name) for matmuls in `dtype`: tensor-core
/// bf16/f16 with f32 accumulation, or plain f32. `None` for other devices and dtypes (the CPU
/// included: its peak depends on clocks the process cannot see; set it in the recipe).
pub fn known_peak_flops(device_name: &str, dtype: DType) -> Option<f64> {
    // (name fragment, bf16/f16 TFLOP/s, f32 TFLOP/s), from the vendors' datasheets, without sparsity.
    // More specific fragments come first.
    const GPUS: [(&str, f64, f64); 8] = [
        ("H100 PCIe", 756.0, 51.2),
        ("H100 NVL", 835.0, 60.0),
        ("H100", 989.4, 66.9),
        ("H200", 989.4, 66.9),
        ("A100", 312.0, 19.5),
        ("L40S", 362.05, 91.6),
        ("L4", 121.0, 30.3),
        ("RTX 4090", 165.2, 82.6),
    ];
    let (_, half, single) = GPUS.iter().find(|(name, ..)| device_name.contains(name))?;
    match dtype {
        DType::BF16 | DType::F16 => Some(half * 1e12),
        DType::F32 => Some(single * 1e12),
        _ => None,
    }
}

/// The peak FLOP/s to measure MFU against on `device` in `dtype`: `configured_tflops` when given,
/// else the datasheet peak of a known GPU (see [`known_peak_flops`]).
pub fn peak_flops(configured_tflops: Option<f64>, device: &Device, dtype: DType) -> Option<f64> {
    configured_tflops
        .map(|tflops| tflops * 1e12)
        .or_else(|| known_peak_flops(&crate::runtime::device_name(device), dtype))
}

/// Model FLOPs utilisation: achieved `flops` over `seconds` as a fraction of `peak_flops_per_s`.
pub fn mfu(flops: f64, seconds: f64, peak_flops_per_s: f64) -> f64 {
    flops / seconds.max(1e-12) / peak_flops_per_s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Architecture;

    fn qwen25_half_b() -> ModelConfig {
        let mut config = crate::model::init::tiny_config(Architecture::Qwen2, 151_936);
        config.hidden_size = 896;
        config.intermediate_size = 4864;
        config.num_hidden_layers = 24;
        config.num_attention_heads = 14;
        config.num_key_value_heads = 2;
        config.head_dim = 64;
        config.tie_word_embeddings = true;
        config
    }

    #[test]
    fn training_flops_follow_the_palm_count() {
        let config = qwen25_half_b();
        // Qwen2.5-0.5B: 494M parameters with the tied embedding, of which 136M are the embedding;
        // the matmul weights are the 358M non-embedding weights (minus norms and biases) plus the
        // 136M-weight output projection.
        let per_token = training_flops(&config, [1]);
        let weights = per_token / 6.0;
        assert!((weights - 4.94e8).abs() < 0.01e8, "{weights}");
        // The attention term grows with the square of the example length: 12·24·896 per token
        // and context position.
        let long = training_flops(&config, [1024]);
        let expected = 1024.0 * 6.0 * weights + 12.0 * 24.0 * 896.0 * 1024.0 * 1024.0;
        assert!(
            (long - expected).abs() / expected < 1e-3,
            "{long} vs {expected}"
        );
        // Two examples of 512 cost less than one of 1024 (no attention across examples).
        assert!(training_flops(&config, [512, 512]) < long);
    }

    #[test]
    fn peaks_are_known_for_datacenter_gpus_and_mfu_is_their_fraction() {
        let h100 = known_peak_flops("NVIDIA H100 80GB HBM3", DType::BF16).unwrap();
        assert_eq!(h100, 989.4e12);
        assert_eq!(
            known_peak_flops("NVIDIA H100 PCIe", DType::BF16),
            Some(756e12)
        );
        assert_eq!(
            known_peak_flops("NVIDIA A100-SXM4-80GB", DType::F32),
            Some(19.5e12)
        );
        assert_eq!(known_peak_flops("cpu", DType::F32), None);
        assert!((mfu(h100 * 2.0 * 0.4, 2.0, h100) - 0.4).abs() < 1e-12);
    }
}
