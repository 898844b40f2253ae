//! RoPE parameters: read from `config.json` by transformers' own rules, in both layouts it writes,
//! and turned into the inverse frequencies and cos/sin scale transformers computes.
//!
//! transformers ≤ 4 writes `rope_theta` and `rope_scaling` at the top level; transformers ≥ 5 writes
//! one `rope_parameters` object (`{"rope_type": "default", "rope_theta": 1e6, …}`). transformers 5
//! reads both: a non-null `rope_scaling` replaces `rope_parameters`, a `rope_theta` inside the object
//! wins over the top-level one, `type` is the old name of `rope_type`, and `llama3` / `yarn` take
//! `original_max_position_embeddings` from the top level first, then from the object, then from
//! `max_position_embeddings`. [`parse`] follows those rules; a RoPE variant distill does not
//! implement (`dynamic`, `longrope`, per-layer-type parameters, `partial_rotary_factor` ≠ 1) is an
//! error naming the file and field, never a silent fallback to θ = 10,000.

use serde_json::{json, Map, Value};

use super::config::{config_error, Fields};
use super::error::Result;

/// θ when neither layout names one (transformers' `default_theta`).
pub const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// Llama 3.x frequency-dependent RoPE scaling (`rope_type == "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    /// Overall scale factor applied to low frequencies.
    pub factor: f64,
    /// Wavelength boundary (as a fraction of the original context) below which frequencies are scaled.
    pub low_freq_factor: f64,
    /// Wavelength boundary above which frequencies are kept.
    pub high_freq_factor: f64,
    /// Context length the model was pretrained with.
    pub original_max_position_embeddings: usize,
}

/// YaRN scaling (`rope_type == "yarn"`), as Qwen2.5 and Qwen3 ship it for long context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YarnRopeScaling {
    /// Context extension factor.
    pub factor: f64,
    /// Context length the model was pretrained with.
    pub original_max_position_embeddings: usize,
    /// Scale of cos/sin; derived from `factor` (and `mscale`s) when the config does not give it.
    pub attention_factor: Option<f64>,
    /// Rotations above which dimensions are extrapolated (default 32).
    pub beta_fast: f64,
    /// Rotations below which dimensions are interpolated (default 1).
    pub beta_slow: f64,
    /// Numerator scale of the derived attention factor (DeepSeek-style configs).
    pub mscale: Option<f64>,
    /// Denominator scale of the derived attention factor.
    pub mscale_all_dim: Option<f64>,
    /// Whether the correction range is rounded outwards to whole dimensions (default true).
    pub truncate: bool,
}

/// How RoPE frequencies are changed from the default `θ^(-2i/d)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.x scaling.
    Llama3(Llama3RopeScaling),
    /// YaRN.
    Yarn(YarnRopeScaling),
}

/// Reads θ and the scaling from `fields` (a whole `config.json`), by transformers 5's rules.
pub(super) fn parse(
    fields: &Fields,
    max_position_embeddings: usize,
) -> Result<(f64, Option<RopeScaling>)> {
    let origin = fields.origin;
    let (key, params) = match (
        fields.present("rope_scaling"),
        fields.present("rope_parameters"),
    ) {
        (Some(v), _) if !is_empty_object(v) => ("rope_scaling", Some(v)),
        (_, Some(v)) => ("rope_parameters", Some(v)),
        _ => ("rope_parameters", None),
    };
    let empty = Map::new();
    let params = match params {
        None => &empty,
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(config_error(
                origin,
                key,
                &format!("expected an object, found {other}"),
            ))
        }
    };
    let sub_origin = format!("{origin} ({key})");
    let sub = Fields {
        map: params,
        origin: &sub_origin,
    };
    if let Some((nested, _)) = params.iter().find(|(_, v)| v.is_object()) {
        return Err(config_error(
            origin,
            &format!("{key}.{nested}"),
            "RoPE parameters per layer type are not implemented",
        ));
    }
    let theta = match sub.optional_f64("rope_theta")? {
        Some(theta) => theta,
        None => fields
            .optional_f64("rope_theta")?
            .unwrap_or(DEFAULT_ROPE_THETA),
    };
    if !(theta.is_finite() && theta > 1.0) {
        return Err(config_error(
            origin,
            "rope_theta",
            &format!("{theta} is not a usable RoPE base (must be > 1)"),
        ));
    }
    let partial = match sub.optional_f64("partial_rotary_factor")? {
        Some(p) => Some((format!("{key}.partial_rotary_factor"), p)),
        None => fields
            .optional_f64("partial_rotary_factor")?
            .map(|p| ("partial_rotary_factor".to_string(), p)),
    };
    if let Some((field, p)) = partial {
        if p != 1.0 {
            return Err(config_error(
                origin,
                &field,
                &format!("{p}: partial rotary embeddings are not implemented (only 1.0)"),
            ));
        }
    }
    let kind = match sub.optional_string("rope_type")? {
        Some(kind) => kind,
        None => sub
            .optional_string("type")?
            .unwrap_or_else(|| "default".into()),
    };
    let original_context = || -> Result<usize> {
        Ok(
            match fields.optional_usize("original_max_position_embeddings")? {
                Some(n) => n,
                None => sub
                    .optional_usize("original_max_position_embeddings")?
                    .unwrap_or(max_position_embeddings),
            },
        )
    };
    let scaling = match kind.as_str() {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: positive(&sub, "factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3(Llama3RopeScaling {
            factor: positive(&sub, "factor")?,
            low_freq_factor: positive(&sub, "low_freq_factor")?,
            high_freq_factor: positive(&sub, "high_freq_factor")?,
            original_max_position_embeddings: original_context()?,
        })),
        "yarn" => {
            let original = original_context()?;
            let factor = match sub.optional_f64("factor")? {
                Some(f) => f,
                None => max_position_embeddings as f64 / original as f64,
            };
            Some(RopeScaling::Yarn(YarnRopeScaling {
                factor,
                original_max_position_embeddings: original,
                attention_factor: sub.optional_f64("attention_factor")?,
                beta_fast: nonzero_or(sub.optional_f64("beta_fast")?, 32.0),
                beta_slow: nonzero_or(sub.optional_f64("beta_slow")?, 1.0),
                mscale: sub.optional_f64("mscale")?,
                mscale_all_dim: sub.optional_f64("mscale_all_dim")?,
                truncate: sub.optional_bool("truncate")?.unwrap_or(true),
            }))
        }
        other => {
            return Err(config_error(
                origin,
                &format!("{key}.rope_type"),
                &format!(
                    "RoPE type {other:?} is not implemented; distill implements default, linear, llama3 and yarn"
                ),
            ))
        }
    };
    Ok((theta, scaling))
}

fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(Map::is_empty)
}

fn positive(fields: &Fields, name: &str) -> Result<f64> {
    let value = fields.f64(name)?;
    if value > 0.0 && value.is_finite() {
        Ok(value)
    } else {
        Err(config_error(
            fields.origin,
            name,
            &format!("{value} must be a positive number"),
        ))
    }
}

/// transformers reads `beta_fast` / `beta_slow` with `or`: a 0 means the default.
fn nonzero_or(value: Option<f64>, default: f64) -> f64 {
    value.filter(|v| *v != 0.0).unwrap_or(default)
}

impl RopeScaling {
    /// The v4-layout `rope_scaling` object transformers 4 and 5 both read back to this scaling.
    pub fn to_hf_json(&self) -> Value {
        match self {
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3(s) => json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            }),
            RopeScaling::Yarn(s) => {
                let mut map = json!({
                    "rope_type": "yarn",
                    "factor": s.factor,
                    "original_max_position_embeddings": s.original_max_position_embeddings,
                    "beta_fast": s.beta_fast,
                    "beta_slow": s.beta_slow,
                    "truncate": s.truncate,
                });
                for (name, value) in [
                    ("attention_factor", s.attention_factor),
                    ("mscale", s.mscale),
                    ("mscale_all_dim", s.mscale_all_dim),
                ] {
                    if let Some(value) = value {
                        map[name] = json!(value);
                    }
                }
                map
            }
        }
    }
}

/// The inverse frequencies (`head_dim / 2` of them) and the factor cos/sin are multiplied by, as
/// transformers' `ROPE_INIT_FUNCTIONS` compute them.
pub fn inv_freq_and_scale(
    theta: f64,
    head_dim: usize,
    scaling: Option<&RopeScaling>,
) -> (Vec<f64>, f64) {
    let d = head_dim as f64;
    let default: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / d))
        .collect();
    match scaling {
        None => (default, 1.0),
        Some(RopeScaling::Linear { factor }) => (default.iter().map(|f| f / factor).collect(), 1.0),
        Some(RopeScaling::Llama3(s)) => {
            (default.iter().map(|&f| llama3_scale(f, s)).collect(), 1.0)
        }
        Some(RopeScaling::Yarn(s)) => yarn(theta, head_dim, &default, s),
    }
}

/// Llama 3.x: keep high frequencies, divide low ones by `factor`, interpolate in between.
fn llama3_scale(inv_freq: f64, s: &Llama3RopeScaling) -> f64 {
    let old_context = s.original_max_position_embeddings as f64;
    let low_freq_wavelen = old_context / s.low_freq_factor;
    let high_freq_wavelen = old_context / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
    if wavelen < high_freq_wavelen {
        inv_freq
    } else if wavelen > low_freq_wavelen {
        inv_freq / s.factor
    } else {
        let smooth =
            (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * inv_freq / s.factor + smooth * inv_freq
    }
}

/// YaRN's `0.1·mscale·ln(scale) + 1` (1 when not extending).
fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// YaRN: extrapolate the fast dimensions, interpolate the slow ones by `factor`, ramp linearly in
/// between; cos/sin are scaled by the attention factor.
fn yarn(
    theta: f64,
    head_dim: usize,
    extrapolation: &[f64],
    s: &YarnRopeScaling,
) -> (Vec<f64>, f64) {
    let d = head_dim as f64;
    let attention_factor =
        s.attention_factor
            .unwrap_or_else(|| match (s.mscale, s.mscale_all_dim) {
                (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                    yarn_mscale(s.factor, m) / yarn_mscale(s.factor, all)
                }
                _ => yarn_mscale(s.factor, 1.0),
            });
    let context = s.original_max_position_embeddings as f64;
    let correction_dim = |rotations: f64| {
        d * (context / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction_dim(s.beta_fast), correction_dim(s.beta_slow));
    if s.truncate {
        low = low.floor();
        high = high.ceil();
    }
    let low = low.max(0.0);
    let mut high = high.min(d - 1.0);
    if low == high {
        high += 0.001;
    }
    let inv_freq = extrapolation
        .iter()
        .enumerate()
        .map(|(i, &extrapolated)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation_weight = 1.0 - ramp;
            let interpolated = extrapolated / s.factor;
            interpolated * (1.0 - extrapolation_weight) + extrapolated * extrapolation_weight
        })
        .collect();
    (inv_freq, attention_factor)
}
