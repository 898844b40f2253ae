//! AdamW with f32 moments, global-norm gradient clipping and gradient accumulation. On the CPU the
//! moments are host buffers, and moments and weights are updated in place (one fused pass per
//! parameter, instead of the ~10 tensor ops per parameter of candle_nn's AdamW, and no new buffer
//! for the updated weights); on a GPU they stay on the device beside the weights.

use candle_core::backprop::GradStore;
use std::sync::Mutex;

use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Storage, Tensor, Var};
use rayon::prelude::*;
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

/// Values per parallel task of the host update.
const UPDATE_CHUNK: usize = 1 << 16;

/// The two AdamW moments of one parameter.
enum Moments {
    /// On the CPU: host buffers updated in place, one fused pass per parameter.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// On an accelerator: f32 tensors beside the weights, updated with tensor ops there (no
    /// weight, gradient or moment crosses to the host).
    Device { m: Tensor, v: Tensor },
}

/// One parameter's optimiser state. The variable itself is the f32 master copy of the weights, and
/// the accumulated gradient is kept as the tensor backward produced (no zeroed buffer, no copy),
/// so a parameter costs its weights, one gradient and two moments: 16 bytes per value.
struct Slot {
    name: String,
    var: Var,
    grad: Option<Tensor>,
    moments: Moments,
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

/// Calls `f` with `t`'s values as f32: read in place when `t` is a contiguous f32 CPU tensor,
/// otherwise from a host copy.
fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            if let Ok(values) = cpu.as_slice::<f32>() {
                return Ok(f(&values[start..end]));
            }
        }
    }
    Ok(f(&host_f32(t)?))
}

impl Moments {
    /// Zero moments for `var`, on the host for a CPU variable and beside it otherwise.
    fn zeros(var: &Var) -> Result<Self> {
        let tensor = var.as_tensor();
        Ok(if tensor.device().is_cpu() {
            let n = tensor.elem_count();
            Moments::Host {
                m: vec![0.0; n],
                v: vec![0.0; n],
            }
        } else {
            Moments::Device {
                m: tensor.zeros_like()?,
                v: tensor.zeros_like()?,
            }
        })
    }
}

/// The scalars of one AdamW step, shared by every parameter.
#[derive(Clone, Copy)]
struct StepScalars {
    clip: f32,
    b1: f32,
    b2: f32,
    step_size: f32,
    inv_bias2_sqrt: f32,
    eps: f32,
}

impl Slot {
    /// Sum of the squared accumulated gradient: added to `host` value by value on the CPU; on a
    /// device, added to the device scalar `device` (f64), so the norm needs one synchronisation
    /// for all parameters instead of one each.
    fn add_grad_sum_sq(&self, host: &mut f64, device: &mut Option<Tensor>) -> Result<()> {
        let Some(grad) = &self.grad else {
            return Ok(());
        };
        if grad.device().is_cpu() {
            with_host_f32(grad, |g| {
                for &x in g {
                    *host += f64::from(x) * f64::from(x);
                }
            })
        } else {
            let sum = grad.sqr()?.sum_all()?.to_dtype(DType::F64)?;
            *device = Some(match device.take() {
                None => sum,
                Some(total) => (total + sum)?,
            });
            Ok(())
        }
    }

    /// Applies one AdamW update with weight-decay factor `decay` and clears the gradient.
    fn update(&mut self, s: StepScalars, decay: f32) -> Result<()> {
        let grad = self.grad.take().ok_or_else(|| {
            ModelError::Invalid(format!("parameter {} received no gradient", self.name))
        })?;
        let weights = self.var.as_tensor();
        match &mut self.moments {
            Moments::Host { m, v } => {
                let update = HostUpdate {
                    moments: Mutex::new((m, v)),
                    scalars: s,
                    decay,
                };
                weights.inplace_op2(&grad.contiguous()?, &update)?;
            }
            Moments::Device { m, v } => {
                let g = grad.affine(f64::from(s.clip), 0.0)?;
                *m = (m.affine(f64::from(s.b1), 0.0)? + g.affine(f64::from(1.0 - s.b1), 0.0)?)?;
                *v = (v.affine(f64::from(s.b2), 0.0)?
                    + g.sqr()?.affine(f64::from(1.0 - s.b2), 0.0)?)?;
                let denominator = v
                    .sqrt()?
                    .affine(f64::from(s.inv_bias2_sqrt), f64::from(s.eps))?;
                let step = (&*m / denominator)?.affine(f64::from(s.step_size), 0.0)?;
                self.var
                    .set(&(weights.affine(f64::from(1.0 - decay), 0.0)? - step)?)?;
            }
        }
        Ok(())
    }
}

/// AdamW's update of one CPU parameter, fused into one pass and written into the variable's own
/// storage (an in-place op on the weights), so no second buffer of the parameter's size exists.
/// The moments are the slot's host buffers (behind a lock only because candle passes the op by
/// shared reference).
struct HostUpdate<'a> {
    moments: Mutex<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
    scalars: StepScalars,
    decay: f32,
}

