//! The filter report: [`FilterSummary`] (counts per reason, acceptance overall and per source,
//! completion-token statistics of accepted vs rejected traces, pass-rate band counts, and the
//! generation cost per accepted trace when the traces carry their cost), written
//! as `report.json` (the summary serialised) and `report.md` (the same for people).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::shards::write_atomically;
use crate::data::{DataError, Result};

use super::pass_rates::PassRate;
use super::reasons::all_reasons;
use super::Candidate;
use crate::verify::code::CodeVerdict;

/// Completion-token statistics of a set of traces (all 0 when it is empty), over the traces
/// whose token count is known (an endpoint without usage and no tokenizer leaves it null).
/// Median and p90 are nearest-rank: the smallest value with at least that share of values at
/// or below it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenStats {
    /// Number of traces with a known token count.
    pub count: usize,
    /// Mean completion tokens.
    pub mean: f64,
    /// Median completion tokens.
    pub median: u32,
    /// 90th percentile of completion tokens.
    pub p90: u32,
    /// Most completion tokens.
    pub max: u32,
}

impl TokenStats {
    /// The statistics of `values`.
    pub fn of(mut values: Vec<u32>) -> Self {
        if values.is_empty() {
            return TokenStats::default();
        }
        values.sort_unstable();
        let rank = |share: f64| {
            let index = (share * values.len() as f64).ceil() as usize;
            values[index.clamp(1, values.len()) - 1]
        };
        let sum: u64 = values.iter().map(|&v| u64::from(v)).sum();
        TokenStats {
            count: values.len(),
            mean: sum as f64 / values.len() as f64,
            median: rank(0.5),
            p90: rank(0.9),
            max: values[values.len() - 1],
        }
    }
}

/// Acceptance of one prompt set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStats {
    /// Traces of this source.
    pub traces: usize,
    /// Accepted traces.
    pub accepted: usize,
    /// `accepted / traces`.
    pub acceptance_rate: f64,
    /// What generating its traces cost (accepted or not), when their endpoints had prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// `cost / accepted`: what one accepted trace cost; `None` without cost or acceptances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_accepted: Option<f64>,
}

/// `cost / accepted`, when both are known and `accepted > 0`.
fn per_accepted(cost: Option<f64>, accepted: usize) -> Option<f64> {
    cost.filter(|_| accepted > 0).map(|c| c / accepted as f64)
}

/// What a filter run did; `report.json` is this struct serialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterSummary {
    /// Hash of the configuration and inputs (also in the output manifests).
    pub recipe_hash: String,
    /// The policy, `all` or `shortest:K`.
    pub policy: String,
    /// Input traces.
    pub traces: usize,
    /// Traces written to `accepted/`.
    pub accepted: usize,
    /// Traces written to `rejected/`.
    pub rejected: usize,
    /// `accepted / traces` (0 without traces).
    pub acceptance_rate: f64,
    /// Rejected traces per reason (a trace counts once under each of its reasons); every
    /// reason is listed, with 0 when it never occurred.
    pub reasons: BTreeMap<String, usize>,
    /// Acceptance per prompt set (`source` column).
    pub per_source: BTreeMap<String, SourceStats>,
    /// Completion tokens of accepted traces.
    pub accepted_tokens: TokenStats,
    /// Completion tokens of rejected traces.
    pub rejected_tokens: TokenStats,
    /// Distinct problems.
    pub problems: usize,
    /// Problems with at least one accepted trace.
    pub problems_with_accepted: usize,
    /// Problems sharing an n-gram with an evaluation problem.
    pub contaminated_problems: usize,
    /// Evaluation problems indexed for decontamination.
    pub eval_problems: usize,
    /// Problems in the RL pass-rate band (see `pass_rates.parquet`).
    pub rl_candidates: usize,
    /// The band, `[min_pass_rate, max_pass_rate]`.
    pub pass_rate_band: [f64; 2],
    /// Contaminated problem id → the evaluation problem it shares an n-gram with (for
    /// auditing matches on boilerplate phrasing).
    pub contamination: BTreeMap<String, String>,
    /// Code problems' results, when the input has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeReport>,
    /// What generating the input traces cost (the `cost` column), when any has a cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// `cost / accepted`: what one accepted trace cost overall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_accepted: Option<f64>,
}

