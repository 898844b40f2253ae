//! The training-math fixes of issue 15: the EOS a completion sampled is the one GRPO trains on
//! (Llama-3-style EOS lists); rewards grade the template's `<think>` prefill with the completion;
//! GRPO's log-probs are those of the rollout temperature; SFT gradient accumulation weighs every
//! loss token alike; `--epsilon` keeps a configured `epsilon_high`; repeated prompts of a step get
//! their own seeds; exports keep the source's generation defaults.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use distill::data::sources::Problem;
use distill::generate::prompts::think_prefill;
use distill::model::generate::{generate, GenerationConfig, GenerationRequest};
use distill::model::{Architecture, Completion, FinishReason, SamplerConfig, Tokenizer};
use distill::train::grpo::{render_prompt_text, rollout_seeds, RolloutBatch};
use distill::train::rewards::{RewardConfig, Scored};
use distill::verify::Checker;

/// Llama-3.x-Instruct's EOS ids: end of text, end of message (tool call), end of turn.
const LLAMA3_EOS: [u32; 3] = [128_001, 128_008, 128_009];

fn completion(tokens: Vec<u32>, eos_token: Option<u32>) -> Completion {
    Completion {
        prompt_index: 0,
        sample_index: 0,
        completion_tokens: tokens.len() + usize::from(eos_token.is_some()),
        eos_token,
        text: String::new(),
        finish_reason: if eos_token.is_some() {
            FinishReason::Stop
        } else {
            FinishReason::Length
        },
        prompt_tokens: 3,
        tokens,
    }
}

#[test]
fn grpo_trains_on_the_eos_id_each_completion_sampled() {
    let prompts = vec![vec![7, 8, 9]];
    let completions = vec![
        completion(vec![11, 12], Some(LLAMA3_EOS[2])),
        completion(vec![13], Some(LLAMA3_EOS[1])),
        completion(vec![14, 15, 16], None),
    ];
    let batch = RolloutBatch::new(&prompts, &completions, false, &Device::Cpu).unwrap();
    let ids: Vec<Vec<u32>> = batch.ids.to_vec2().unwrap();
    let mask: Vec<Vec<f32>> = batch.completion_mask.to_vec2().unwrap();
    assert_eq!(
        ids[0][..6],
        [7, 8, 9, 11, 12, 128_009],
        "end of turn, as sampled"
    );
    assert_eq!(
        ids[1][..5],
        [7, 8, 9, 13, 128_008],
        "end of message, as sampled"
    );
    assert_eq!(
        ids[2][..6],
        [7, 8, 9, 14, 15, 16],
        "a truncated completion has no EOS"
    );
    assert_eq!(
        mask[0],
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        "the EOS is trained on"
    );
    assert_eq!(mask[1][..5], [0.0, 0.0, 0.0, 1.0, 1.0]);
    assert_eq!(batch.completion_tokens, 3 + 2 + 3);
}

#[test]
fn the_generator_records_which_of_several_eos_ids_ended_a_completion() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 5);
    let loaded = distill::model::load(&student, &Device::Cpu, DType::F32).unwrap();
    let prompt = loaded.tokenizer.encode("Start with 3.", false).unwrap();
    let request = GenerationRequest { prompt, seed: 0 };
    let run = |eos_token_ids: Vec<u32>| {
        let config = GenerationConfig {
            sampler: SamplerConfig::greedy(),
            max_new_tokens: 8,
            n: 1,
            eos_token_ids,
            stop_strings: Vec::new(),
        };
        generate(
            &loaded.model,
            &loaded.tokenizer,
            std::slice::from_ref(&request),
            &config,
        )
        .unwrap()
        .remove(0)
    };
    let free = run(Vec::new());
    assert_eq!(free.eos_token, None);
    // Make the first greedy token that is new after the first step the last of three EOS ids.
    let at = (1..free.tokens.len())
        .find(|&j| !free.tokens[..j].contains(&free.tokens[j]))
        .unwrap_or(0);
    let eos = free.tokens[at];
    let others: Vec<u32> = (0..).filter(|t| !free.tokens.contains(t)).take(2).collect();
    let ended = run(vec![others[0], others[1], eos]);
    assert_eq!(ended.eos_token, Some(eos));
    assert_eq!(ended.tokens, free.tokens[..at]);
    assert_eq!(ended.completion_tokens, at + 1);
    assert_eq!(ended.finish_reason, FinishReason::Stop);
    let batch = RolloutBatch::new(
        std::slice::from_ref(&request.prompt),
        std::slice::from_ref(&ended),
        false,
        &Device::Cpu,
    )
    .unwrap();
    let ids: Vec<Vec<u32>> = batch.ids.to_vec2().unwrap();
    let mut trained = free.tokens[..at].to_vec();
    trained.push(eos);
    assert_eq!(ids[0][request.prompt.len()..], trained[..]);
}

