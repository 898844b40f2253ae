//! The command line: one clap args struct per verb, and the dispatch from verbs to library calls.

mod bench_cmd;
mod config_table;
mod filter_cmd;
mod generate_cmd;
mod grpo_cmd;
mod model_cmd;
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
    /// Supervised fine-tuning of a student on accepted traces (`--student`).
    Train(train_cmd::TrainArgs),
    /// Reinforcement learning (GRPO) on a student.
    Grpo(grpo_cmd::GrpoArgs),
    /// pass@1 and cons@k of a model on a prompt set.
    Eval(PlannedArgs),
    /// The distillation-vs-RL report from several runs.
    Compare(PlannedArgs),
    /// Run a whole recipe stage by stage.
    Run(PlannedArgs),
    /// Throughput benchmarks (`distill bench cpu`).
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Create, inspect and sample models.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
}

/// Arguments of a verb that is not built yet (accepted so `--help` works, then refused).
#[derive(Debug, clap::Args)]
pub struct PlannedArgs {
    /// Arguments the finished verb will take.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let verb = match cli.command {
        Command::Model(command) => return model_cmd::run(command),
        Command::Bench(command) => return bench_cmd::run(&command),
        Command::Train(args) => return train_cmd::run(&args),
        Command::Grpo(args) => return grpo_cmd::run(&args),
        Command::Generate(args) => return generate_cmd::run(&args),
        Command::Filter(args) => return filter_cmd::run(args),
        Command::Eval(_) => "eval",
        Command::Compare(_) => "compare",
        Command::Run(_) => "run",
    };
    anyhow::bail!("`distill {verb}` is not built yet in this version; nothing was run")
}
