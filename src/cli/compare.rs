//! `attnbench compare BASE.csv NEW.csv`: case-by-case comparison joined on `case_id`; exit 1 when
//! any case regressed beyond both the threshold and the measured noise.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::{BadInput, CheckFailed};
use crate::report::compare::{compare, text_summary};
use crate::report::export::{ExportType, GabMetric};
use crate::report::{cli_error, load_runs};

#[derive(clap::Args, Debug)]
#[command(after_help = "Verdict per case: regression when new/base median time > 1 + PCT/100 AND the p20–p80 intervals \
of the two runs do not overlap (new p20 > base p80); improvement symmetrically; otherwise unchanged. A missing p20/p80 counts \
as the median. A case not ok in either run is not-ok. Cases not matched by case_id are explained: id-changed (same columns, \
another case_id: the case identity changed, refresh the baseline), renamed (one of backend, strategy, mask, parameters \
differs), removed (base only), new (new only); their times are shown, never judged. \
A comparison that checks nothing fails closed: a BASE or NEW without rows is exit 2, no case ok in both runs exit 1 \
(--allow-empty accepts both). \
Exit status: 1 on any regression or on a case ok in BASE and not ok in NEW (oom, wrong, error, …; --allow-broken \
accepts those), 0 otherwise, 2 on bad input.")]
pub struct CompareArgs {
    /// The reference run.
    #[arg(value_name = "BASE.csv")]
    pub base: PathBuf,
    /// The run under test.
    #[arg(value_name = "NEW.csv")]
    pub new: PathBuf,
    /// Relative change of the median time, in percent, below which nothing counts.
    #[arg(long, default_value_t = 5.0, value_name = "PCT")]
    pub threshold: f64,
    /// Write a Markdown summary (for a PR comment) to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write github-action-benchmark JSON (the NEW run's ok cases) to FILE.
    #[arg(long = "json-gab", value_name = "FILE")]
    pub json_gab: Option<PathBuf>,
    /// Value exported with --json-gab: ms (tool customSmallerIsBetter) or tflops (customBiggerIsBetter).
    #[arg(long, value_enum, default_value = "ms")]
    pub gab_metric: GabMetric,
    /// Write Bencher Metric Format JSON (latency in ns with p20/p80 bounds, throughput in FLOP/s) to FILE.
    #[arg(long, value_name = "FILE")]
    pub bmf: Option<PathBuf>,
    /// Accepted for older scripts: failing on a case ok in BASE and not ok in NEW is the default now.
    #[arg(long, hide = true, conflicts_with = "allow_broken")]
    pub fail_on_broken: bool,
    /// Do not fail when cases that were ok in BASE are not ok in NEW (OOM, wrong, error, …); they are
    /// still listed. Without it such a comparison exits 1: a run where 43 of 44 cases broke must not pass.
    #[arg(long)]
    pub allow_broken: bool,
    /// Accept a comparison that checks nothing (a run without rows, or no case ok in both runs)
    /// instead of failing: e.g. the first run of a new suite.
    #[arg(long)]
    pub allow_empty: bool,
}

pub fn run(args: CompareArgs) -> anyhow::Result<ExitCode> {
    if !(args.threshold.is_finite() && args.threshold >= 0.0) {
        return Err(BadInput::new(format!("--threshold {}: expected a non-negative percentage, e.g. 5", args.threshold)).into());
    }
    let runs = load_runs(&[args.base.clone(), args.new.clone()], &[]).map_err(cli_error)?;
    for (path, run) in [(&args.base, &runs[0]), (&args.new, &runs[1])] {
        if run.rows.is_empty() && !args.allow_empty {
            return Err(BadInput::new(format!(
                "{}: no rows (empty or header only): nothing to compare, so nothing would be checked (--allow-empty to accept)",
                path.display()
            ))
            .into());
        }
    }
    let cmp = compare(&runs[0].rows, &runs[1].rows, args.threshold);
    let outputs = [(args.markdown, ExportType::Markdown), (args.json_gab, ExportType::GithubActionBenchmark(args.gab_metric)), (args.bmf, ExportType::Bencher)];
    for (path, kind) in outputs {
        if let Some(p) = path {
            let bytes = kind.exporter().serialize(&cmp).map_err(cli_error)?;
            std::fs::write(&p, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        }
    }
    print!("{}", text_summary(&cmp));
    if cmp.checked() == 0 && !args.allow_empty {
        return Err(CheckFailed(format!(
            "no case is ok in both runs ({} rows in {}, {} in {}): the comparison checked nothing{} (--allow-empty to accept)",
            runs[0].rows.len(),
            args.base.display(),
            runs[1].rows.len(),
            args.new.display(),
            if cmp.count(crate::report::compare::Verdict::IdChanged) > 0 { "; the case ids changed, so refresh the baseline" } else { "" }
        ))
        .into());
    }
    if cmp.regressions() > 0 {
        return Err(CheckFailed(format!("{} case(s) regressed beyond {} % and noise", cmp.regressions(), args.threshold)).into());
    }
    if !args.allow_broken && cmp.newly_broken() > 0 {
        return Err(CheckFailed(format!("{} case(s) ok in the base run are not ok in the new run (--allow-broken to accept)", cmp.newly_broken())).into());
    }
    Ok(ExitCode::SUCCESS)
}
