//! distill's decoder against transformers on the golden fixtures of `tests/fixtures/models`
//! (made by `make_reference.py` there, which records the versions it used in `reference.json`).
//!
//! For every variant (Qwen2 untied θ 1e6, Qwen2.5 with YaRN, Qwen3 with q/k norm and a wide head_dim,
//! Llama 3.2 with llama3 scaling and GQA, Llama with attention and MLP biases and linear scaling),
//! read in both the transformers 5 (`rope_parameters`) and the transformers 4 (top-level
//! `rope_theta` / `rope_scaling`) config layouts: the f32 logits at every prompt position match
//! transformers' within 1e-4 of the logits' scale, alone and in a left-padded batch; greedy
//! continuations are token for token the same; bf16 logits are as close to transformers' bf16 as
//! bf16 allows; a model distill exports is what transformers reloaded when the fixtures were made;
//! and the real llama2.c stories260K, exported by distill, generates in transformers what it
//! generates here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use distill::model::generate::{generate, GenerationConfig, GenerationRequest};
use distill::model::{self, AttentionMask, LoadedModel, SamplerConfig};
use serde_json::Value;

const VARIANTS: [&str; 5] = ["qwen2", "qwen2_yarn", "qwen3", "llama3", "llama_bias"];
const F32_TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

/// transformers' inputs and outputs for one variant.
struct Reference {
    /// `[B, T]` left-padded prompt ids.
    ids: Vec<Vec<u32>>,
    /// Padding slots at the start of each row.
    pads: Vec<usize>,
    /// `[B, T, V]` f32 logits.
    logits: Tensor,
    /// `[B, T, V]` bf16 logits (widened to f32), for the bf16 variants.
    logits_bf16: Option<Tensor>,
    /// `[B, NEW]` greedy continuations.
    greedy: Vec<Vec<u32>>,
}

fn ids_of(tensor: &Tensor) -> Vec<Vec<u32>> {
    tensor
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap()
}