/// The Qwen2.5 tokenizer with DeepSeek-R1-Distill's chat template (it opens `<think>\n`).
fn r1_distill_tokenizer(dir: &Path) -> Tokenizer {
    let data = common::DATA;
    std::fs::copy(
        format!("{data}/tokenizer_qwen2_5/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let template = std::fs::read_to_string(format!(
        "{data}/chat_template_deepseek_r1_distill_qwen/chat_template.jinja"
    ))
    .unwrap();
    let config = serde_json::json!({
        "bos_token": "<｜begin▁of▁sentence｜>",
        "eos_token": "<｜end▁of▁sentence｜>",
        "chat_template": template,
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    Tokenizer::from_dir(dir).unwrap()
}

#[test]
fn grpo_rewards_grade_the_think_prefill_with_the_completion() {
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = r1_distill_tokenizer(tmp.path());
    let problem = Problem {
        id: "p".into(),
        source: "test".into(),
        problem: "What is 3 + 4?".into(),
        answer: "7".into(),
        metadata: Default::default(),
    };
    let prompt = render_prompt_text(&tokenizer, &problem, None, "Box the answer.").unwrap();
    let prefill = think_prefill(&prompt);
    assert_eq!(
        prefill, "<think>\n",
        "the R1-Distill template opens the thought"
    );
    let config = RewardConfig {
        format: 1.0,
        ..Default::default()
    };
    let score = |completion: &str| {
        config.score(&Scored {
            prompt: &problem.problem,
            prefill,
            completion,
            gold: &problem.answer,
            checker: &Checker::Gold,
            completion_tokens: 40,
            max_new_tokens: 40,
        })
    };
    // Cut off by the length limit mid-thought, after an intermediate boxed value.
    let cut = score("First try: 3 + 4 = \\boxed{7}? Let me check by counting: 3, 4, 5");
    assert_eq!(
        (cut.accuracy, cut.format),
        (0.0, 0.0),
        "an unfinished thought has no answer"
    );
    let done = score("3 + 4 = 7.\n</think>\n\nThe answer is \\boxed{7}.");
    assert_eq!((done.accuracy, done.format), (1.0, 1.0));
}

/// `log_softmax(logits / t)` at the next token of every position, `[B, T - 1]`, the long way.
fn reference_log_probs(logits: &Tensor, ids: &Tensor, t: f64) -> Tensor {
    let scaled = (logits / t).unwrap();
    let max = scaled.max_keepdim(D::Minus1).unwrap();
    let shifted = scaled.broadcast_sub(&max).unwrap();
    let lse = shifted
        .exp()
        .unwrap()
        .sum_keepdim(D::Minus1)
        .unwrap()
        .log()
        .unwrap();
    let log_probs = shifted.broadcast_sub(&lse).unwrap();
    let len = ids.dim(1).unwrap();
    let targets = ids.narrow(1, 1, len - 1).unwrap().unsqueeze(2).unwrap();
    log_probs
        .narrow(1, 0, len - 1)
        .unwrap()
        .contiguous()
        .unwrap()
        .gather(&targets.contiguous().unwrap(), 2)
        .unwrap()
        .squeeze(2)
        .unwrap()
}

#[test]
fn grpo_log_probs_are_those_of_the_rollout_temperature() {
    let config = common::tiny(Architecture::Qwen2, 61);
    let t = common::trainable(&config, 17, DType::F32);
    let prompts = vec![vec![1, 5, 9, 3]];
    let completions = vec![completion(vec![4, 8, 15, 16, 23], Some(42))];
    let batch = RolloutBatch::new(&prompts, &completions, false, &Device::Cpu).unwrap();
    let hidden = t
        .model
        .forward(&batch.ids, &batch.positions, None, None)
        .unwrap();
    let logits = t.model.logits(&hidden).unwrap();
    let mask = batch.target_mask().unwrap();
    for temperature in [0.6, 1.0, 1.3] {
        let ours = batch.log_probs(&t.model, temperature).unwrap().logp;
        let expected = (reference_log_probs(&logits, &batch.ids, temperature) * &mask).unwrap();
        let diff = common::max_abs_diff(&ours, &expected);
        println!("T = {temperature}: max |log-prob difference| {diff:e}");
        assert!(diff < 1e-5, "T = {temperature}: log-probs differ by {diff}");
    }
    let at_1 = batch.log_probs(&t.model, 1.0).unwrap().logp;
    let at_06 = batch.log_probs(&t.model, 0.6).unwrap().logp;
    assert!(
        common::max_abs_diff(&at_1, &at_06) > 1e-3,
        "the temperature changes the log-probs"
    );
}

#[test]
fn repeated_prompts_of_a_step_get_their_own_seeds() {
    let seeds = rollout_seeds(7, 3, &["a", "b", "a", "a"]);
    let distinct: std::collections::BTreeSet<u64> = seeds.iter().copied().collect();
    assert_eq!(distinct.len(), 4, "{seeds:?}");
    assert_eq!(
        seeds[..2],
        rollout_seeds(7, 3, &["a", "b"])[..],
        "first occurrences keep the seed they always had"
    );
    assert_ne!(rollout_seeds(7, 4, &["a"]), rollout_seeds(7, 3, &["a"]));
}

#[test]
fn epsilon_on_the_command_line_keeps_a_configured_epsilon_high() {
    use clap::Parser;
    use distill::cli::{Cli, Command};
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("grpo.toml");
    let config = |toml: &str, flags: &[&str]| {
        std::fs::write(&file, format!("policy = \"p\"\nout = \"o\"\n{toml}")).unwrap();
        let mut args = vec!["distill", "grpo", "--prompts", "x", "--config"];
        args.push(file.to_str().unwrap());
        args.extend(flags);
        let Command::Grpo(grpo) = Cli::try_parse_from(args).unwrap().command else {
            panic!("not the grpo command")
        };
        let c = grpo.config().unwrap();
        (c.epsilon_low, c.epsilon_high)
    };
    assert_eq!(
        config("epsilon_high = 0.28\n", &["--epsilon", "0.1"]),
        (0.1, 0.28)
    );
    assert_eq!(config("", &["--epsilon", "0.1"]), (0.1, 0.1));
    assert_eq!(
        config(
            "epsilon_high = 0.28\n",
            &["--epsilon", "0.1", "--epsilon-high", "0.3"]
        ),
        (0.1, 0.3)
    );
    assert_eq!(config("epsilon_high = 0.28\n", &[]), (0.2, 0.28));
}

/// Four conversations whose replies (and so loss-token counts) differ several-fold in length.
fn write_uneven_conversations(path: &Path) {
    let replies = [
        "7.",
        "3 + 4 = 7, so the answer is 7.",
        "Start with 3. Add 4: 3 + 4 = 7. Check: 7 - 4 = 3, which is where we started. The answer is 7.",
        "We add. 3 + 4 = 7. Then we check the sum by subtracting: 7 - 3 = 4 and 7 - 4 = 3, both as \
         expected. Counting up from 3 four times gives 4, 5, 6, 7. So the answer is \\boxed{7}.",
    ];
    let lines: Vec<String> = replies
        .iter()
        .enumerate()
        .map(|(i, reply)| {
            serde_json::json!({
                "id": format!("q{i}"),
                "messages": [
                    {"role": "user", "content": format!("Question {i}: what is 3 + 4?")},
                    {"role": "assistant", "content": reply},
                ]
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn sft_accumulation_weighs_every_loss_token_alike_and_exports_keep_generation_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 9);
    // The source's generation defaults, as a transformers-saved model ships them.
    let generation_file = Path::new(&student).join("generation_config.json");
    let mut defaults: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&generation_file).unwrap()).unwrap();
    for (key, value) in serde_json::json!({
        "do_sample": true, "temperature": 0.6, "top_p": 0.95, "top_k": 20,
        "repetition_penalty": 1.05, "transformers_version": "5.25.0",
    })
    .as_object()
    .unwrap()
    {
        defaults[key] = value.clone();
    }
    std::fs::write(&generation_file, defaults.to_string()).unwrap();
    let data = tmp.path().join("uneven.jsonl");
    write_uneven_conversations(&data);
    let run = |name: &str, batch_size: usize, grad_accum: usize| {
        let out = tmp.path().join(name);
        let config: distill::train::sft::SftConfig = toml::from_str(&format!(
            "student = {student:?}\ndata = {:?}\nout = {:?}\neval_fraction = 0.0\nmax_steps = 1\n\
             learning_rate = 1e-3\nbatch_size = {batch_size}\ngrad_accum = {grad_accum}\n",
            data.display().to_string(),
            out.display().to_string(),
        ))
        .unwrap();
        distill::train::sft::run_sft(&config, false).unwrap();
        let record = distill::train::metrics::MetricsLog::read(&out.join("metrics.jsonl"))
            .unwrap()
            .remove(0);
        (
            record["loss"].as_f64().unwrap(),
            record["grad_norm"].as_f64().unwrap(),
            out,
        )
    };
    let (whole_loss, whole_norm, whole) = run("batch4", 4, 1);
    let (accum_loss, accum_norm, _) = run("accum4", 1, 4);
    let loss_rel = (whole_loss - accum_loss).abs() / whole_loss;
    let norm_rel = (whole_norm - accum_norm).abs() / whole_norm;
    println!(
        "batch 4 × accum 1: loss {whole_loss:.6}, grad norm {whole_norm:.6}; batch 1 × accum 4: \
         loss {accum_loss:.6}, grad norm {accum_norm:.6} (relative differences {loss_rel:e}, {norm_rel:e})"
    );
    assert!(
        loss_rel < 1e-5,
        "step losses differ by {loss_rel:e} (relative)"
    );
    assert!(
        norm_rel < 1e-5,
        "gradient norms differ by {norm_rel:e} (relative)"
    );

    let exported: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(whole.join("final/generation_config.json")).unwrap(),
    )
    .unwrap();
    for key in [
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "transformers_version",
    ] {
        assert_eq!(
            exported[key], defaults[key],
            "generation_config.json field {key}"
        );
    }
    let loaded = distill::model::load(&student, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        exported["eos_token_id"],
        serde_json::json!(loaded.eos_token_ids)
    );
}

#[test]
fn mask_truncated_leaves_cut_completions_out_of_the_batch() {
    let prompts = vec![vec![7, 8, 9]];
    let completions = vec![
        completion(vec![11, 12], Some(LLAMA3_EOS[2])),
        completion(vec![14, 15, 16], None),
    ];
    let batch = RolloutBatch::new(&prompts, &completions, true, &Device::Cpu).unwrap();
    let mask: Vec<Vec<f32>> = batch.completion_mask.to_vec2().unwrap();
    assert_eq!(mask[0], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    assert_eq!(
        mask[1], [0.0; 6],
        "the truncated completion trains on nothing"
    );
    assert_eq!(batch.completion_tokens, 3);
}

/// Two GRPO steps (μ = 1, no KL) of the early-stopping student with a length reward and
/// `extra` settings; returns the step records and the final weights.
fn short_grpo_run(
    dir: &Path,
    policy: &str,
    name: &str,
    extra: &str,
) -> (
    Vec<serde_json::Value>,
    std::collections::HashMap<String, Tensor>,
) {
    use distill::data::synth::{generate_tasks, TaskKind};
    let problems: Vec<Problem> = generate_tasks(TaskKind::Arithmetic, 1, 8, 8)
        .unwrap()
        .iter()
        .map(|t| t.to_problem())
        .collect();
    let out = dir.join(name);
    let config: distill::train::grpo::GrpoConfig = toml::from_str(&format!(
        "policy = {policy:?}\nout = {:?}\nsteps = 2\ngroup_size = 4\nprompts_per_step = 2\n\
         max_new_tokens = 16\nlearning_rate = 1e-3\n{extra}\n[rewards]\naccuracy = 0.0\n\
         length_penalty = 1.0\n",
        out.display().to_string()
    ))
    .unwrap();
    let summary = distill::train::grpo::run_grpo(&config, &problems, false).unwrap();
    let records = distill::train::metrics::MetricsLog::read(&out.join("metrics.jsonl")).unwrap();
    let weights =
        candle_core::safetensors::load(summary.model_dir.join("model.safetensors"), &Device::Cpu)
            .unwrap();
    (records, weights)
}

/// Runs every loss aggregation (and `mask_truncated`) through `run_grpo` on the same first-step
/// rollouts. At the first update the ratio is 1 and the policy is the reference, so the loss is
/// `-Σ_i w_i A_i n_i` with `n_i` the trained tokens of completion `i`: 0 for GRPO's per-sequence
/// means (group-centred advantages), `-Σ A_i n_i / Σ n_i` for DAPO and `-Σ A_i n_i / (B × L)` for
/// Dr. GRPO — so DAPO's loss × mean length equals Dr. GRPO's loss × L.
#[test]
fn every_aggregation_and_mask_truncated_run_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = common::early_stopping_student(tmp.path(), 3);
    let initial =
        candle_core::safetensors::load(Path::new(&policy).join("model.safetensors"), &Device::Cpu)
            .unwrap();
    let moved = |weights: &std::collections::HashMap<String, Tensor>| {
        initial
            .iter()
            .map(|(name, t)| common::max_abs_diff(t, &weights[name]))
            .fold(0.0f32, f32::max)
    };
    let (grpo, grpo_w) = short_grpo_run(tmp.path(), &policy, "grpo", "loss = \"grpo\"");
    let (dapo, dapo_w) = short_grpo_run(tmp.path(), &policy, "dapo", "loss = \"dapo\"");
    let (dr, dr_w) = short_grpo_run(tmp.path(), &policy, "dr", "loss = \"dr_grpo\"");
    let (masked, masked_w) = short_grpo_run(
        tmp.path(),
        &policy,
        "masked",
        "loss = \"dapo\"\nmask_truncated = true",
    );
    let first = |records: &[serde_json::Value], key: &str| records[0][key].as_f64().unwrap();
    for records in [&grpo, &dapo, &dr, &masked] {
        assert_eq!(records.len(), 2);
        assert!(first(records, "zero_std_group_fraction") < 1.0);
        assert_eq!(
            first(records, "reward"),
            first(&grpo, "reward"),
            "same rollouts"
        );
    }
    let truncated = first(&grpo, "truncated_fraction");
    assert!(
        truncated > 0.0 && truncated < 1.0,
        "some completions end on EOS and some are cut: {truncated}"
    );
    let mean_length = first(&grpo, "completion_length_mean");
    let (grpo_loss, dapo_loss, dr_loss, masked_loss) = (
        first(&grpo, "loss"),
        first(&dapo, "loss"),
        first(&dr, "loss"),
        first(&masked, "loss"),
    );
    println!(
        "first-step losses: grpo {grpo_loss:e}, dapo {dapo_loss:.6}, dr_grpo {dr_loss:.6}, dapo with \
         mask_truncated {masked_loss:.6}; mean length {mean_length}, truncated {truncated}; largest \
         weight change grpo {:e}, dapo {:e}, dr_grpo {:e}, masked {:e}",
        moved(&grpo_w),
        moved(&dapo_w),
        moved(&dr_w),
        moved(&masked_w)
    );
    assert!(
        grpo_loss.abs() < 1e-6,
        "GRPO's first loss is 0: {grpo_loss}"
    );
    assert!(
        dapo_loss.abs() > 1e-3,
        "DAPO's first loss weighs completions by length"
    );
    assert!(
        (dapo_loss * mean_length - dr_loss * 16.0).abs() < 1e-5 * dapo_loss.abs() * mean_length,
        "DAPO × mean length {} vs Dr. GRPO × L {}",
        dapo_loss * mean_length,
        dr_loss * 16.0
    );
    assert!(
        (masked_loss - dapo_loss).abs() > 1e-4,
        "mask_truncated changes which tokens count"
    );
    for (name, weights) in [
        ("grpo", &grpo_w),
        ("dapo", &dapo_w),
        ("dr_grpo", &dr_w),
        ("masked", &masked_w),
    ] {
        assert!(moved(weights) > 1e-4, "{name}: the weights moved");
    }
}

/// `distill eval` with the R1-Distill template grades (and stores) the template's `<think>\n`
/// prefill followed by the completion: an unfinished thought has no answer.
#[test]
fn eval_grades_the_think_prefill_with_the_completion() {
    let tmp = tempfile::tempdir().unwrap();
    let student = common::synthetic_student(tmp.path(), 4);
    std::fs::copy(
        format!(
            "{}/chat_template_deepseek_r1_distill_qwen/chat_template.jinja",
            common::DATA
        ),
        Path::new(&student).join("chat_template.jinja"),
    )
    .unwrap();
    let problems =
        distill::data::prompt_source::load_prompts("synth:arith:difficulty=1:count=3:seed=5")
            .unwrap();
    let out = tmp.path().join("eval");
    let config: distill::eval::EvalConfig = toml::from_str(&format!(
        "model = {student:?}\nout = {:?}\nk = 2\nmax_new_tokens = 6\n",
        out.display().to_string()
    ))
    .unwrap();
    distill::eval::run_eval(&config, &problems).unwrap();
    let rows =
        distill::eval::samples::read_samples(&distill::eval::samples::samples_path(&out)).unwrap();
    assert_eq!(rows.len(), 6);
    for row in &rows {
        assert!(
            row.completion.starts_with("<think>\n"),
            "graded text: {:?}",
            row.completion
        );
        assert_eq!(row.answer, None, "an open thought has no answer");
    }
}