/// What running the code problems' traces against their tests gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeReport {
    /// Traces of code problems.
    pub traces: usize,
    /// Traces per verdict (`passed`, `tests_failed`, `runtime_error`, `timeout`,
    /// `memory_limit`, `no_code`, `sandbox_error`), every verdict listed.
    pub verdicts: BTreeMap<String, usize>,
    /// Tests passed, summed over traces.
    pub tests_passed: usize,
    /// Tests run, summed over traces.
    pub tests_run: usize,
}

impl CodeReport {
    /// The report of the `code_result`s of `candidates` (`None` when none has one).
    fn of(candidates: &[Candidate]) -> Option<Self> {
        let mut report = CodeReport {
            verdicts: CodeVerdict::ALL
                .iter()
                .map(|v| (v.name().to_string(), 0))
                .collect(),
            ..CodeReport::default()
        };
        for result in candidates.iter().filter_map(|c| c.code_result.as_ref()) {
            report.traces += 1;
            if let Some(verdict) = result["verdict"].as_str() {
                *report.verdicts.entry(verdict.to_string()).or_default() += 1;
            }
            let count = |key: &str| result[key].as_u64().unwrap_or(0) as usize;
            report.tests_passed += count("passed");
            report.tests_run += count("total");
        }
        (report.traces > 0).then_some(report)
    }
}

/// Fraction `part / whole`, 0 when `whole` is 0.
fn rate(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The facts of a run that are not in the candidates.
pub(super) struct RunFacts<'a> {
    /// Recipe hash.
    pub recipe_hash: &'a str,
    /// Policy text.
    pub policy: String,
    /// Evaluation problems indexed.
    pub eval_problems: usize,
    /// The pass-rate band.
    pub band: (f64, f64),
}

/// Summarises judged candidates and their pass rates.
pub(super) fn summarise(
    candidates: &[Candidate],
    rates: &[PassRate],
    facts: RunFacts<'_>,
    contamination: BTreeMap<String, String>,
) -> FilterSummary {
    let mut reasons: BTreeMap<String, usize> = all_reasons()
        .into_iter()
        .map(|r| (r.to_string(), 0))
        .collect();
    let mut per_source: BTreeMap<String, SourceStats> = BTreeMap::new();
    let (mut accepted_tokens, mut rejected_tokens) = (Vec::new(), Vec::new());
    let mut accepted = 0;
    let mut problems_with_accepted = std::collections::HashSet::new();
    for candidate in candidates {
        let source = per_source
            .entry(candidate.facts.source.clone())
            .or_default();
        source.traces += 1;
        if let Some(cost) = candidate.facts.cost {
            *source.cost.get_or_insert(0.0) += cost;
        }
        if candidate.reasons.is_empty() {
            source.accepted += 1;
            accepted += 1;
            accepted_tokens.extend(candidate.facts.completion_tokens);
            problems_with_accepted.insert(candidate.facts.id.as_str());
        } else {
            rejected_tokens.extend(candidate.facts.completion_tokens);
        }
        for reason in &candidate.reasons {
            *reasons.entry(reason.clone()).or_default() += 1;
        }
    }
    for stats in per_source.values_mut() {
        stats.acceptance_rate = rate(stats.accepted, stats.traces);
        stats.cost_per_accepted = per_accepted(stats.cost, stats.accepted);
    }
    let cost = per_source
        .values()
        .filter_map(|s| s.cost)
        .reduce(|a, b| a + b);
    FilterSummary {
        recipe_hash: facts.recipe_hash.to_string(),
        policy: facts.policy,
        traces: candidates.len(),
        accepted,
        rejected: candidates.len() - accepted,
        acceptance_rate: rate(accepted, candidates.len()),
        reasons,
        per_source,
        accepted_tokens: TokenStats::of(accepted_tokens),
        rejected_tokens: TokenStats::of(rejected_tokens),
        problems: rates.len(),
        problems_with_accepted: problems_with_accepted.len(),
        contaminated_problems: rates.iter().filter(|r| r.contaminated).count(),
        eval_problems: facts.eval_problems,
        rl_candidates: rates.iter().filter(|r| r.rl_candidate).count(),
        pass_rate_band: [facts.band.0, facts.band.1],
        contamination,
        code: CodeReport::of(candidates),
        cost,
        cost_per_accepted: per_accepted(cost, accepted),
    }
}