fn reference(variant: &str) -> Reference {
    let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(
        fixtures().join(variant).join("reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mask = ids_of(&tensors["attention_mask"]);
    Reference {
        ids: ids_of(&tensors["input_ids"]),
        pads: mask
            .iter()
            .map(|row| row.iter().take_while(|&&m| m == 0).count())
            .collect(),
        logits: tensors["logits"].clone(),
        logits_bf16: tensors.get("logits_bf16").cloned(),
        greedy: ids_of(&tensors["greedy"]),
    }
}

/// The variant's directory with `config_file` as its config.json (a copy in `scratch`).
fn variant_dir(variant: &str, config_file: &str, scratch: &Path) -> PathBuf {
    let source = fixtures().join(variant);
    let dir = scratch.join(format!("{variant}-{config_file}"));
    std::fs::create_dir_all(&dir).unwrap();
    for file in [
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    std::fs::copy(source.join(config_file), dir.join("config.json")).unwrap();
    dir
}

fn load(dir: &Path, dtype: DType) -> LoadedModel {
    model::load(dir.to_str().unwrap(), &Device::Cpu, dtype)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Logits `[T, V]` (f32) of one unpadded prompt.
fn single_row_logits(loaded: &LoadedModel, prompt: &[u32]) -> Tensor {
    let t = prompt.len();
    let ids = Tensor::new(prompt, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let positions = Tensor::new((0..t as u32).collect::<Vec<_>>().as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let hidden = loaded.model.forward(&ids, &positions, None, None).unwrap();
    let logits = loaded.model.logits(&hidden).unwrap();
    logits.squeeze(0).unwrap().to_dtype(DType::F32).unwrap()
}

/// Logits `[B, T, V]` (f32) of the whole left-padded batch, positions counted from each row's first token.
fn batched_logits(loaded: &LoadedModel, reference: &Reference) -> Tensor {
    let (b, t) = (reference.ids.len(), reference.ids[0].len());
    let flat: Vec<u32> = reference.ids.iter().flatten().copied().collect();
    let positions: Vec<u32> = reference
        .pads
        .iter()
        .flat_map(|&pad| (0..t).map(move |j| j.saturating_sub(pad) as u32))
        .collect();
    let ids = Tensor::from_vec(flat, (b, t), &Device::Cpu).unwrap();
    let positions = Tensor::from_vec(positions, (b, t), &Device::Cpu).unwrap();
    let mask = AttentionMask::left_padded(&reference.pads, t, 0, &Device::Cpu).unwrap();
    let hidden = loaded
        .model
        .forward(&ids, &positions, Some(&mask), None)
        .unwrap();
    loaded
        .model
        .logits(&hidden)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// The non-padding positions `[T - pad, V]` of row `row` of a `[B, T, V]` tensor.
fn unpadded(logits: &Tensor, reference: &Reference, row: usize) -> Tensor {
    let t = reference.ids[row].len();
    let pad = reference.pads[row];
    logits.i(row).unwrap().narrow(0, pad, t - pad).unwrap()
}

/// Largest error of `ours` against transformers' logits over every non-padding position, relative
/// to the largest logit.
fn worst_relative_error(ours: &[Tensor], reference: &Reference, theirs: &Tensor) -> f32 {
    let scale = max_abs(theirs);
    ours.iter()
        .enumerate()
        .map(|(row, logits)| max_abs_diff(logits, &unpadded(theirs, reference, row)) / scale)
        .fold(0.0, f32::max)
}

fn check_variant(variant: &str, config_file: &str, scratch: &Path) {
    let reference = reference(variant);
    let dir = variant_dir(variant, config_file, scratch);
    let loaded = load(&dir, DType::F32);
    let prompts: Vec<Vec<u32>> = reference
        .ids
        .iter()
        .zip(&reference.pads)
        .map(|(row, &pad)| row[pad..].to_vec())
        .collect();

    let single: Vec<Tensor> = prompts
        .iter()
        .map(|p| single_row_logits(&loaded, p))
        .collect();
    let single_error = worst_relative_error(&single, &reference, &reference.logits);
    let batched = batched_logits(&loaded, &reference);
    let batched_rows: Vec<Tensor> = (0..prompts.len())
        .map(|row| unpadded(&batched, &reference, row))
        .collect();
    let batched_error = worst_relative_error(&batched_rows, &reference, &reference.logits);
    let batched_vs_single = single
        .iter()
        .zip(&batched_rows)
        .map(|(a, b)| max_abs_diff(a, b))
        .fold(0.0, f32::max);
    println!(
        "{variant} ({config_file}): worst |logit error| / max |logit| = {single_error:.2e} single, \
         {batched_error:.2e} batched; batched vs single {batched_vs_single:.2e}"
    );
    assert!(
        single_error < F32_TOLERANCE,
        "{variant} ({config_file}): logits differ from transformers by {single_error:.2e} of their scale"
    );
    assert!(
        batched_error < F32_TOLERANCE,
        "{variant} ({config_file}): left-padded batch differs from transformers by {batched_error:.2e}"
    );

    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .map(|p| GenerationRequest {
            prompt: p.clone(),
            seed: 0,
        })
        .collect();
    let config = GenerationConfig {
        sampler: SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
        max_new_tokens: reference.greedy[0].len(),
        n: 1,
        eos_token_ids: Vec::new(),
        stop_strings: Vec::new(),
    };
    let completions = generate(&loaded.model, &loaded.tokenizer, &requests, &config).unwrap();
    for c in &completions {
        assert_eq!(
            c.tokens, reference.greedy[c.prompt_index],
            "{variant} ({config_file}): greedy continuation of prompt {} differs from transformers'",
            c.prompt_index
        );
    }
}

#[test]
fn every_variant_matches_transformers_in_the_v5_config_layout() {
    let scratch = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        check_variant(variant, "config.json", scratch.path());
    }
}

#[test]
fn every_variant_matches_transformers_in_the_v4_config_layout() {
    let scratch = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        check_variant(variant, "config_v4.json", scratch.path());
    }
}

#[test]
fn bf16_logits_are_as_close_to_transformers_bf16_as_bf16_allows() {
    let scratch = tempfile::tempdir().unwrap();
    for variant in ["qwen2", "llama3"] {
        let reference = reference(variant);
        let theirs_bf16 = reference
            .logits_bf16
            .as_ref()
            .expect("bf16 logits in the fixture");
        let dir = variant_dir(variant, "config.json", scratch.path());
        let ours_bf16 = batched_logits(&load(&dir, DType::BF16), &reference);
        let rows = |t: &Tensor| -> Vec<Tensor> {
            (0..reference.ids.len())
                .map(|row| unpadded(t, &reference, row))
                .collect()
        };
        let ours_error = worst_relative_error(&rows(&ours_bf16), &reference, &reference.logits);
        let theirs_error = worst_relative_error(&rows(theirs_bf16), &reference, &reference.logits);
        let between = worst_relative_error(&rows(&ours_bf16), &reference, theirs_bf16);
        println!(
            "{variant} bf16: error vs f32 reference {ours_error:.2e} (transformers bf16: {theirs_error:.2e}); \
             distill bf16 vs transformers bf16 {between:.2e}"
        );
        // bf16 keeps 8 significant bits (relative step 2^-8 = 3.9e-3); two bf16 runs that round
        // at different places may each be that far from f32, so allow a few steps between them.
        assert!(
            between < 4.0 * 2f32.powi(-8),
            "{variant}: bf16 logits differ from transformers' bf16 by {between:.2e} of their scale"
        );
        assert!(
            ours_error < 2.0 * theirs_error + 2f32.powi(-8),
            "{variant}: distill's bf16 error {ours_error:.2e} is far above transformers' {theirs_error:.2e}"
        );
    }
}

/// What `make_reference.py exports` recorded for `variant`.
fn recorded_export(variant: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("exports.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["variants"][variant].clone()
}

#[test]
fn an_exported_model_is_what_transformers_reloaded_with_the_same_logits() {
    let scratch = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        let recorded = recorded_export(variant);
        let diff = recorded["transformers_max_abs_logit_diff"]
            .as_f64()
            .unwrap();
        assert!(
            diff < 1e-5,
            "{variant}: transformers reloaded distill's export with logits {diff} away"
        );
        let source = fixtures().join(variant);
        let loaded = load(&source, DType::F32);
        let out = scratch.path().join(variant);
        distill::model::save::save_hf_dir_keeping(
            &loaded.model,
            &loaded.tokenizer,
            &loaded.eos_token_ids,
            loaded.generation_config.as_ref(),
            &out,
        )
        .unwrap();
        let read = |name: &str| -> Value {
            serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap()
        };
        assert_eq!(
            read("config.json"),
            recorded["config"],
            "{variant}: the exported config.json is not the one transformers was checked on; \
             rerun `make_reference.py exports`"
        );
        assert_eq!(
            read("generation_config.json"),
            recorded["generation_config"],
            "{variant}: the exported generation_config.json changed; rerun `make_reference.py exports`"
        );
        let original =
            candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu).unwrap();
        let exported =
            candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
        assert_eq!(
            {
                let mut names: Vec<&String> = exported.keys().collect();
                names.sort();
                names
            },
            {
                let mut names: Vec<&String> = original.keys().collect();
                names.sort();
                names
            },
            "{variant}: exported tensor names"
        );
        for (name, tensor) in &original {
            assert_eq!(
                max_abs_diff(tensor, &exported[name]),
                0.0,
                "{variant}: tensor {name} changed in the export"
            );
        }
    }
}

#[test]
fn the_real_stories260k_exported_by_distill_generates_in_transformers_what_it_generates_here() {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("exports.json")).unwrap())
            .unwrap();
    let theirs: Vec<u32> = all["stories260k"]["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let checkpoint = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/llama2c_stories260K/stories260K.bin");
    let loaded = model::load(checkpoint.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    let config = GenerationConfig {
        sampler: SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
        max_new_tokens: theirs.len(),
        n: 1,
        eos_token_ids: Vec::new(),
        stop_strings: Vec::new(),
    };
    let request = GenerationRequest {
        prompt: vec![1],
        seed: 0,
    };
    let ours = generate(&loaded.model, &loaded.tokenizer, &[request], &config).unwrap();
    assert_eq!(ours[0].tokens, theirs);
    let text = loaded.tokenizer.decode(&theirs, true).unwrap();
    assert!(
        text.starts_with("Once upon a time, there was a little girl named Lily."),
        "{text}"
    );
}
