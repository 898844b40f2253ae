//! Loading and saving: HF directories (also the real bf16 verl fixture), save → load bit-exactness,
//! clear errors for broken directories, and hub ids resolved offline through the HF cache layout.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use distill::model::config::ModelConfig;
use distill::model::init::{random_weights, tiny_config};
use distill::model::load::read_dir_weights;
use distill::model::save::save_hf_dir;
use distill::model::{Architecture, Decoder, Tokenizer};

fn qwen_tokenizer() -> Tokenizer {
    Tokenizer::from_dir(Path::new(&format!("{}/tokenizer_qwen2_5", common::DATA))).unwrap()
}

/// Saves a tiny random Qwen2 model with the real Qwen2.5 tokenizer into `dir`.
fn save_tiny(dir: &Path) -> Decoder {
    let tokenizer = qwen_tokenizer();
    let mut config = tiny_config(Architecture::Qwen2, tokenizer.vocab_size());
    config.eos_token_ids = vec![151_645];
    let weights = random_weights(&config, 3, &Device::Cpu).unwrap();
    let model = Decoder::from_weights(&config, &weights, DType::F32, &Device::Cpu).unwrap();
    save_hf_dir(&model, &tokenizer, &[151_645], dir).unwrap();
    model
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn load_err(dir: &Path) -> String {
    distill::model::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string()
}

fn distill_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_distill"))
}

#[test]
fn the_bf16_verl_llama_fixture_loads_and_runs() {
    let dir = PathBuf::from(format!("{}/tiny_random_llama_verl", common::DATA));
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(config.architecture, Architecture::Llama);
    assert_eq!(config.eos_token_ids, vec![1]);
    let weights = read_dir_weights(&dir, &Device::Cpu).unwrap();
    assert_eq!(weights.dtype(), Some(DType::BF16));
    let model = Decoder::from_weights(&config, &weights, DType::F32, &Device::Cpu).unwrap();
    let ids = common::token_ids(2, 6, 16, 1);
    let hidden = model
        .forward(
            &ids,
            &common::positions(2, 6),
            Some(&common::causal()),
            None,
        )
        .unwrap();
    let logits = model.logits(&hidden).unwrap();
    assert_eq!(logits.dims(), &[2, 6, 16]);
    let values: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().any(|&v| v != 0.0));
}

#[test]
fn save_then_load_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let model = save_tiny(&first);
    let loaded = distill::model::load(first.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(loaded.model.config(), model.config());
    assert_eq!(loaded.eos_token_ids, vec![151_645]);
    let ours = model.named_parameters();
    let theirs = loaded.model.named_parameters();
    assert_eq!(ours.len(), theirs.len());
    for ((name, a), (name_b, b)) in ours.iter().zip(&theirs) {
        assert_eq!(name, name_b);
        assert_eq!(bits(a), bits(b), "{name} differs after the round trip");
    }
    let second = tmp.path().join("second");
    save_hf_dir(
        &loaded.model,
        &loaded.tokenizer,
        &loaded.eos_token_ids,
        &second,
    )
    .unwrap();
    for file in [
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert_eq!(
            std::fs::read(first.join(file)).unwrap(),
            std::fs::read(second.join(file)).unwrap(),
            "{file} differs between two saves"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&second)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files remain");
}

#[test]
fn broken_model_directories_give_errors_that_name_the_file_and_tensor_or_field() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    save_tiny(&good);
    let copy = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&good).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        dir
    };

    let missing = copy("missing_tensor");
    common::edit_weights(&missing, |t| {
        t.remove("model.layers.1.mlp.up_proj.weight");
    });
    let message = load_err(&missing);
    assert!(
        message.contains("model.safetensors")
            && message.contains("model.layers.1.mlp.up_proj.weight")
            && message.contains("missing"),
        "{message}"
    );

    let misshapen = copy("wrong_shape");
    common::edit_weights(&misshapen, |t| {
        t.insert(
            "model.norm.weight".into(),
            Tensor::ones(63, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let message = load_err(&misshapen);
    assert!(
        message.contains("model.norm.weight")
            && message.contains("[63]")
            && message.contains("[64]"),
        "{message}"
    );

    let malformed = copy("malformed_config");
    std::fs::write(
        malformed.join("config.json"),
        "{\"model_type\": \"qwen2\",\n \"hidden_size\": 64,,}",
    )
    .unwrap();
    let message = load_err(&malformed);
    assert!(
        message.contains("config.json") && message.contains("line 2"),
        "{message}"
    );

    let no_field = copy("missing_field");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(no_field.join("config.json")).unwrap())
            .unwrap();
    config.as_object_mut().unwrap().remove("num_hidden_layers");
    std::fs::write(no_field.join("config.json"), config.to_string()).unwrap();
    let message = load_err(&no_field);
    assert!(
        message.contains("config.json") && message.contains("num_hidden_layers"),
        "{message}"
    );

    let wrong_type = copy("wrong_type");
    config["num_hidden_layers"] = serde_json::json!("two");
    std::fs::write(wrong_type.join("config.json"), config.to_string()).unwrap();
    let message = load_err(&wrong_type);
    assert!(
        message.contains("num_hidden_layers") && message.contains("\"two\""),
        "{message}"
    );

    let no_tokenizer = copy("missing_tokenizer");
    std::fs::remove_file(no_tokenizer.join("tokenizer.json")).unwrap();
    let message = load_err(&no_tokenizer);
    assert!(
        message.contains("tokenizer.json") && message.contains("missing"),
        "{message}"
    );

    let corrupt = copy("corrupt_weights");
    std::fs::write(corrupt.join("model.safetensors"), b"not a safetensors file").unwrap();
    let message = load_err(&corrupt);
    assert!(message.contains("model.safetensors"), "{message}");
}

#[test]
fn a_sharded_checkpoint_loads_like_a_single_file() {
    let tmp = tempfile::tempdir().unwrap();
    let single = tmp.path().join("single");
    let model = save_tiny(&single);
    let sharded = tmp.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    for file in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(single.join(file), sharded.join(file)).unwrap();
    }
    let tensors =
        candle_core::safetensors::load(single.join("model.safetensors"), &Device::Cpu).unwrap();
    let (mut a, mut b) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut weight_map = serde_json::Map::new();
    for (name, tensor) in tensors {
        let shard = if name.contains("layers.1") {
            "model-00002-of-00002.safetensors"
        } else {
            "model-00001-of-00002.safetensors"
        };
        weight_map.insert(name.clone(), serde_json::json!(shard));
        if shard.contains("00001-") {
            a.insert(name, tensor);
        } else {
            b.insert(name, tensor);
        }
    }
    candle_core::safetensors::save(&a, sharded.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let loaded = distill::model::load(sharded.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    for ((name, x), (_, y)) in model
        .named_parameters()
        .iter()
        .zip(loaded.model.named_parameters().iter())
    {
        assert_eq!(bits(x), bits(y), "{name}");
    }

    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let message = load_err(&sharded);
    assert!(
        message.contains("model-00002-of-00002.safetensors"),
        "{message}"
    );
}

#[test]
fn a_hub_id_resolves_from_the_hf_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let hf_home = tmp.path().join("hf");
    let repo = hf_home.join("hub").join("models--test-org--tiny-qwen");
    let snapshot = repo.join("snapshots").join("0123abcd");
    save_tiny(&snapshot);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();

    let out = distill_bin()
        .args(["model", "inspect", "test-org/tiny-qwen"])
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("qwen2") && stdout.contains("float32"),
        "{stdout}"
    );

    let out = distill_bin()
        .args(["model", "inspect", "test-org/not-cached"])
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("test-org/not-cached") && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
}
