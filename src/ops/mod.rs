//! Custom candle ops with hand-written backward passes for the training path.
//!
//! candle 0.11's fused `candle_nn` ops (`rms_norm`, `softmax_last_dim`, `rotary_emb::rope*`)
//! record no backward, compositions of small ops cost ~4× the forward in backward, and
//! `candle_nn::loss::cross_entropy` materialises several `N × V` buffers. Each op here is a
//! [`candle_core::CustomOp1`]/`2`/`3` whose `bwd` runs a second custom op, so forward and
//! backward are both single kernels.
//!
//! | op | module | CPU | CUDA |
//! |----|--------|-----|------|
//! | [`rms_norm`](fn@rms_norm) (grads: x, weight) | [`rms_norm`](mod@rms_norm) | f32, f64 (bf16/f16 via f32) | kernel; matches the CPU on an H200 |
//! | [`rope`](fn@rope) (grad: x) | [`rope`](mod@rope) | f32, f64 (bf16/f16 via f32) | kernel; matches the CPU on an H200 |
//! | [`softmax_last_dim`], [`masked_softmax`] (grad: x) | [`softmax`] | f32, f64 (bf16/f16 via f32) | kernel; matches the CPU on an H200 |
//! | [`attention`](fn@attention) (grads: q, k, v) | [`attention`](mod@attention) | f32, f64 (bf16/f16 via f32) | kernel; matches the CPU on an H200 |
//! | [`selective_log_softmax`](fn@selective_log_softmax), [`sft_loss`] (grads: hidden, lm_head) | [`selective_log_softmax`](mod@selective_log_softmax) | f32, f64 (bf16/f16 via f32) | kernel; matches the CPU on an H200 |
//! | [`linear_cross_entropy`](fn@linear_cross_entropy) (grads: hidden, lm_head) | [`linear_cross_entropy`](mod@linear_cross_entropy) | f32, f64: the loss and both gradients in the forward, rows of full-vocabulary logits at a time | [`selective_log_softmax`](fn@selective_log_softmax) |
//! | [`grpo_loss`](fn@grpo_loss) (grad: logp) | [`grpo_loss`](mod@grpo_loss) | f32, f64 (bf16/f16 via f32) | kernel; matches the CPU on an H200 |
//! | [`attention_with`] `AttentionKernel::Blocked` (grads: q, k, v) | `blocked_attention` | candle matmuls + [`masked_softmax`] | the same through cuBLAS; the default on CUDA, matches the CPU on an H200 |
//! | [`swiglu`](fn@swiglu) (grads: gate, up) | [`swiglu`](mod@swiglu) | f32, f64 (bf16/f16 via f32) | candle's `silu` and `mul` |
//! | [`swiglu_projection`](fn@swiglu_projection) (grads: x, w_gate, w_up) | [`swiglu_projection`](mod@swiglu_projection) | f32, f64: the gate and up projections and SwiGLU as one node | [`linear`](fn@linear) and [`swiglu`](fn@swiglu) |
//! | [`linear`](fn@linear) (grads: x, weight, bias) | [`linear`](mod@linear) | f32, f64: one node forward and backward, few rows through its own kernel (others: candle matmul) | candle matmul |
//!
//! The CUDA kernels (feature `cuda`, module `cuda`) take f32, bf16 and f16 natively and
//! accumulate in f32 (the GRPO loss in f64); f64 is CPU-only. Saved statistics and the packed
//! outputs that carry them (attention's `[o, lse]`, the selective log-softmax's
//! `[logp, entropy, lse]`, the GRPO loss and metrics) are f32 on CUDA whatever the input dtype;
//! the public functions return them in the input dtype, as on the CPU. The parity tests against
//! the CPU ops are `tests/ops_cuda_parity.rs` (`benches/gpu/run.sh` runs them on a GPU machine).
//!
//! # Structure
//!
//! Every forward and backward kernel is a private op struct implementing `cpu_fwd`, and
//! `cuda_fwd` behind `#[cfg(feature = "cuda")]`, which calls the launch code in
//! `cuda::<op family>` — the public functions and the `bwd` wiring are shared by both devices.
//! Ops that need more than three tensors in their backward keep the extra tensors (the
//! forward's packed output and its gradient) in the backward op struct. Ops with several
//! outputs or saved statistics return one packed 1-D buffer that the public wrapper splits
//! with zero-copy `narrow`/`reshape`.
//!
//! Unsupported dtypes and shapes are reported as candle errors naming the op and the shapes;
//! nothing panics on bad input.

pub mod attention;
mod blocked_attention;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod fast_exp;
mod few_rows_matmul;
pub mod grpo_loss;
pub mod linear;
pub mod linear_cross_entropy;
pub mod rms_norm;
pub mod rope;
pub mod selective_log_softmax;
pub mod softmax;
pub mod swiglu;
pub mod swiglu_projection;

/// `(start, len)` of the consecutive spans of at most `chunk` items that cover `0..total` (the
/// query blocks, vocabulary chunks and token chunks that ops and the trainers walk through).
pub(crate) fn spans(total: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..total)
        .step_by(chunk)
        .map(move |start| (start, chunk.min(total - start)))
}

pub use attention::{attention, attention_with, AttentionKernel, AttentionMask};
pub use grpo_loss::{grpo_loss, GrpoAggregation, GrpoConfig, GrpoInputs, GrpoLoss};
pub use linear::linear;
pub use linear_cross_entropy::{linear_cross_entropy, DEFAULT_LOGITS_CHUNK_ELEMENTS};
pub use rms_norm::rms_norm;
pub use rope::{rope, RopeLayout};
pub use selective_log_softmax::{
    selective_log_softmax, selective_log_softmax_f32, sft_loss, SelectiveLogSoftmax,
    DEFAULT_VOCAB_CHUNK, IGNORE_TARGET,
};
pub use softmax::{masked_softmax, softmax_last_dim, SoftmaxMask};
pub use swiglu::swiglu;
pub use swiglu_projection::swiglu_projection;
