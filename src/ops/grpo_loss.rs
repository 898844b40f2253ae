//! The GRPO per-token clipped objective with optional k3 KL penalty, fused with its
//! aggregation (GRPO / Dr. GRPO / DAPO) into one scalar loss plus detached metrics, with a
//! backward w.r.t. the policy log-probs.

use super::cpu::{contiguous_slice, unsupported_dtype, widen_half};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

const OP_NAME: &str = "grpo_loss";

/// How per-token losses are reduced to the scalar loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GrpoAggregation {
    /// Mean over each sequence's unmasked tokens, then mean over the `B` sequences (a
    /// sequence without tokens contributes 0 but still counts).
    Grpo,
    /// Sum over all unmasked tokens divided by `B × max_completion_len`.
    DrGrpo {
        /// The constant normaliser per sequence (the generation length budget).
        max_completion_len: usize,
    },
    /// Token level: sum over all unmasked tokens divided by their count (0 if none).
    Dapo,
}

/// Hyper-parameters of [`grpo_loss`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrpoConfig {
    /// Lower clip range: the ratio is clipped below at `1 - eps_low`.
    pub eps_low: f64,
    /// Upper clip range: the ratio is clipped above at `1 + eps_high`.
    pub eps_high: f64,
    /// KL coefficient; requires `ref_logp` when non-zero.
    pub beta: f64,
    /// Reduction of per-token losses.
    pub aggregation: GrpoAggregation,
}

/// Inputs of [`grpo_loss`]; all per-token tensors are `[B, T]`.
#[derive(Clone, Copy, Debug)]
pub struct GrpoInputs<'a> {
    /// Policy log-probs of the sampled tokens (the only differentiable input).
    pub logp: &'a Tensor,
    /// Log-probs under the policy that generated the samples.
    pub old_logp: &'a Tensor,
    /// Log-probs under the reference policy, for the KL term (optional).
    pub ref_logp: Option<&'a Tensor>,
    /// Per-sequence advantages `[B]`.
    pub advantages: &'a Tensor,
    /// Completion mask `[B, T]`, any dtype; non-zero marks a token that counts.
    pub completion_mask: &'a Tensor,
}

/// Result of [`grpo_loss`]: the differentiable scalar loss and detached scalar metrics, all
/// token-level means over unmasked tokens (0 when there are none).
#[derive(Clone, Debug)]
pub struct GrpoLoss {
    /// Scalar loss, differentiable w.r.t. `logp`.
    pub loss: Tensor,
    /// Fraction of tokens whose clipped branch is active (ratio < 1 - eps_low with A < 0, or
    /// ratio > 1 + eps_high with A > 0), i.e. tokens that get no policy gradient.
    pub clip_fraction: Tensor,
    /// Mean k3 KL estimate `exp(ref - logp) - (ref - logp) - 1` (0 without `ref_logp`).
    pub mean_kl: Tensor,
    /// Mean importance ratio `exp(logp - old_logp)`.
    pub mean_ratio: Tensor,
}

impl GrpoLoss {
    /// The same values off the autograd graph (so keeping them keeps no activations alive).
    pub fn detach(&self) -> GrpoLoss {
        GrpoLoss {
            loss: self.loss.detach(),
            clip_fraction: self.clip_fraction.detach(),
            mean_kl: self.mean_kl.detach(),
            mean_ratio: self.mean_ratio.detach(),
        }
    }
}

