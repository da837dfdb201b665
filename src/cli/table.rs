//! `attnbench table`: pivot tables (backend × sequence length, strategy × world size) in Markdown,
//! LaTeX (booktabs), CSV or HTML; with `--cab`, the CAB-style efficiency fits instead.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::BadInput;
use crate::report::data::Metric;
use crate::report::table::{pivot, Latex, TableFormat, TableWriter};
use crate::report::{cab, cli_error, load_runs};

#[derive(clap::Args, Debug)]
#[command(after_help = "Marks: X unsupported, E out of memory, W wrong result, T timeout, ! error; best value per column in bold \
(highest TFLOPS/MFU, lowest ms/memory). \
--cab: CAB's efficiency length per backend, for time and for memory, as CAB defines it: the baseline (--baseline, default \
naive: CAB's vanilla attention) fitted with a quadratic in S over all its lengths, every other backend with a line (time: \
without its shortest length); the efficiency length is the larger crossing of the two fits, in tokens, or always/never with \
the reason. Then, under their own title, the scaling exponents: a least-squares power law y = a·S^b on log-log axes. \
`attnbench plot --cab` draws the same fits.")]
pub struct TableArgs {
    /// Result CSV(s); rows of several files are pooled (a later row for the same cell wins).
    #[arg(required = true, value_name = "RESULTS.csv")]
    pub csv: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "md")]
    pub format: TableFormat,
    #[arg(long, value_enum, default_value = "tflops")]
    pub metric: Metric,
    /// Print CAB's efficiency analysis (efficiency lengths, scaling exponents) instead.
    #[arg(long)]
    pub cab: bool,
    /// The backend CAB's efficiency length is measured against (CAB's "vanilla").
    #[arg(long, default_value = crate::report::cab::DEFAULT_BASELINE, value_name = "BACKEND")]
    pub baseline: String,
    /// With --format latex: a complete document (documentclass, packages, the tables) that compiles
    /// with pdflatex as it is, instead of table floats to include.
    #[arg(long)]
    pub standalone: bool,
    /// Write to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: TableArgs) -> anyhow::Result<ExitCode> {
    let runs = load_runs(&args.csv, &[]).map_err(cli_error)?;
    let rows: Vec<_> = runs.into_iter().flat_map(|r| r.rows).collect();
    if rows.is_empty() {
        let names: Vec<String> = args.csv.iter().map(|p| p.display().to_string()).collect();
        return Err(BadInput::new(format!("{}: no rows (empty or header only): no table to make", names.join(", "))).into());
    }
    let tables = if args.cab { cab::tables(&cab::analyse(&rows, &args.baseline).map_err(cli_error)?) } else { pivot(&rows, args.metric) };
    let text = match (args.format, args.standalone) {
        (TableFormat::Latex, standalone) => Latex { standalone }.write(&tables),
        (_, true) => return Err(BadInput::new("--standalone: only with --format latex (a complete LaTeX document)").into()),
        (format, false) => format.writer().write(&tables),
    };
    match args.out {
        Some(p) => std::fs::write(&p, text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
