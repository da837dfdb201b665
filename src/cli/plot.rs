//! `attnbench plot`: SVG + PNG figures from one or more result CSVs (see `report::plot` for the
//! list of figures). Several CSVs are overlaid, one series per run and backend.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::BadInput;
use crate::report::data::slug;
use crate::report::plot::{build_figures, write_figures, Colors, PlotOptions};
use crate::report::{cli_error, load_runs};

#[derive(clap::Args, Debug)]
#[command(after_help = "Figures: tflops-<pattern> (TFLOPS vs length, one panel per pass), mem-<pattern> (peak memory), \
bars-<pass>-S<len> (grouped bars per pattern; X unsupported, E out of memory, W wrong, T timeout, ! error), \
cp-<pattern>-S<len>-<pass> (TFLOPS/GPU and scaling efficiency vs world size); with --cab also cab-<pattern>-<pass> \
(time and memory vs length with CAB's fits: the baseline's quadratic, each backend's line), mask-<pattern> (a picture of each mask of the CSVs at its smallest \
length, PNG; --no-masks to skip). Each figure as .svg and .png, plus plots.json with the data drawn. \
Rows of kind `simulated` are dashed and labelled \"projected\"; rows whose status is not ok are never drawn as numbers.")]
pub struct PlotArgs {
    /// Result CSVs; several are overlaid (e.g. two GPUs or two commits).
    #[arg(required = true, value_name = "RESULTS.csv")]
    pub csv: Vec<PathBuf>,
    /// Output folder [default: plots/<label of the first CSV>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Series label per CSV, in the same order (default: the CSV's run_id).
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Sequence length of the grouped bar charts [default: the largest length every pattern has].
    #[arg(long, value_name = "TOKENS")]
    pub at_seqlen: Option<usize>,
    /// Also draw CAB's efficiency figures (time and memory vs length with CAB's fits).
    #[arg(long)]
    pub cab: bool,
    /// The backend CAB's efficiency length is measured against (CAB's "vanilla").
    #[arg(long, default_value = crate::report::cab::DEFAULT_BASELINE, value_name = "BACKEND")]
    pub baseline: String,
    /// Skip the mask pictures (mask-<pattern>.png).
    #[arg(long)]
    pub no_masks: bool,
}

pub fn run(args: PlotArgs) -> anyhow::Result<ExitCode> {
    let runs = load_runs(&args.csv, &args.labels).map_err(cli_error)?;
    if let Some(s) = args.at_seqlen {
        if !runs.iter().flat_map(|r| &r.rows).any(|r| r.seqlen == s && r.kind == crate::case::CaseKind::Kernel) {
            let mut lens: Vec<usize> = runs.iter().flat_map(|r| r.rows.iter().map(|r| r.seqlen)).collect();
            lens.sort_unstable();
            lens.dedup();
            return Err(BadInput::new(format!("--at-seqlen {s}: no kernel rows at that length (lengths present: {lens:?})")).into());
        }
    }
    let out = args.out.unwrap_or_else(|| PathBuf::from("plots").join(slug(&runs[0].label)));
    if out.exists() && !out.is_dir() {
        return Err(BadInput::new(format!("--out {}: is a file; expected a folder for the figures", out.display())).into());
    }
    let mut colors = Colors::default();
    let mut figs = build_figures(&runs, &PlotOptions { at_seqlen: args.at_seqlen }, &mut colors);
    if args.cab {
        let rows: Vec<_> = runs.iter().flat_map(|r| r.rows.iter().cloned()).collect();
        figs.extend(crate::report::cab::figures(&crate::report::cab::analyse(&rows, &args.baseline).map_err(cli_error)?, &mut colors));
    }
    if figs.is_empty() {
        return Err(BadInput::new("no rows to plot in the given CSVs").into());
    }
    let mut files = write_figures(&figs, &out).map_err(cli_error)?;
    if !args.no_masks {
        files.extend(mask_pictures(&runs, &out)?);
    }
    for f in &files {
        println!("{}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One PNG per distinct (pattern, parameters) of the runs, drawn at the smallest length it was run at
/// (the exact mask the rows measured, downsampled to at most 1024×1024 cells).
fn mask_pictures(runs: &[crate::report::data::Run], out: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    use std::collections::BTreeMap;
    let mut smallest: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in runs.iter().flat_map(|r| &r.rows) {
        let e = smallest.entry((r.mask.clone(), r.mask_params.clone())).or_insert(r.seqlen);
        *e = (*e).min(r.seqlen);
    }
    let mut files = Vec::new();
    for ((pattern, params), seqlen) in smallest {
        let items: Vec<&str> = params.split(';').filter(|s| !s.is_empty()).collect();
        let p = crate::mask::Params::parse_kv(&items)?;
        // A CSV from another version may name a pattern this build does not know: skip it, say why.
        let masks = match crate::mask::build_pattern(&pattern, seqlen, &p) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("mask picture of {pattern} skipped: {e}");
                continue;
            }
        };
        let name = if params.is_empty() { format!("mask-{}", slug(&pattern)) } else { format!("mask-{}-{}", slug(&pattern), slug(&params)) };
        let path = out.join(format!("{name}.png"));
        let title = format!("{pattern} {} S={seqlen} density={:.4}", params.replace(';', " "), masks.density());
        crate::mask::render::write_png(&masks.groups, &title, &path, crate::mask::render::MAX_CELLS)?;
        files.push(path);
    }
    Ok(files)
}
