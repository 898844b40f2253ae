//! Generation on the real pretrained stories260K: the reference greedy text, and batched generation
//! equal to one-prompt-at-a-time generation.

mod common;

use candle_core::{DType, Device};
use distill::model::{
    generate, FinishReason, GenerationConfig, GenerationRequest, LoadedModel, SamplerConfig,
};

/// Greedy output of stories260K from BOS for 60 steps (../shared/data/llama2c_stories260K/SOURCE.md).
const REFERENCE: &str = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high";

fn stories() -> LoadedModel {
    distill::model::load(&common::stories260k(), &Device::Cpu, DType::F32).unwrap()
}

fn config(
    sampler: SamplerConfig,
    max_new_tokens: usize,
    n: usize,
    eos: &[u32],
) -> GenerationConfig {
    GenerationConfig {
        sampler,
        max_new_tokens,
        n,
        eos_token_ids: eos.to_vec(),
        stop_strings: Vec::new(),
    }
}

#[test]
fn stories260k_greedy_reproduces_the_reference_text() {
    let loaded = stories();
    let request = GenerationRequest {
        prompt: vec![1],
        seed: 0,
    };
    let out = generate(
        &loaded.model,
        &loaded.tokenizer,
        &[request],
        &config(SamplerConfig::greedy(), 60, 1, &loaded.eos_token_ids),
    )
    .unwrap();
    assert_eq!(out[0].text, REFERENCE);
    assert_eq!(out[0].completion_tokens, 60);
    assert_eq!(out[0].finish_reason, FinishReason::Length);
}

fn prompts(loaded: &LoadedModel) -> Vec<GenerationRequest> {
    [
        "Once upon a time",
        "The dog",
        "Lily and her mom went to the park to",
    ]
    .iter()
    .enumerate()
    .map(|(i, text)| GenerationRequest {
        prompt: loaded.tokenizer.encode(text, true).unwrap(),
        seed: 100 + i as u64,
    })
    .collect()
}

#[test]
fn batched_generation_equals_one_prompt_at_a_time() {
    let loaded = stories();
    let requests = prompts(&loaded);
    let lengths: Vec<usize> = requests.iter().map(|r| r.prompt.len()).collect();
    assert!(
        lengths.windows(2).any(|w| w[0] != w[1]),
        "prompts of different lengths: {lengths:?}"
    );
    for (sampler, n) in [
        (SamplerConfig::greedy(), 1),
        (
            SamplerConfig {
                temperature: 0.9,
                top_p: 0.95,
                top_k: 40,
                min_p: 0.0,
            },
            3,
        ),
    ] {
        let cfg = config(sampler, 40, n, &loaded.eos_token_ids);
        let batched = generate(&loaded.model, &loaded.tokenizer, &requests, &cfg).unwrap();
        assert_eq!(batched.len(), requests.len() * n);
        for (i, request) in requests.iter().enumerate() {
            let alone = generate(
                &loaded.model,
                &loaded.tokenizer,
                std::slice::from_ref(request),
                &cfg,
            )
            .unwrap();
            for single in alone {
                let twin = batched
                    .iter()
                    .find(|c| c.prompt_index == i && c.sample_index == single.sample_index)
                    .unwrap();
                assert_eq!(
                    twin.tokens, single.tokens,
                    "prompt {i} sample {}",
                    single.sample_index
                );
                assert_eq!(twin.text, single.text);
                assert_eq!(twin.finish_reason, single.finish_reason);
            }
        }
    }
}

#[test]
fn samples_of_one_prompt_differ_and_are_reproducible() {
    let loaded = stories();
    let requests = &prompts(&loaded)[..1];
    let cfg = config(
        SamplerConfig {
            temperature: 1.0,
            ..Default::default()
        },
        30,
        4,
        &loaded.eos_token_ids,
    );
    let first = generate(&loaded.model, &loaded.tokenizer, requests, &cfg).unwrap();
    let again = generate(&loaded.model, &loaded.tokenizer, requests, &cfg).unwrap();
    assert_eq!(first, again, "same seed, same samples");
    let distinct: std::collections::HashSet<_> = first.iter().map(|c| c.tokens.clone()).collect();
    assert!(
        distinct.len() > 1,
        "n samples of one prompt are not all identical"
    );
}

#[test]
fn stop_strings_and_eos_end_a_completion() {
    let loaded = stories();
    let request = GenerationRequest {
        prompt: vec![1],
        seed: 0,
    };
    let mut cfg = config(SamplerConfig::greedy(), 60, 1, &loaded.eos_token_ids);
    cfg.stop_strings = vec!["Lily".to_string()];
    let out = generate(
        &loaded.model,
        &loaded.tokenizer,
        std::slice::from_ref(&request),
        &cfg,
    )
    .unwrap();
    assert_eq!(
        out[0].text,
        "Once upon a time, there was a little girl named "
    );
    assert_eq!(out[0].finish_reason, FinishReason::Stop);

    // Make the first greedy token an EOS id: generation stops at once with an empty text.
    let first = generate(
        &loaded.model,
        &loaded.tokenizer,
        std::slice::from_ref(&request),
        &config(SamplerConfig::greedy(), 1, 1, &[]),
    )
    .unwrap();
    let eos = first[0].tokens[0];
    let out = generate(
        &loaded.model,
        &loaded.tokenizer,
        &[request],
        &config(SamplerConfig::greedy(), 60, 1, &[eos]),
    )
    .unwrap();
    assert_eq!(out[0].tokens, Vec::<u32>::new());
    assert_eq!(
        out[0].completion_tokens, 1,
        "the EOS counts as a generated token"
    );
    assert_eq!(out[0].finish_reason, FinishReason::Stop);
}