impl FilterSummary {
    /// The reasons that rejected at least one trace, as `reason count` items.
    pub fn nonzero_reasons(&self) -> Vec<String> {
        self.reasons
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect()
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# distill filter report\n");
        let _ = writeln!(
            md,
            "{} traces of {} problems, policy `{}`: **{} accepted ({:.1}%)**, {} rejected.\n",
            self.traces,
            self.problems,
            self.policy,
            self.accepted,
            100.0 * self.acceptance_rate,
            self.rejected
        );
        let _ = writeln!(
            md,
            "Problems with an accepted trace: {}. Contaminated problems: {} (against {} evaluation problems). RL candidates (pass rate in [{}, {}]): {}.\n",
            self.problems_with_accepted,
            self.contaminated_problems,
            self.eval_problems,
            self.pass_rate_band[0],
            self.pass_rate_band[1],
            self.rl_candidates
        );
        let _ = writeln!(
            md,
            "## Rejection reasons\n\n| reason | traces |\n|---|---:|"
        );
        for (reason, count) in &self.reasons {
            let _ = writeln!(md, "| `{reason}` | {count} |");
        }
        let _ = writeln!(
            md,
            "\n## Per source\n\n| source | traces | accepted | rate |\n|---|---:|---:|---:|"
        );
        for (source, stats) in &self.per_source {
            let _ = writeln!(
                md,
                "| {source} | {} | {} | {:.1}% |",
                stats.traces,
                stats.accepted,
                100.0 * stats.acceptance_rate
            );
        }
        let _ = writeln!(
            md,
            "\n## Completion tokens\n\n| traces | count | mean | median | p90 | max |\n|---|---:|---:|---:|---:|---:|"
        );
        for (name, stats) in [
            ("accepted", &self.accepted_tokens),
            ("rejected", &self.rejected_tokens),
        ] {
            let _ = writeln!(
                md,
                "| {name} | {} | {:.1} | {} | {} | {} |",
                stats.count, stats.mean, stats.median, stats.p90, stats.max
            );
        }
        if let Some(cost) = self.cost {
            let shown = |value: Option<f64>| value.map_or("–".to_string(), |v| format!("{v:.6}"));
            let _ = writeln!(
                md,
                "\n## Cost\n\nGenerating the {} traces cost {cost:.4}: {} per accepted trace.\n\n| source | cost | accepted | cost per accepted trace |\n|---|---:|---:|---:|",
                self.traces,
                shown(self.cost_per_accepted)
            );
            for (source, stats) in &self.per_source {
                let _ = writeln!(
                    md,
                    "| {source} | {} | {} | {} |",
                    shown(stats.cost),
                    stats.accepted,
                    shown(stats.cost_per_accepted)
                );
            }
        }
        if let Some(code) = &self.code {
            let _ = writeln!(
                md,
                "\n## Code problems\n\n{} traces of code problems graded, {} of {} tests passed.\n\n| verdict | traces |\n|---|---:|",
                code.traces, code.tests_passed, code.tests_run
            );
            for (verdict, count) in &code.verdicts {
                let _ = writeln!(md, "| {verdict} | {count} |");
            }
        }
        md
    }

    /// Writes `report.json` and `report.md` into `out`, each atomically.
    pub fn write(&self, out: &Path) -> Result<()> {
        let json_path = out.join(REPORT_JSON);
        let mut json = serde_json::to_string_pretty(self)
            .map_err(|e| DataError::io(&json_path, std::io::Error::other(e)))?;
        json.push('\n');
        write_atomically(&json_path, json.as_bytes())?;
        write_atomically(&out.join(REPORT_MD), self.to_markdown().as_bytes())
    }
}

/// File name of the JSON report.
pub const REPORT_JSON: &str = "report.json";
/// File name of the Markdown report.
pub const REPORT_MD: &str = "report.md";
