//! A decoder whose weights are candle `Var`s, so a loss's `backward()` yields a gradient for each.

use candle_core::{DType, Device, Var};

use crate::model::{Decoder, ModelConfig, Result, Weights};

/// A decoder built on trainable variables, with the variables listed by Hugging Face name.
#[derive(Debug)]
pub struct TrainableDecoder {
    /// The model; its weight tensors are the variables below.
    pub model: Decoder,
    /// Every trainable parameter with its name.
    pub params: Vec<(String, Var)>,
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
        Ok(TrainableDecoder { model, params })
    }

    /// Trainable copies of `model`'s weights, in its dtype and on its device.
    pub fn from_model(model: &Decoder) -> Result<Self> {
        let mut weights = Weights::new("(model)");
        for (name, tensor) in model.named_parameters() {
            weights.insert(name, tensor, "(model)");
        }
        Self::new(model.config(), &weights, model.dtype(), model.device())
    }
}
