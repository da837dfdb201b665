//! `attnbench table`: pivot tables (backend × sequence length, strategy × world size) in Markdown,
//! LaTeX (booktabs), CSV or HTML; with `--cab`, the CAB-style efficiency fits instead.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::report::data::Metric;
use crate::report::table::{pivot, TableFormat};
use crate::report::{cab, cli_error, load_runs};

#[derive(clap::Args, Debug)]
#[command(after_help = "Marks: X unsupported, E out of memory, W wrong result, T timeout, ! error; best value per column in bold \
(highest TFLOPS/MFU, lowest ms/memory). \
--cab: for each (pattern, pass, setup), fit median time and peak memory vs sequence length per backend with a least-squares \
power law y = a·S^b on log-log axes (a, b, R²), and give the efficiency length: the length from which each backend beats \
`naive`, from the fits (S* = (a_e/a_n)^(1/(b_n−b_e))) and the first measured length where it is faster. `attnbench plot --cab` \
draws the same fits.")]
pub struct TableArgs {
    /// Result CSV(s); rows of several files are pooled (a later row for the same cell wins).
    #[arg(required = true, value_name = "RESULTS.csv")]
    pub csv: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "md")]
    pub format: TableFormat,
    #[arg(long, value_enum, default_value = "tflops")]
    pub metric: Metric,
    /// Print the CAB-style efficiency analysis (power-law fits and efficiency lengths) instead.
    #[arg(long)]
    pub cab: bool,
    /// Write to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: TableArgs) -> anyhow::Result<ExitCode> {
    let runs = load_runs(&args.csv, &[]).map_err(cli_error)?;
    let rows: Vec<_> = runs.into_iter().flat_map(|r| r.rows).collect();
    let tables = if args.cab { cab::tables(&cab::analyse(&rows)) } else { pivot(&rows, args.metric) };
    let text = args.format.writer().write(&tables);
    match args.out {
        Some(p) => std::fs::write(&p, text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
