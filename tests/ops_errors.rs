//! Bad shapes and dtypes are reported as errors that name the op; half-precision inputs run
//! through the f32 kernels and come back in their own dtype.

use candle_core::{DType, Device, Tensor};
use distill::ops::{
    attention, grpo_loss, masked_softmax, rms_norm, rope, selective_log_softmax, softmax_last_dim,
    AttentionMask, GrpoAggregation, GrpoConfig, GrpoInputs, RopeLayout, SoftmaxMask,
};

fn zeros(dims: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(dims, dtype, &Device::Cpu).unwrap()
}

fn assert_err_mentions<T: std::fmt::Debug>(result: candle_core::Result<T>, op: &str) {
    let err = result.expect_err("expected an error").to_string();
    assert!(err.contains(op), "error {err:?} does not name {op}");
}

#[test]
fn bad_shapes_are_errors_naming_the_op() {
    let f32 = DType::F32;
    assert_err_mentions(
        rms_norm(&zeros(&[2, 0], f32), &zeros(&[0], f32), 1e-6),
        "rms_norm",
    );
    assert_err_mentions(
        rms_norm(&zeros(&[2, 5], f32), &zeros(&[4], f32), 1e-6),
        "rms_norm",
    );
    assert_err_mentions(
        rope(
            &zeros(&[1, 2, 3, 4], f32),
            &zeros(&[3, 3], f32),
            &zeros(&[3, 3], f32),
            RopeLayout::HalfSplit,
        ),
        "rope",
    );
    assert_err_mentions(
        rope(
            &zeros(&[1, 2, 3, 5], f32),
            &zeros(&[3, 2], f32),
            &zeros(&[3, 2], f32),
            RopeLayout::Interleaved,
        ),
        "rope",
    );
    let mask = zeros(&[3, 4], f32);
    assert_err_mentions(
        masked_softmax(
            &zeros(&[2, 5, 6], f32),
            SoftmaxMask {
                additive: Some(&mask),
                causal: false,
            },
        ),
        "masked_softmax",
    );
    assert_err_mentions(
        masked_softmax(
            &zeros(&[6, 5], f32),
            SoftmaxMask {
                additive: None,
                causal: true,
            },
        ),
        "masked_softmax",
    );
    assert_err_mentions(
        attention(
            &zeros(&[1, 3, 4, 8], f32),
            &zeros(&[1, 2, 4, 8], f32),
            &zeros(&[1, 2, 4, 8], f32),
            1.0,
            &AttentionMask::default(),
        ),
        "attention",
    );
    let segments = AttentionMask {
        causal: true,
        key_padding: None,
        segment_ids: Some(zeros(&[1, 4], DType::U32)),
    };
    assert_err_mentions(
        attention(
            &zeros(&[1, 2, 4, 8], f32),
            &zeros(&[1, 2, 6, 8], f32),
            &zeros(&[1, 2, 6, 8], f32),
            1.0,
            &segments,
        ),
        "attention",
    );
    let targets = Tensor::new(&[0u32, 7], &Device::Cpu).unwrap();
    assert_err_mentions(
        selective_log_softmax(&zeros(&[2, 3], f32), &zeros(&[7, 3], f32), &targets, 4),
        "selective_log_softmax",
    );
    assert_err_mentions(
        selective_log_softmax(&zeros(&[2, 3], f32), &zeros(&[7, 4], f32), &targets, 4),
        "selective_log_softmax",
    );
    let logp = zeros(&[2, 3], f32);
    let inputs = GrpoInputs {
        logp: &logp,
        old_logp: &logp,
        ref_logp: None,
        advantages: &zeros(&[3], f32),
        completion_mask: &logp,
    };
    let config = GrpoConfig {
        eps_low: 0.2,
        eps_high: 0.2,
        beta: 0.0,
        aggregation: GrpoAggregation::Dapo,
    };
    assert_err_mentions(grpo_loss(&inputs, &config), "grpo_loss");
    let needs_ref = GrpoInputs {
        advantages: &zeros(&[2], f32),
        ..inputs
    };
    assert_err_mentions(
        grpo_loss(
            &needs_ref,
            &GrpoConfig {
                beta: 0.1,
                ..config
            },
        ),
        "grpo_loss",
    );
}

#[test]
fn unsupported_dtypes_are_errors() {
    let x = zeros(&[2, 4], DType::U32);
    assert_err_mentions(softmax_last_dim(&x), "softmax_last_dim");
    assert_err_mentions(rms_norm(&x, &zeros(&[4], DType::U32), 1e-6), "rms_norm");
}

#[test]
fn half_precision_inputs_round_trip_through_f32() {
    let x = Tensor::arange(0f32, 12., &Device::Cpu)
        .unwrap()
        .reshape((3, 4))
        .unwrap();
    let want = softmax_last_dim(&x).unwrap();
    let got = softmax_last_dim(&x.to_dtype(DType::BF16).unwrap()).unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    let err = (got.to_dtype(DType::F32).unwrap() - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(err < 1e-2, "bf16 softmax error {err}");
}
