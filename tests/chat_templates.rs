//! Chat templates render to exactly the strings transformers' `apply_chat_template` produces
//! (transformers 5.23, jinja2 3.1.6; regenerate with tests/support/chat_template_expected.py).

use std::path::Path;

use distill::model::{ChatOptions, Message, Tokenizer};

const DATA: &str = "../shared/data";
const Q: &str = "What is 2+2?";
const THOUGHT: &str = "<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4.";

fn conversation(case: &str) -> Vec<Message> {
    match case {
        "single" => vec![Message::new("user", Q)],
        "system_multi" => vec![
            Message::new("system", "Be brief."),
            Message::new("user", Q),
            Message::new("assistant", THOUGHT),
            Message::new("user", "And 3+3?"),
        ],
        "answered" => vec![Message::new("user", Q), Message::new("assistant", THOUGHT)],
        other => panic!("unknown case {other}"),
    }
}

fn options(mode: &str) -> ChatOptions {
    ChatOptions {
        add_generation_prompt: mode != "nogen",
        enable_thinking: (mode == "nothink").then_some(false),
    }
}

/// A tokenizer directory as DeepSeek-R1-Distill-Qwen ships it: the Qwen2.5 BPE, its own special
/// tokens written as AddedToken objects, and the R1 chat template.
fn r1_distill_tokenizer(dir: &Path) -> Tokenizer {
    std::fs::copy(
        format!("{DATA}/tokenizer_qwen2_5/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let template = std::fs::read_to_string(format!(
        "{DATA}/chat_template_deepseek_r1_distill_qwen/chat_template.jinja"
    ))
    .unwrap();
    let config = serde_json::json!({
        "add_bos_token": true,
        "bos_token": {"__type": "AddedToken", "content": "<｜begin▁of▁sentence｜>"},
        "eos_token": {"__type": "AddedToken", "content": "<｜end▁of▁sentence｜>"},
        "chat_template": template,
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    Tokenizer::from_dir(dir).unwrap()
}

fn check(tokenizer: &Tokenizer, case: &str, mode: &str, expected: &str) {
    let rendered = tokenizer
        .render_chat(&conversation(case), &options(mode))
        .unwrap();
    assert_eq!(rendered, expected, "case {case}, mode {mode}");
}

#[test]
fn qwen25_template_matches_transformers() {
    let tokenizer = Tokenizer::from_dir(Path::new(&format!("{DATA}/tokenizer_qwen2_5"))).unwrap();
    check(&tokenizer, "single", "gen", "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    check(&tokenizer, "single", "nogen", "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
    check(&tokenizer, "system_multi", "gen", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n");
    check(&tokenizer, "system_multi", "nogen", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n");
    check(&tokenizer, "answered", "gen", "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4.<|im_end|>\n<|im_start|>assistant\n");
    check(&tokenizer, "answered", "nogen", "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4.<|im_end|>\n");
}

#[test]
fn qwen3_template_matches_transformers() {
    let tokenizer = Tokenizer::from_dir(Path::new(&format!("{DATA}/tokenizer_qwen3"))).unwrap();
    check(
        &tokenizer,
        "single",
        "gen",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    );
    check(
        &tokenizer,
        "single",
        "nothink",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    );
    check(&tokenizer, "system_multi", "gen", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nThe answer is 4.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n");
    check(&tokenizer, "system_multi", "nothink", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nThe answer is 4.<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
    check(&tokenizer, "answered", "gen", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4.<|im_end|>\n<|im_start|>assistant\n");
    check(&tokenizer, "answered", "nothink", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2 plus 2 is 4.\n</think>\n\nThe answer is 4.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

#[test]
fn r1_distill_template_matches_transformers_and_prefills_think() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = r1_distill_tokenizer(dir.path());
    check(
        &tokenizer,
        "single",
        "gen",
        "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n",
    );
    check(
        &tokenizer,
        "single",
        "nogen",
        "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?",
    );
    check(&tokenizer, "system_multi", "gen", "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?<｜Assistant｜>\n\nThe answer is 4.<｜end▁of▁sentence｜><｜User｜>And 3+3?<｜Assistant｜><think>\n");
    check(&tokenizer, "system_multi", "nogen", "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?<｜Assistant｜>\n\nThe answer is 4.<｜end▁of▁sentence｜><｜User｜>And 3+3?");
    check(&tokenizer, "answered", "gen", "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>\n\nThe answer is 4.<｜end▁of▁sentence｜><｜Assistant｜><think>\n");
    check(&tokenizer, "answered", "nogen", "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>\n\nThe answer is 4.<｜end▁of▁sentence｜>");
    let prompt = tokenizer
        .render_chat(&conversation("single"), &options("gen"))
        .unwrap();
    assert!(
        prompt.ends_with("<think>\n"),
        "the R1 generation prompt opens the reasoning block"
    );
}

#[test]
fn tokenizer_without_template_uses_chatml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{DATA}/tokenizer_qwen2_5/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let tokenizer = Tokenizer::from_dir(dir.path()).unwrap();
    let rendered = tokenizer
        .render_chat(&conversation("single"), &options("gen"))
        .unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn a_template_that_raises_reports_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut tokenizer = r1_distill_tokenizer(dir.path());
    tokenizer
        .set_chat_template(
            "{{ raise_exception('roles must alternate') }}",
            "test template",
        )
        .unwrap();
    let error = tokenizer
        .render_chat(&conversation("single"), &options("gen"))
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("roles must alternate") && message.contains("test template"),
        "{message}"
    );
}
