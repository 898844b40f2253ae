//! Training: trainable decoders and token losses (SFT, GRPO and optimisers build on these).

pub mod loss;
pub mod trainable;
