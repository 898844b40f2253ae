//! Every parameter of the decoder receives a gradient, and backprop agrees with finite differences.

mod common;

use candle_core::{DType, Device, Tensor};
use distill::model::Architecture;
use distill::train::loss::next_token_loss;
use distill::train::trainable::TrainableDecoder;

const ARCHS: [Architecture; 3] = [
    Architecture::Qwen2,
    Architecture::Qwen3,
    Architecture::Llama,
];

fn loss_of(t: &TrainableDecoder, ids: &Tensor) -> Tensor {
    let (b, len) = ids.dims2().unwrap();
    let hidden = t
        .model
        .forward(
            ids,
            &common::positions(b, len),
            Some(&common::causal()),
            None,
        )
        .unwrap();
    let mask = Tensor::ones((b, len), DType::F32, &Device::Cpu).unwrap();
    next_token_loss(&hidden, t.model.lm_head(), ids, &mask).unwrap()
}

#[test]
fn every_parameter_gets_a_finite_nonzero_gradient() {
    for arch in ARCHS {
        let config = common::tiny(arch, 97);
        let t = common::trainable(&config, 11, DType::F32);
        let expected = config.tensor_shapes().len();
        assert_eq!(
            t.params.len(),
            expected,
            "{arch:?}: every parameter is trainable"
        );
        let ids = common::token_ids(2, 9, 97, 3);
        let grads = loss_of(&t, &ids).backward().unwrap();
        for (name, var) in &t.params {
            let grad = grads
                .get(var)
                .unwrap_or_else(|| panic!("{arch:?}: {name} has no gradient"));
            let values: Vec<f32> = grad.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                values.iter().all(|v| v.is_finite()),
                "{arch:?}: {name} has a non-finite gradient"
            );
            let norm: f32 = values.iter().map(|v| v.abs()).sum();
            assert!(norm > 0.0, "{arch:?}: {name} has an all-zero gradient");
        }
    }
}

#[test]
fn backprop_agrees_with_finite_differences_in_f64() {
    for arch in ARCHS {
        let config = common::tiny(arch, 53);
        let t = common::trainable(&config, 5, DType::F64);
        let ids = common::token_ids(2, 7, 53, 9);
        let grads = loss_of(&t, &ids).backward().unwrap();
        let h = 1e-5;
        for (name, var) in &t.params {
            let grad: Vec<f64> = grads
                .get(var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // Check the entry with the largest gradient: its relative error is meaningful.
            let (index, &analytic) = grad
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap();
            let original = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let shape = var.as_tensor().shape().clone();
            let eval = |delta: f64| {
                let mut values = original.clone();
                values[index] += delta;
                var.set(&Tensor::from_vec(values, shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                loss_of(&t, &ids).to_scalar::<f64>().unwrap()
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            eval(0.0);
            let relative =
                (numeric - analytic).abs() / numeric.abs().max(analytic.abs()).max(1e-12);
            assert!(
                relative < 1e-4,
                "{arch:?}: {name}[{index}]: backprop {analytic:e}, finite difference {numeric:e}, relative error {relative:e}"
            );
        }
    }
}
