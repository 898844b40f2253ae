use candle_core::{DType, Device};
use distill::data::corpus::{programmatic_row, write_corpus, ReplyStyle};
use distill::data::synth::{generate_tasks, TaskKind};
use distill::model::generate::{generate, GenerationConfig, GenerationRequest};
use distill::model::init::{random_weights, tiny_config};
use distill::model::{Architecture, Decoder, SamplerConfig};

fn main() -> anyhow::Result<()> {
    distill::runtime::init();
    let args: Vec<String> = std::env::args().collect();
    let (hidden, layers, mlp, style, count, epochs) = (
        args[1].parse::<usize>()?,
        args[2].parse::<usize>()?,
        args[3].parse::<usize>()?,
        if args[4] == "cot" {
            ReplyStyle::LongCot
        } else {
            ReplyStyle::ShortAnswer
        },
        args[5].parse::<u64>()?,
        args[6].parse::<usize>()?,
    );
    let root = std::path::PathBuf::from(&args[7]);
    let tasks = generate_tasks(TaskKind::Arithmetic, 1, 1, count)?;
    let texts: Vec<String> = tasks
        .iter()
        .flat_map(|t| {
            [ReplyStyle::LongCot, ReplyStyle::ShortAnswer]
                .map(|s| programmatic_row(t, s).messages)
                .into_iter()
                .flatten()
                .map(|m| m.content)
        })
        .collect();
    let tok = distill::model::bpe::train_bpe(&texts, 320, &root.join("tok"))?;
    write_corpus(&root.join("corpus"), &tasks, style, "x")?;
    let mut cfg = tiny_config(Architecture::Qwen2, tok.vocab_size());
    cfg.hidden_size = hidden;
    cfg.num_hidden_layers = layers;
    cfg.intermediate_size = mlp;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = hidden / 4;
    cfg.eos_token_ids = tok.eos_token_id().into_iter().collect();
    let w = random_weights(&cfg, 0, &Device::Cpu)?;
    let m = Decoder::from_weights(&cfg, &w, DType::F32, &Device::Cpu)?;
    distill::model::save::save_hf_dir(&m, &tok, &cfg.eos_token_ids, &root.join("init"))?;
    let sft: distill::train::sft::SftConfig = toml::from_str(&format!("student = {:?}\ndata = {:?}\nout = {:?}\nlearning_rate = 3e-3\nwarmup_steps = 20\nepochs = {epochs}\nbatch_size = 16\nmax_length = 256\neval_fraction = 0.0\n", root.join("init").display().to_string(), root.join("corpus").display().to_string(), root.join("run").display().to_string()))?;
    let t0 = std::time::Instant::now();
    let s = distill::train::sft::run_sft(&sft, true)?;
    println!(
        "sft: {} steps, loss {:.4}, {:.0}s, {} tokens ({:.0} tok/s)",
        s.steps,
        s.final_loss,
        t0.elapsed().as_secs_f64(),
        s.tokens_seen,
        s.tokens_seen as f64 / t0.elapsed().as_secs_f64()
    );
    let loaded = distill::model::load(
        root.join("run/final").to_str().unwrap(),
        &Device::Cpu,
        DType::F32,
    )?;
    let heldout = generate_tasks(TaskKind::Arithmetic, 1, 12, 100)?;
    let reqs: Vec<GenerationRequest> = heldout
        .iter()
        .enumerate()
        .map(|(i, t)| GenerationRequest {
            prompt: distill::train::grpo::render_prompt(
                &loaded.tokenizer,
                &t.to_problem(),
                None,
                distill::data::schema::DEFAULT_INSTRUCTION,
            )
            .unwrap(),
            seed: i as u64,
        })
        .collect();
    for temp in [0.0f32, 1.0] {
        let t1 = std::time::Instant::now();
        let gen = GenerationConfig {
            sampler: SamplerConfig {
                temperature: temp,
                ..Default::default()
            },
            max_new_tokens: 160,
            n: 1,
            eos_token_ids: loaded.eos_token_ids.clone(),
            stop_strings: vec![],
        };
        let outs = generate(&loaded.model, &loaded.tokenizer, &reqs, &gen)?;
        let correct = outs
            .iter()
            .filter(|c| {
                distill::verify::grade(
                    &heldout[c.prompt_index].answer,
                    &serde_json::Map::new(),
                    &c.text,
                )
                .correct
            })
            .count();
        let toks: usize = outs.iter().map(|c| c.completion_tokens).sum();
        println!(
            "T={temp}: accuracy {correct}/100, {toks} tokens in {:.1}s; sample: {:?}",
            t1.elapsed().as_secs_f64(),
            outs[0].text
        );
    }
    Ok(())
}
