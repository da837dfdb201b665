//! Figures from result rows, in three parts: the figure model ([`figure`]: panels of lines or
//! grouped bars, no drawing code), the builders that make figures from rows ([`build`]), and the
//! renderer that draws a figure to SVG or PNG with plotters ([`render`]).
//!
//! Built figures (one SVG and one PNG each):
//! - `tflops-<pattern>`: TFLOPS vs sequence length (log₂ x), one line per backend (and run), one
//!   panel per pass;
//! - `bars-<pass>-S<len>`: grouped bars per pattern at one length, X/E/W/T/! where a backend has no
//!   number (LongCA-bench's convention);
//! - `cp-<pattern>-S<len>-<pass>`: TFLOPS/GPU and scaling efficiency vs world size per strategy;
//! - `mem-<pattern>`: peak memory vs sequence length (log₂ y).
//!
//! Rows with kind `simulated` are dashed and labelled "projected". Only [`crate::report::Metric::value`] turns a row
//! into a number, so a row whose status is not `ok` is never drawn as one.

pub mod build;
pub mod figure;
pub mod render;

use std::path::{Path, PathBuf};

use super::data::ReportError;

pub use build::{build_figures, pass_title, PlotOptions};
pub use figure::{color_hex, BarValue, Bars, Colors, Content, Figure, LineStyle, Panel, Scale, Series, PALETTE};
pub use render::{figure_size, register_font, render_png, render_svg};

/// Writes `<name>.svg` and `<name>.png` for each figure and `plots.json` (the data behind every
/// figure: series and points, bars and marks) into `dir`; returns the files written.
pub fn write_figures(figs: &[Figure], dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(ReportError::io(dir))?;
    let mut out = Vec::new();
    for f in figs {
        let svg = dir.join(format!("{}.svg", f.name));
        std::fs::write(&svg, render_svg(f)?).map_err(ReportError::io(&svg))?;
        let png = dir.join(format!("{}.png", f.name));
        render_png(f, &png)?;
        out.push(svg);
        out.push(png);
    }
    let json = dir.join("plots.json");
    std::fs::write(&json, serde_json::to_string_pretty(figs)?).map_err(ReportError::io(&json))?;
    out.push(json);
    Ok(out)
}
