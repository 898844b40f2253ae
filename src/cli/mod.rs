//! The command line: one clap args struct per verb, and the dispatch from verbs to library calls.

mod bench_cmd;
mod compare_cmd;
mod config_table;
mod dpo_cmd;
mod engine_args;
mod eval_cmd;
mod filter_cmd;
mod generate_cmd;
mod grpo_cmd;
mod model_cmd;
mod pairs_cmd;
mod rewards_cmd;
mod run_cmd;
mod sandbox_args;
mod train_cmd;

use clap::{Parser, Subcommand};

/// distill: distil a reasoning teacher into long chain-of-thought data and small students.
#[derive(Debug, Parser)]
#[command(name = "distill", version, about, long_about = None)]
pub struct Cli {
    /// The stage to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs of distill, one per pipeline stage plus model tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample long chain-of-thought traces from a teacher into Parquet shards.
    Generate(Box<generate_cmd::GenerateArgs>),
    /// Keep traces whose answer is verified correct and that are readable (rejection sampling).
    Filter(filter_cmd::FilterArgs),
    /// Preference pairs (accepted vs rejected traces of a problem) for DPO, in TRL's format.
    Pairs(pairs_cmd::PairsArgs),
    /// Supervised fine-tuning of a student on accepted traces (`--student`).
    Train(train_cmd::TrainArgs),
    /// Reinforcement learning (GRPO) on a student.
    Grpo(grpo_cmd::GrpoArgs),
    /// Preference optimisation (DPO, IPO, SimPO) on the pairs of `distill pairs`.
    Dpo(dpo_cmd::DpoArgs),
    /// Score GRPO completions from stdin with distill's reward terms (the TRL engine's rewards).
    Rewards(rewards_cmd::RewardsArgs),
    /// pass@1 and cons@k of a model on a prompt set.
    Eval(eval_cmd::EvalArgs),
    /// The distillation-vs-RL report from several runs.
    Compare(compare_cmd::CompareArgs),
    /// Run a whole recipe stage by stage.
    Run(run_cmd::RunArgs),
    /// Throughput benchmarks (`distill bench cpu`).
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Create, inspect and sample models.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate_cmd::run(&args),
        Command::Filter(args) => filter_cmd::run(args),
        Command::Pairs(args) => pairs_cmd::run(&args),
        Command::Train(args) => train_cmd::run(&args),
        Command::Grpo(args) => grpo_cmd::run(&args),
        Command::Dpo(args) => dpo_cmd::run(&args),
        Command::Rewards(args) => rewards_cmd::run(&args),
        Command::Eval(args) => eval_cmd::run(&args),
        Command::Compare(args) => compare_cmd::run(&args),
        Command::Run(args) => run_cmd::run(&args),
        Command::Model(command) => model_cmd::run(command),
        Command::Bench(command) => bench_cmd::run(&command),
    }
}
