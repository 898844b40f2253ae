//! The command line: one clap args struct per verb, and the dispatch from verbs to library calls.

mod compare_cmd;
mod eval_cmd;
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
    Generate(PlannedArgs),
    /// Keep traces whose answer is verified correct and that are readable (rejection sampling).
    Filter(PlannedArgs),
    /// Supervised fine-tuning of a student on accepted traces (`--student`).
    Train(train_cmd::TrainArgs),
    /// Reinforcement learning (GRPO) on a student.
    Grpo(PlannedArgs),
    /// pass@1 and cons@k of a model on a prompt set.
    Eval(eval_cmd::EvalArgs),
    /// The distillation-vs-RL report from several runs.
    Compare(compare_cmd::CompareArgs),
    /// Run a whole recipe stage by stage.
    Run(PlannedArgs),
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
        Command::Train(args) => return train_cmd::run(&args),
        Command::Eval(args) => return eval_cmd::run(&args),
        Command::Compare(args) => return compare_cmd::run(&args),
        Command::Generate(_) => "generate",
        Command::Filter(_) => "filter",
        Command::Grpo(_) => "grpo",
        Command::Run(_) => "run",
    };
    anyhow::bail!("`distill {verb}` is not built yet in this version; nothing was run")
}
