//! A decoder whose weights are candle `Var`s, so a loss's `backward()` yields a gradient for each,
//! and the copy of it a training step computes with (the same tensors in f32, or a bf16 cast whose
//! backward returns the gradients to the f32 variables).

use candle_core::{DType, Device, Var};

use crate::model::{Decoder, ModelConfig, Result, Weights};

/// A decoder built on trainable variables, with the variables listed by Hugging Face name.
#[derive(Debug)]
pub struct TrainableDecoder {
    /// The model; its weight tensors are the variables below.
    pub model: Decoder,
    /// Every trainable parameter with its name.
    pub params: Vec<(String, Var)>,
    /// The dtype [`TrainableDecoder::compute_model`] computes in.
    compute_dtype: DType,
}

impl TrainableDecoder {
    /// Copies `weights` (converted to `dtype`) into fresh variables and builds the decoder on them.
    pub fn new(
        config: &ModelConfig,
        weights: &Weights,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut vars = std::collections::HashMap::with_capacity(weights.len());
        let mut var_weights = Weights::new("(trainable)");
        for (name, tensor) in weights.iter() {
            let var = Var::from_tensor(&tensor.to_dtype(dtype)?.to_device(device)?)?;
            var_weights.insert(name.clone(), var.as_tensor().clone(), weights.file_of(name));
            vars.insert(name.clone(), var);
        }
        let model = Decoder::from_weights(config, &var_weights, dtype, device)?;
        // Only the tensors the decoder uses are parameters (a checkpoint may hold extras).
        let params = model
            .named_parameters()
            .into_iter()
            .filter_map(|(name, _)| vars.remove(&name).map(|var| (name, var)))
            .collect();
        Ok(TrainableDecoder {
            model,
            params,
            compute_dtype: dtype,
        })
    }

    /// The same variables, with training steps computing in `dtype` (see [`crate::train::precision`]).
    pub fn computing_in(self, dtype: DType) -> Self {
        TrainableDecoder {
            compute_dtype: dtype,
            ..self
        }
    }

    /// The dtype training steps compute in.
    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// The decoder a training step runs: [`TrainableDecoder::model`] itself when it computes in the
    /// variables' dtype, otherwise a cast of the current variables (build it again after each
    /// optimiser step). Either way gradients reach the variables.
    pub fn compute_model(&self) -> Result<Decoder> {
        cast_decoder(&self.model, self.compute_dtype)
    }

    /// Trainable copies of `model`'s weights, in its dtype and on its device. `model` then becomes a
    /// view of the variables, so the weights it was loaded with are freed unless something else
    /// (a frozen reference) still holds them: a training run keeps one copy, not two (4 bytes a
    /// parameter in f32).
    pub fn from_model(model: &mut Decoder) -> Result<Self> {
        let mut weights = Weights::new("(model)");
        for (name, tensor) in model.named_parameters() {
            weights.insert(name, tensor, "(model)");
        }
        let trainable = Self::new(model.config(), &weights, model.dtype(), model.device())?;
        *model = trainable.model.clone();
        Ok(trainable)
    }
}

/// `model` with its weights in `dtype`: the model itself when they already are, otherwise a copy
/// through candle's differentiable cast.
pub fn cast_decoder(model: &Decoder, dtype: DType) -> Result<Decoder> {
    if model.dtype() == dtype {
        return Ok(model.clone());
    }
    let mut weights = Weights::new("(cast)");
    for (name, tensor) in model.named_parameters() {
        weights.insert(name, tensor, "(cast)");
    }
    Decoder::from_weights(model.config(), &weights, dtype, model.device())
}