/// Fused GRPO objective. Per token: `ratio = exp(logp - old_logp)`,
/// `loss = -min(ratio·A, clip(ratio, 1 - eps_low, 1 + eps_high)·A) + beta·KL`, aggregated
/// per [`GrpoAggregation`]. Gradient only w.r.t. `logp`. Masked tokens contribute nothing
/// and get a zero gradient. The constant inputs are copied to the host in f64 when the op is
/// built; the loss and metrics are accumulated in f64 and returned in `logp`'s dtype.
pub fn grpo_loss(inputs: &GrpoInputs<'_>, config: &GrpoConfig) -> Result<GrpoLoss> {
    let (b, t) = match inputs.logp.dims() {
        &[b, t] => (b, t),
        dims => bail!("{OP_NAME}: logp must be [B, T], got {dims:?}"),
    };
    let per_token = [
        ("old_logp", Some(inputs.old_logp)),
        ("ref_logp", inputs.ref_logp),
        ("completion_mask", Some(inputs.completion_mask)),
    ];
    for (name, tensor) in per_token {
        if let Some(tensor) = tensor {
            if tensor.dims() != [b, t] {
                bail!(
                    "{OP_NAME}: {name} must be [B, T] = [{b}, {t}] like logp, got {:?}",
                    tensor.dims()
                );
            }
        }
    }
    if inputs.advantages.dims() != [b] {
        bail!(
            "{OP_NAME}: advantages must be [B] = [{b}], got {:?}",
            inputs.advantages.dims()
        );
    }
    if config.beta != 0.0 && inputs.ref_logp.is_none() {
        bail!("{OP_NAME}: beta = {} needs ref_logp", config.beta);
    }
    if let GrpoAggregation::DrGrpo {
        max_completion_len: 0,
    } = config.aggregation
    {
        bail!("{OP_NAME}: DrGrpo max_completion_len must be at least 1");
    }
    let host =
        |x: &Tensor| -> Result<Vec<f64>> { x.to_dtype(DType::F64)?.flatten_all()?.to_vec1() };
    let problem = Problem {
        batch: b,
        seq_len: t,
        old_logp: host(inputs.old_logp)?,
        ref_logp: inputs.ref_logp.map(host).transpose()?,
        advantages: host(inputs.advantages)?,
        mask: host(inputs.completion_mask)?
            .iter()
            .map(|&m| m != 0.0)
            .collect(),
        config: *config,
    };
    let (logp32, dtype) = widen_half(inputs.logp)?;
    let packed = logp32.contiguous()?.apply_op1(GrpoLossOp { problem })?;
    let metric = |i: usize| -> Result<Tensor> { packed.get(i)?.detach().to_dtype(dtype) };
    Ok(GrpoLoss {
        loss: packed.get(0)?.to_dtype(dtype)?,
        clip_fraction: metric(1)?,
        mean_kl: metric(2)?,
        mean_ratio: metric(3)?,
    })
}

/// Everything but `logp`, copied to the host in f64.
#[derive(Clone)]
pub(super) struct Problem {
    pub(super) batch: usize,
    pub(super) seq_len: usize,
    pub(super) old_logp: Vec<f64>,
    pub(super) ref_logp: Option<Vec<f64>>,
    pub(super) advantages: Vec<f64>,
    pub(super) mask: Vec<bool>,
    pub(super) config: GrpoConfig,
}

/// Loss, metrics and `d loss / d logp` for one `logp`.
struct Evaluation {
    /// `[loss, clip_fraction, mean_kl, mean_ratio]`
    values: [f64; 4],
    grad_logp: Vec<f64>,
}

impl Problem {
    /// Aggregation weight of each unmasked token of sequence `row`.
    pub(super) fn token_weight(&self, row: usize, total_tokens: usize) -> f64 {
        let b = self.batch as f64;
        match self.config.aggregation {
            GrpoAggregation::Grpo => {
                let tokens = self.mask[row * self.seq_len..(row + 1) * self.seq_len]
                    .iter()
                    .filter(|&&m| m)
                    .count();
                1.0 / (tokens.max(1) as f64 * b)
            }
            GrpoAggregation::DrGrpo { max_completion_len } => 1.0 / (b * max_completion_len as f64),
            GrpoAggregation::Dapo => 1.0 / total_tokens.max(1) as f64,
        }
    }

