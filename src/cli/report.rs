//! `attnbench report RUN_DIR`: a self-contained HTML page (tables, inline SVG plots, metadata).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::report::cli_error;
use crate::report::html::{report_dir, HtmlOptions};

#[derive(clap::Args, Debug)]
#[command(after_help = "RUN_DIR holds results.csv and meta.json (as written by `attnbench run`). The page has no scripts \
and no external files; it opens from disk in any browser. --cab adds the CAB-style efficiency analysis: per backend a \
least-squares power law t = a·S^b (log-log) for time and memory, with R², and the length from which each backend beats \
`naive` (from the fits and the first measured length).")]
pub struct ReportArgs {
    /// Run directory (results.csv + meta.json).
    #[arg(value_name = "RUN_DIR")]
    pub dir: PathBuf,
    /// Output file [default: RUN_DIR/report.html].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Include the CAB-style efficiency analysis.
    #[arg(long)]
    pub cab: bool,
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let report = report_dir(&args.dir, &HtmlOptions { cab: args.cab }).map_err(cli_error)?;
    let out = args.out.unwrap_or_else(|| args.dir.join("report.html"));
    std::fs::write(&out, report.html).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    if report.rows == 0 {
        eprintln!("note: {}: {}", args.dir.join("results.csv").display(), crate::report::html::EMPTY_RUN);
    }
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