impl InplaceOp2 for HostUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-host-update"
    }

    fn cpu_fwd(
        &self,
        weights: &mut CpuStorage,
        weights_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (weights, grad) else {
            candle_core::bail!("AdamW's host update needs f32 weights and gradients");
        };
        let (Some((p_start, p_end)), Some((g_start, g_end))) = (
            weights_layout.contiguous_offsets(),
            grad_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("AdamW's host update needs contiguous weights and gradients");
        };
        let (p, g) = (&mut p[p_start..p_end], &g[g_start..g_end]);
        let mut moments = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("AdamW's moments lock is poisoned".into()))?;
        let (m, v) = &mut *moments;
        let (s, decay) = (self.scalars, self.decay);
        // Each value's update is independent: chunks run on every core with the same arithmetic
        // as one serial pass.
        p.par_chunks_mut(UPDATE_CHUNK)
            .zip(g.par_chunks(UPDATE_CHUNK))
            .zip(m.par_chunks_mut(UPDATE_CHUNK))
            .zip(v.par_chunks_mut(UPDATE_CHUNK))
            .for_each(|(((p, g), m), v)| {
                for i in 0..p.len() {
                    let g = g[i] * s.clip;
                    let mi = s.b1 * m[i] + (1.0 - s.b1) * g;
                    let vi = s.b2 * v[i] + (1.0 - s.b2) * g * g;
                    m[i] = mi;
                    v[i] = vi;
                    let decayed = p[i] * (1.0 - decay);
                    p[i] = decayed - s.step_size * mi / (vi.sqrt() * s.inv_bias2_sqrt + s.eps);
                }
            });
        Ok(())
    }
}

impl AdamW {
    /// Starts fresh state (zero moments) for `params`, which must be f32: the variables are the
    /// master weights.
    pub fn new(params: &[(String, Var)], config: AdamWConfig) -> Result<Self> {
        let slots = params
            .iter()
            .map(|(name, var)| {
                if var.dtype() != DType::F32 {
                    return Err(ModelError::Invalid(format!(
                        "parameter {name} is {:?}: AdamW trains f32 master weights (compute in bf16 \
                         with a precision setting instead)",
                        var.dtype()
                    )));
                }
                Ok(Slot {
                    name: name.clone(),
                    var: var.clone(),
                    decay: decays(name, &config),
                    grad: None,
                    moments: Moments::zeros(var)?,
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
            // Detached: candle's gradients record the activations they were computed from, and a
            // kept gradient would keep the whole forward graph alive until the update.
            let grad = grad.to_dtype(DType::F32)?.detach();
            let scaled = if scale == 1.0 {
                grad
            } else {
                grad.affine(f64::from(scale), 0.0)?
            };
            slot.grad = Some(match slot.grad.take() {
                None => scaled,
                Some(sum) => (sum + scaled)?,
            });
        }
        Ok(())
    }

    /// Global L2 norm of the accumulated gradients.
    pub fn grad_norm(&self) -> Result<f64> {
        let (mut host, mut device) = (0.0, None);
        for slot in &self.slots {
            slot.add_grad_sum_sq(&mut host, &mut device)?;
        }
        if let Some(device) = device {
            host += device.to_scalar::<f64>()?;
        }
        Ok(host.sqrt())
    }

    /// Clips, applies one AdamW update at learning rate `lr`, writes the new weights into the
    /// variables and clears the accumulated gradients. Refuses (and changes nothing) when the gradient
    /// is not finite.
    pub fn step(&mut self, lr: f64) -> Result<StepReport> {
        let grad_norm = self.grad_norm()?;
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
        let scalars = StepScalars {
            clip: clip as f32,
            b1: c.beta1 as f32,
            b2: c.beta2 as f32,
            step_size: (lr / bias1) as f32,
            inv_bias2_sqrt: (1.0 / bias2.sqrt()) as f32,
            eps: c.eps as f32,
        };
        for slot in &mut self.slots {
            let decay = if slot.decay {
                (lr * c.weight_decay) as f32
            } else {
                0.0
            };
            slot.update(scalars, decay)?;
        }
        Ok(StepReport {
            grad_norm,
            clipped: scalars.clip < 1.0,
        })
    }

    /// The moments as named tensors (`m.NAME`, `v.NAME`) on the CPU, for a checkpoint.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let cpu = candle_core::Device::Cpu;
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for slot in &self.slots {
            let shape = slot.var.as_tensor().shape().clone();
            let (m, v) = match &slot.moments {
                Moments::Host { m, v } => (
                    Tensor::from_slice(m, shape.clone(), &cpu)?,
                    Tensor::from_slice(v, shape, &cpu)?,
                ),
                Moments::Device { m, v } => (m.to_device(&cpu)?, v.to_device(&cpu)?),
            };
            out.push((format!("m.{}", slot.name), m));
            out.push((format!("v.{}", slot.name), v));
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
            let weights = slot.var.as_tensor();
            let read = |prefix: &str| -> Result<Tensor> {
                let name = format!("{prefix}.{}", slot.name);
                let tensor = tensors.get(&name).ok_or_else(|| ModelError::Weights {
                    file: origin.to_string(),
                    tensor: name.clone(),
                    message: "missing optimiser state".into(),
                })?;
                if tensor.elem_count() != weights.elem_count() {
                    return Err(ModelError::Weights {
                        file: origin.to_string(),
                        tensor: name,
                        message: format!(
                            "has {} values, the parameter has {}",
                            tensor.elem_count(),
                            weights.elem_count()
                        ),
                    });
                }
                Ok(tensor.to_dtype(DType::F32)?.reshape(weights.shape())?)
            };
            let (m, v) = (read("m")?, read("v")?);
            slot.moments = match slot.moments {
                Moments::Host { .. } => Moments::Host {
                    m: host_f32(&m)?,
                    v: host_f32(&v)?,
                },
                Moments::Device { .. } => Moments::Device {
                    m: m.to_device(weights.device())?,
                    v: v.to_device(weights.device())?,
                },
            };
        }
        self.steps = steps;
        Ok(())
    }
}
