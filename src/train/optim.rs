//! AdamW with f32 moments, updated in place on host buffers (one fused pass per parameter, instead of
//! the ~10 tensor ops per parameter of candle_nn's AdamW), global-norm gradient clipping and gradient
//! accumulation.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::model::{ModelError, Result};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Exempt norms, biases and embeddings from weight decay (the usual choice for transformers).
    pub no_decay_norms_biases_embeddings: bool,
    /// Clip the global gradient norm to this value (0 = no clipping).
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            no_decay_norms_biases_embeddings: true,
            max_grad_norm: 1.0,
        }
    }
}

/// One parameter's optimiser state.
struct Slot {
    name: String,
    var: Var,
    value: Vec<f32>,
    grad: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    decay: bool,
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether the gradient was scaled down.
    pub clipped: bool,
}

/// AdamW over a fixed list of named variables.
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    steps: u64,
}

fn decays(name: &str, config: &AdamWConfig) -> bool {
    if !config.no_decay_norms_biases_embeddings {
        return true;
    }
    !(name.ends_with(".bias") || name.contains("norm") || name.contains("embed_tokens"))
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

impl AdamW {
    /// Starts fresh state (zero moments) for `params`.
    pub fn new(params: &[(String, Var)], config: AdamWConfig) -> Result<Self> {
        let slots = params
            .iter()
            .map(|(name, var)| {
                let value = host_f32(var.as_tensor())?;
                let n = value.len();
                Ok(Slot {
                    name: name.clone(),
                    var: var.clone(),
                    decay: decays(name, &config),
                    value,
                    grad: vec![0.0; n],
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            config,
            slots,
            steps: 0,
        })
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Adds `scale ×` the gradients of `grads` to the accumulated gradients.
    /// A parameter without a gradient in `grads` is an error: it would silently never train.
    pub fn accumulate(&mut self, grads: &GradStore, scale: f32) -> Result<()> {
        for slot in &mut self.slots {
            let grad = grads.get(slot.var.as_tensor()).ok_or_else(|| {
                ModelError::Invalid(format!("parameter {} received no gradient", slot.name))
            })?;
            let grad = host_f32(grad)?;
            for (acc, g) in slot.grad.iter_mut().zip(grad) {
                *acc += scale * g;
            }
        }
        Ok(())
    }

    /// Global L2 norm of the accumulated gradients.
    pub fn grad_norm(&self) -> f64 {
        self.slots
            .iter()
            .flat_map(|s| s.grad.iter())
            .map(|&g| f64::from(g) * f64::from(g))
            .sum::<f64>()
            .sqrt()
    }

    /// Clips, applies one AdamW update at learning rate `lr`, writes the new weights into the
    /// variables and clears the accumulated gradients. Refuses (and changes nothing) when the gradient
    /// is not finite.
    pub fn step(&mut self, lr: f64) -> Result<StepReport> {
        let grad_norm = self.grad_norm();
        if !grad_norm.is_finite() {
            return Err(ModelError::Invalid(format!(
                "gradient norm is {grad_norm}: refusing to update the weights"
            )));
        }
        let c = &self.config;
        let clip = if c.max_grad_norm > 0.0 && grad_norm > c.max_grad_norm {
            c.max_grad_norm / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.steps += 1;
        let t = self.steps as f64;
        let bias1 = 1.0 - c.beta1.powf(t);
        let bias2 = 1.0 - c.beta2.powf(t);
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let step_size = (lr / bias1) as f32;
        let inv_bias2_sqrt = (1.0 / bias2.sqrt()) as f32;
        let eps = c.eps as f32;
        let clip = clip as f32;
        for slot in &mut self.slots {
            let decay = if slot.decay {
                (lr * c.weight_decay) as f32
            } else {
                0.0
            };
            for i in 0..slot.value.len() {
                let g = slot.grad[i] * clip;
                let m = b1 * slot.m[i] + (1.0 - b1) * g;
                let v = b2 * slot.v[i] + (1.0 - b2) * g * g;
                slot.m[i] = m;
                slot.v[i] = v;
                let p = slot.value[i] * (1.0 - decay);
                slot.value[i] = p - step_size * m / (v.sqrt() * inv_bias2_sqrt + eps);
                slot.grad[i] = 0.0;
            }
            let tensor = slot.var.as_tensor();
            let updated = Tensor::from_slice(&slot.value, tensor.shape(), tensor.device())?
                .to_dtype(tensor.dtype())?;
            slot.var.set(&updated)?;
        }
        Ok(StepReport {
            grad_norm,
            clipped: clip < 1.0,
        })
    }

    /// The moments as named tensors (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for slot in &self.slots {
            let shape = slot.var.as_tensor().shape().clone();
            let cpu = candle_core::Device::Cpu;
            out.push((
                format!("m.{}", slot.name),
                Tensor::from_slice(&slot.m, shape.clone(), &cpu)?,
            ));
            out.push((
                format!("v.{}", slot.name),
                Tensor::from_slice(&slot.v, shape, &cpu)?,
            ));
        }
        Ok(out)
    }

    /// Restores moments saved by [`AdamW::state_tensors`] after `steps` steps; `origin` names the file in errors.
    pub fn load_state(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        steps: u64,
        origin: &str,
    ) -> Result<()> {
        for slot in &mut self.slots {
            for (prefix, target) in [("m", &mut slot.m), ("v", &mut slot.v)] {
                let name = format!("{prefix}.{}", slot.name);
                let tensor = tensors.get(&name).ok_or_else(|| ModelError::Weights {
                    file: origin.to_string(),
                    tensor: name.clone(),
                    message: "missing optimiser state".into(),
                })?;
                let values = host_f32(tensor)?;
                if values.len() != target.len() {
                    return Err(ModelError::Weights {
                        file: origin.to_string(),
                        tensor: name,
                        message: format!(
                            "has {} values, the parameter has {}",
                            values.len(),
                            target.len()
                        ),
                    });
                }
                *target = values;
            }
            slot.value = host_f32(slot.var.as_tensor())?;
        }
        self.steps = steps;
        Ok(())
    }
}
