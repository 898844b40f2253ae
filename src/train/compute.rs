//! Compute accounting shared by the training stages and the report: FLOPs estimated as
//! 6·params·tokens for forward+backward updates plus 2·params·tokens for generation.

/// Estimated FLOPs of `update_tokens` trained (forward and backward) and `generated_tokens` sampled
/// by a model of `parameters` parameters.
pub fn estimated_flops(parameters: usize, update_tokens: u64, generated_tokens: u64) -> f64 {
    let p = parameters as f64;
    6.0 * p * update_tokens as f64 + 2.0 * p * generated_tokens as f64
}