    fn evaluate(&self, logp: &[f64]) -> Evaluation {
        let cfg = &self.config;
        let total_tokens = self.mask.iter().filter(|&&m| m).count();
        let mut grad_logp = vec![0.0; logp.len()];
        let (mut loss, mut clipped, mut kl_sum, mut ratio_sum) = (0.0, 0usize, 0.0, 0.0);
        for row in 0..self.batch {
            let weight = self.token_weight(row, total_tokens);
            let adv = self.advantages[row];
            for i in row * self.seq_len..(row + 1) * self.seq_len {
                if !self.mask[i] {
                    continue;
                }
                let ratio = (logp[i] - self.old_logp[i]).exp();
                let unclipped = ratio * adv;
                let clipped_ratio = ratio.clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high);
                let clip_active = clipped_ratio * adv < unclipped;
                let (objective, d_objective) = if clip_active {
                    (clipped_ratio * adv, 0.0)
                } else {
                    (unclipped, unclipped)
                };
                let (kl, d_kl) = match &self.ref_logp {
                    Some(ref_logp) => {
                        let delta = ref_logp[i] - logp[i];
                        (delta.exp() - delta - 1.0, 1.0 - delta.exp())
                    }
                    None => (0.0, 0.0),
                };
                loss += weight * (-objective + cfg.beta * kl);
                grad_logp[i] = weight * (-d_objective + cfg.beta * d_kl);
                clipped += usize::from(clip_active);
                kl_sum += kl;
                ratio_sum += ratio;
            }
        }
        let per_token = 1.0 / total_tokens.max(1) as f64;
        Evaluation {
            values: [
                loss,
                clipped as f64 * per_token,
                kl_sum * per_token,
                ratio_sum * per_token,
            ],
            grad_logp,
        }
    }
}

/// Forward op on `logp`; output `[loss, clip_fraction, mean_kl, mean_ratio]`.
struct GrpoLossOp {
    problem: Problem,
}

/// Backward op: inputs `(logp, grad_packed)`, output `grad_logp`.
struct GrpoLossBackward {
    problem: Problem,
}

fn to_f64_vec(storage: &CpuStorage, layout: &Layout, op: &str) -> Result<Vec<f64>> {
    match storage {
        CpuStorage::F32(_) => Ok(contiguous_slice::<f32>(storage, layout, op)?
            .iter()
            .map(|&v| v as f64)
            .collect()),
        CpuStorage::F64(_) => Ok(contiguous_slice::<f64>(storage, layout, op)?.to_vec()),
        other => Err(unsupported_dtype(op, other)),
    }
}

/// `values` in the dtype of `like` (f32 or f64).
fn from_f64_vec(values: &[f64], like: &CpuStorage) -> CpuStorage {
    match like {
        CpuStorage::F32(_) => CpuStorage::F32(values.iter().map(|&v| v as f32).collect()),
        _ => CpuStorage::F64(values.to_vec()),
    }
}

impl CustomOp1 for GrpoLossOp {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let logp = to_f64_vec(storage, layout, OP_NAME)?;
        let values = self.problem.evaluate(&logp).values;
        Ok((from_f64_vec(&values, storage), Shape::from(4)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::grpo_loss::forward(OP_NAME, &self.problem, (storage, layout))
    }

    fn bwd(&self, logp: &Tensor, _packed: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad_logp = logp.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &GrpoLossBackward {
                problem: self.problem.clone(),
            },
        )?;
        Ok(Some(grad_logp))
    }
}

impl CustomOp2 for GrpoLossBackward {
    fn name(&self) -> &'static str {
        "grpo_loss_backward"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let logp = to_f64_vec(ls, ll, self.name())?;
        let upstream = to_f64_vec(gs, gl, self.name())?[0];
        let grad: Vec<f64> = self
            .problem
            .evaluate(&logp)
            .grad_logp
            .iter()
            .map(|&g| g * upstream)
            .collect();
        Ok((from_f64_vec(&grad, ls), ll.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ls: &candle_core::CudaStorage,
        ll: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::grpo_loss::backward(self.name(), &self.problem, (gs, gl), (ls, ll))
    }
}
