//! The `distill` binary: parse the command line, run the stage, report errors.

use clap::Parser;

fn main() -> std::process::ExitCode {
    distill::runtime::init();
    let cli = distill::cli::Cli::parse();
    match distill::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
