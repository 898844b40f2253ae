//! `distill pairs`: the command-line face of [`crate::filter::pairs::run_pairs`].

use std::path::PathBuf;

use clap::Args;

use crate::filter::pairs::{run_pairs, PairConfig};

/// `distill pairs`: preference pairs (chosen = accepted, rejected = rejected trace of the same
/// problem) in TRL's conversational preference format.
#[derive(Debug, Args)]
pub struct PairsArgs {
    /// The output directory of `distill filter` (with accepted/ and rejected/).
    #[arg(long)]
    pub filtered: PathBuf,
    /// Output directory (pairs/ shards and summary.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Most pairs per problem.
    #[arg(long, default_value_t = 4)]
    pub max_pairs_per_problem: usize,
    /// Rejection reasons that make a trace a rejected side, most preferred first
    /// (comma-separated; default: wrong_answer, no_answer, failing code, then the readability
    /// issues).
    #[arg(long, value_delimiter = ',')]
    pub rejected_reasons: Vec<String>,
    /// Pair each chosen trace with the rejected trace closest to it in length.
    #[arg(long)]
    pub length_matched: bool,
}

/// Makes the pairs and prints a line about them.
pub fn run(args: &PairsArgs) -> anyhow::Result<()> {
    let mut config = PairConfig::new(args.filtered.clone(), args.out.clone());
    config.max_pairs_per_problem = args.max_pairs_per_problem;
    config.length_matched = args.length_matched;
    if !args.rejected_reasons.is_empty() {
        config.rejected_reasons = args.rejected_reasons.clone();
    }
    let summary = run_pairs(&config)?;
    println!(
        "{} pairs from {} of {} problems ({} contaminated left out) in {}",
        summary.pairs,
        summary.problems_with_pairs,
        summary.problems,
        summary.contaminated_problems,
        args.out.join(crate::filter::pairs::PAIRS_DIR).display()
    );
    Ok(())
}
