//! Replays `tests/fixtures/training/adamw_reference.json` (torch.optim.AdamW with clip_grad_norm_,
//! made by `make_adamw_reference.py`) through distill's AdamW on a device and checks every step's
//! gradient norm and weights against torch's. Shared by `tests/optimizer_reference.rs` (CPU) and
//! `tests/ops_cuda_parity.rs` (CUDA, same gradients, so only the update's arithmetic differs).

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use distill::train::optim::{AdamW, AdamWConfig};
use serde_json::Value;

fn floats(value: &Value) -> Vec<f32> {
    fn flatten(value: &Value, out: &mut Vec<f32>) {
        match value {
            Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
            other => out.push(other.as_f64().expect("a number") as f32),
        }
    }
    let mut out = Vec::new();
    flatten(value, &mut out);
    out
}

/// Runs the fixture's four steps on `device`; every weight must be within `tolerance × (1 + |torch's|)`
/// of torch's after every step, and the gradient norm within 1e-5 relative.
pub fn replay_against_torch(device: &Device, tolerance: f32) {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/training/adamw_reference.json").unwrap(),
    )
    .unwrap();
    let config = &fixture["config"];
    let settings = AdamWConfig {
        beta1: config["beta1"].as_f64().unwrap(),
        beta2: config["beta2"].as_f64().unwrap(),
        eps: config["eps"].as_f64().unwrap(),
        weight_decay: config["weight_decay"].as_f64().unwrap(),
        no_decay_norms_biases_embeddings: true,
        max_grad_norm: config["max_grad_norm"].as_f64().unwrap(),
    };
    let shapes = fixture["shapes"].as_object().unwrap();
    let params: Vec<(String, Var)> = shapes
        .iter()
        .map(|(name, shape)| {
            let dims: Vec<usize> = shape
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let values = floats(&fixture["initial"][name]);
            let var = Var::from_tensor(&Tensor::from_vec(values, dims, device).unwrap()).unwrap();
            (name.clone(), var)
        })
        .collect();
    let mut optimizer = AdamW::new(&params, settings).unwrap();
    let mut clipped_steps = 0;
    for (step, want) in fixture["steps"].as_array().unwrap().iter().enumerate() {
        for micro in want["micro_batches"].as_array().unwrap() {
            let mut grads = GradStore::default();
            for (name, var) in &params {
                let grad = Tensor::from_vec(floats(&micro[name]), var.shape(), device).unwrap();
                grads.insert(var.as_tensor(), grad);
            }
            optimizer.accumulate(&grads, 0.5).unwrap();
        }
        let report = optimizer.step(want["lr"].as_f64().unwrap()).unwrap();
        let want_norm = want["grad_norm"].as_f64().unwrap();
        assert!(
            (report.grad_norm - want_norm).abs() <= 1e-5 * want_norm,
            "step {step}: gradient norm {} against torch's {want_norm}",
            report.grad_norm
        );
        clipped_steps += usize::from(report.clipped);
        for (name, var) in &params {
            let got = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let expected = floats(&want["params"][name]);
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (g - e).abs() <= tolerance * (1.0 + e.abs()),
                    "step {step}: {name}[{i}] is {g}, torch has {e}"
                );
            }
        }
    }
    assert_eq!(clipped_steps, 1, "the fixture clips exactly one step");
}
