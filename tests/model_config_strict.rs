//! No silent defaults: every config field that changes the math is read as transformers reads it or
//! refused with the file and field named, and every checkpoint tensor is used or reported.
//! The configs are the transformers-made fixtures of `tests/fixtures/models`, edited one field at a time.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use distill::model::config::{ModelConfig, RopeScaling};
use serde_json::{json, Value};

fn fixture(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(variant)
}

/// A copy of fixture `variant` in `scratch`, with its config.json passed through `edit_config`.
fn edited_copy(variant: &str, scratch: &Path, edit_config: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = scratch.join(variant);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        std::fs::copy(fixture(variant).join(file), dir.join(file)).unwrap();
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    match distill::model::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded, but should have been refused", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn config_error(variant: &str, edit: impl FnOnce(&mut Value)) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let dir = edited_copy(variant, scratch.path(), edit);
    ModelConfig::from_file(&dir.join("config.json"))
        .unwrap_err()
        .to_string()
}

#[test]
fn transformers_5_rope_parameters_are_read_not_defaulted() {
    let qwen2 = ModelConfig::from_file(&fixture("qwen2").join("config.json")).unwrap();
    assert_eq!(qwen2.rope_theta, 1_000_000.0);
    assert_eq!(qwen2.rope_scaling, None);
    let llama3 = ModelConfig::from_file(&fixture("llama3").join("config.json")).unwrap();
    assert_eq!(llama3.rope_theta, 500_000.0);
    assert!(
        matches!(llama3.rope_scaling, Some(RopeScaling::Llama3(s)) if s.factor == 32.0 && s.original_max_position_embeddings == 16)
    );
    let yarn = ModelConfig::from_file(&fixture("qwen2_yarn").join("config_v4.json")).unwrap();
    assert!(
        matches!(yarn.rope_scaling, Some(RopeScaling::Yarn(s)) if s.factor == 4.0 && s.original_max_position_embeddings == 32)
    );
    let biased = ModelConfig::from_file(&fixture("llama_bias").join("config.json")).unwrap();
    assert!(biased.qkv_bias && biased.o_proj_bias() && biased.mlp_bias);
    assert_eq!(
        biased.rope_scaling,
        Some(RopeScaling::Linear { factor: 2.0 })
    );
}

#[test]
fn a_rope_parameters_theta_wins_over_the_top_level_one_as_in_transformers() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = edited_copy("qwen2", scratch.path(), |c| {
        c["rope_theta"] = json!(10_000.0);
    });
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(config.rope_theta, 1_000_000.0);
}

/// A change to one config.json.
type ConfigEdit = Box<dyn FnOnce(&mut Value)>;

#[test]
fn unimplemented_math_is_refused_with_the_file_and_field_named() {
    let cases: Vec<(&str, ConfigEdit, &str)> = vec![
        (
            "qwen2",
            Box::new(|c| c["rope_parameters"]["rope_type"] = json!("dynamic")),
            "rope_parameters.rope_type",
        ),
        (
            "llama3",
            Box::new(|c| c["rope_parameters"]["rope_type"] = json!("longrope")),
            "rope_parameters.rope_type",
        ),
        (
            "qwen2",
            Box::new(|c| c["partial_rotary_factor"] = json!(0.5)),
            "partial_rotary_factor",
        ),
        (
            "qwen2",
            Box::new(|c| {
                c["use_sliding_window"] = json!(true);
                c["sliding_window"] = json!(8);
                c["layer_types"] = json!(["full_attention", "sliding_attention"]);
            }),
            "use_sliding_window",
        ),
        (
            "qwen3",
            Box::new(|c| {
                c["use_sliding_window"] = json!(true);
                c["sliding_window"] = json!(8);
                c["max_window_layers"] = json!(1);
                c.as_object_mut().unwrap().remove("layer_types");
            }),
            "use_sliding_window",
        ),
        (
            "llama3",
            Box::new(|c| c["hidden_act"] = json!("gelu")),
            "hidden_act",
        ),
        (
            "qwen2",
            Box::new(|c| {
                c["rope_parameters"] = json!({
                    "full_attention": {"rope_type": "default", "rope_theta": 1e6},
                });
            }),
            "rope_parameters.full_attention",
        ),
    ];
    for (variant, edit, field) in cases {
        let message = config_error(variant, edit);
        assert!(
            message.contains("config.json") && message.contains(field),
            "{variant}: expected an error naming config.json and {field}, got: {message}"
        );
    }
}

#[test]
fn sliding_window_fields_that_leave_every_layer_full_are_accepted() {
    let scratch = tempfile::tempdir().unwrap();
    // Qwen2.5's released configs: a window is set, but use_sliding_window is false.
    let dir = edited_copy("qwen2", scratch.path(), |c| {
        c["use_sliding_window"] = json!(false);
        c["sliding_window"] = json!(32_768);
        c["max_window_layers"] = json!(1);
    });
    ModelConfig::from_file(&dir.join("config.json")).unwrap();
}

#[test]
fn a_tensor_nothing_uses_is_an_error_that_lists_it() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = edited_copy("qwen2", scratch.path(), |_| {});
    common::edit_weights(&dir, |t| {
        t.insert(
            "model.layers.0.self_attn.o_proj.bias".into(),
            Tensor::zeros(48, DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            "model.layers.1.mlp.extra_gate.weight".into(),
            Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let message = load_error(&dir);
    assert!(
        message.contains("model.safetensors")
            && message.contains("model.layers.0.self_attn.o_proj.bias")
            && message.contains("model.layers.1.mlp.extra_gate.weight")
            && message.contains("2 tensor(s)"),
        "{message}"
    );
}

#[test]
fn a_bias_flag_that_disagrees_with_the_checkpoint_is_caught_both_ways() {
    let scratch = tempfile::tempdir().unwrap();
    // The checkpoint has attention and MLP biases, the config says it has none: 14 unused tensors.
    let dir = edited_copy("llama_bias", scratch.path(), |c| {
        c["attention_bias"] = json!(false);
        c["mlp_bias"] = json!(false);
    });
    let message = load_error(&dir);
    assert!(
        message.contains("14 tensor(s)")
            && message.contains("not used")
            && message.contains(".bias"),
        "{message}"
    );
    // The config asks for MLP biases the checkpoint lacks: 6 missing tensors, listed.
    let scratch = tempfile::tempdir().unwrap();
    let dir = edited_copy("llama3", scratch.path(), |c| {
        c["mlp_bias"] = json!(true);
    });
    let message = load_error(&dir);
    assert!(
        message.contains("6 tensor(s)")
            && message.contains("missing")
            && message.contains("model.layers.0.mlp.down_proj.bias"),
        "{message}"
    );
}

#[test]
fn a_tied_checkpoint_may_carry_lm_head_and_old_rotary_buffers() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = edited_copy("qwen3", scratch.path(), |_| {});
    common::edit_weights(&dir, |t| {
        let embedding = t["model.embed_tokens.weight"].clone();
        t.insert("lm_head.weight".into(), embedding);
        t.insert(
            "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
            Tensor::ones(8, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    distill::model::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
}
