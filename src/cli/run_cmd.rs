//! `distill run [RECIPE.toml]`: a whole recipe, stage by stage (the built-in tiny demo by default).

use std::path::PathBuf;

use clap::Args;

use crate::pipeline::recipe::{Recipe, TINY_R1};
use crate::pipeline::run_recipe;

/// `distill run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The recipe; without one, the built-in tiny end-to-end demo (recipes/tiny-r1.toml).
    pub recipe: Option<PathBuf>,
    /// Override the recipe's output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only check the recipe (every section, prompt source and model config/tokenizer), run nothing.
    #[arg(long)]
    pub check: bool,
}

/// Runs `distill run`.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let mut recipe = match &args.recipe {
        Some(path) => Recipe::from_file(path)?,
        None => Recipe::from_toml(TINY_R1, "built-in recipes/tiny-r1.toml")?,
    };
    if let Some(out) = &args.out {
        recipe.out = out.clone();
    }
    if args.check {
        let (_, checks) = crate::pipeline::check::check_recipe(&recipe)?;
        for line in checks {
            println!("ok  {line}");
        }
        println!("recipe {} is ready to run", recipe.name);
        return Ok(());
    }
    let started = std::time::Instant::now();
    let report = run_recipe(&recipe)?;
    println!(
        "recipe {} finished in {:.0} s; report: {}",
        recipe.name,
        started.elapsed().as_secs_f64(),
        report.display()
    );
    Ok(())
}
