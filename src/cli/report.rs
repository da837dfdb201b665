//! `attnbench report RUN_DIR`: a self-contained HTML page (tables, inline SVG plots, metadata).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::report::cli_error;
use crate::report::html::{report_dir, HtmlOptions};

#[derive(clap::Args, Debug)]
#[command(after_help = "RUN_DIR holds results.csv and meta.json (as written by `attnbench run`). The page has no scripts \
and no external files; it opens from disk in any browser. --cab adds CAB's efficiency analysis: per backend the efficiency \
length for time and memory as CAB defines it (baseline quadratic fit against the backend's linear fit, larger crossing), \
and the scaling exponents of power-law fits under their own title.")]
pub struct ReportArgs {
    /// Run directory (results.csv + meta.json).
    #[arg(value_name = "RUN_DIR")]
    pub dir: PathBuf,
    /// Output file [default: RUN_DIR/report.html].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Include CAB's efficiency analysis.
    #[arg(long)]
    pub cab: bool,
    /// The backend CAB's efficiency length is measured against (CAB's "vanilla").
    #[arg(long, default_value = crate::report::cab::DEFAULT_BASELINE, value_name = "BACKEND")]
    pub baseline: String,
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let report = report_dir(&args.dir, &HtmlOptions { cab: args.cab, baseline: args.baseline.clone() }).map_err(cli_error)?;
    let out = args.out.unwrap_or_else(|| args.dir.join("report.html"));
    std::fs::write(&out, report.html).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    if report.rows == 0 {
        eprintln!("note: {}: {}", args.dir.join("results.csv").display(), crate::report::html::EMPTY_RUN);
    }
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
