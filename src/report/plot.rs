//! Figures from result rows: a small figure model ([`Figure`]: panels of lines or grouped bars) built
//! from rows, and one renderer (plotters) that draws it to SVG or PNG with the embedded DejaVu Sans
//! font — no system fonts, no fontconfig.
//!
//! Built figures (one SVG and one PNG each):
//! - `tflops-<pattern>`: TFLOPS vs sequence length (log₂ x), one line per backend (and run), one
//!   panel per pass;
//! - `bars-<pass>-S<len>`: grouped bars per pattern at one length, X/E/W/T/! where a backend has no
//!   number (LongCA-bench's convention);
//! - `cp-<pattern>-S<len>-<pass>`: TFLOPS/GPU and scaling efficiency vs world size per strategy;
//! - `mem-<pattern>`: peak memory vs sequence length (log₂ y).
//!
//! Rows with kind `simulated` are dashed and labelled "projected". Only [`Metric::value`] turns a row
//! into a number, so a row whose status is not `ok` is never drawn as one.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use crate::case::CaseKind;
use crate::results::{Row, Status};

use super::data::{distinct, fmt_bytes, fmt_seqlen, fmt_sig, group_ordered, mark, pass_rank, slug, GroupKey, Metric, ReportError, Run};

/// Series colours (Tableau 10), assigned in order of first appearance and reused across figures so a
/// backend keeps its colour everywhere.
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// `#RRGGBB` of a palette index (as plotters writes it into SVG `stroke`/`fill`).
pub fn color_hex(i: usize) -> String {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02X}{g:02X}{b:02X}")
}

/// How an axis maps values to positions and labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    Linear,
    /// Sequence lengths on a log₂ axis, labelled 1K, 2K, …
    Log2Len,
    /// Counts (world sizes) on a log₂ axis.
    Log2Count,
    /// Bytes on a log₂ axis, labelled MiB/GiB.
    Log2Bytes,
    /// Any positive quantity on a log₂ axis (times in ms).
    Log2,
}

impl Scale {
    fn fwd(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            _ => v.log2(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineStyle {
    Solid,
    /// Projected (simulated) rows and fitted curves.
    Dashed,
    /// Markers only (measured points under a fitted curve).
    Points,
    /// A dashed curve without markers (fitted model).
    Fit,
}

/// One line: raw (untransformed) x, y values of `ok` rows only.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub label: String,
    pub color: usize,
    pub style: LineStyle,
    pub points: Vec<(f64, f64)>,
}

/// A bar's content: a number, or the mark of a case without one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BarValue {
    Value(f64),
    Mark(&'static str),
    Missing,
}

/// Grouped bars: `values[group][series]`.
#[derive(Debug, Clone, Serialize)]
pub struct Bars {
    pub groups: Vec<String>,
    pub series: Vec<(String, usize)>,
    pub values: Vec<Vec<BarValue>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Lines(Vec<Series>),
    Bars(Bars),
}

#[derive(Debug, Clone, Serialize)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    /// Lower y bound is zero (throughputs, efficiencies) rather than the data minimum.
    pub y_from_zero: bool,
    pub content: Content,
}

/// A figure: a title, a subtitle (device, dtype, heads, D), side-by-side panels, one shared legend.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// File stem (`tflops-causal`).
    pub name: String,
    pub title: String,
    pub subtitle: String,
    pub panels: Vec<Panel>,
    /// Legend entries: label, colour index, style.
    pub legend: Vec<(String, usize, LineStyle)>,
}

/// Options of the figure builder.
#[derive(Debug, Clone, Default)]
pub struct PlotOptions {
    /// Length for the grouped bars; `None` = the largest length every pattern has.
    pub at_seqlen: Option<usize>,
}

/// Assigns palette colours to series keys in order of first request.
#[derive(Debug, Default)]
pub struct Colors(Vec<String>);

impl Colors {
    pub fn get(&mut self, key: &str) -> usize {
        match self.0.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                self.0.push(key.to_string());
                self.0.len() - 1
            }
        }
    }
}

/// A row with the label of its run.
#[derive(Clone, Copy)]
struct Tagged<'a> {
    run: &'a str,
    row: &'a Row,
}

/// What a kernel figure groups on: the group key without the device, so two GPUs overlay.
fn plot_key(r: &Row) -> GroupKey {
    let mut k = GroupKey::of(r);
    k.device.clear();
    k
}

fn devices(rows: &[Tagged]) -> String {
    distinct(rows.iter().map(|t| t.row.device.clone())).join(" vs ")
}

fn setup_line(k: &GroupKey, rows: &[Tagged]) -> String {
    let mut k = k.clone();
    k.device = devices(rows);
    k.setup()
}

/// Series name of a row: backend (kernel) or strategy (CP), with the run label when several runs
/// are overlaid, "(projected)" for simulated rows.
fn series_name(t: &Tagged, multi_run: bool, cp: bool) -> (String, String, bool) {
    let base = if cp { t.row.strategy.clone() } else { t.row.backend.clone() };
    let colour_key = if multi_run { format!("{} · {}", base, t.run) } else { base };
    let projected = t.row.kind == CaseKind::Simulated;
    let label = if projected { format!("{colour_key} (projected)") } else { colour_key.clone() };
    (label, colour_key, projected)
}

/// Builds every figure for the given runs.
pub fn build_figures(runs: &[Run], opts: &PlotOptions, colors: &mut Colors) -> Vec<Figure> {
    let multi = runs.len() > 1;
    let tagged: Vec<Tagged> = runs.iter().flat_map(|r| r.rows.iter().map(move |row| Tagged { run: &r.label, row })).collect();
    let kernel: Vec<Tagged> = tagged.iter().copied().filter(|t| t.row.strategy.is_empty() && t.row.kind != CaseKind::Cp).collect();
    let cp: Vec<Tagged> = tagged.iter().copied().filter(|t| !(t.row.strategy.is_empty() && t.row.kind != CaseKind::Cp)).collect();
    let mut figs = Vec::new();
    // Line figures per pattern: TFLOPS and memory.
    for (k, rs) in group_ordered(kernel.iter(), |t| plot_key(t.row)) {
        let rs: Vec<Tagged> = rs.into_iter().copied().collect();
        figs.push(metric_vs_len(&k, &rs, Metric::Tflops, multi, colors));
        if rs.iter().any(|t| Metric::Mem.value(t.row).is_some()) {
            figs.push(metric_vs_len(&k, &rs, Metric::Mem, multi, colors));
        }
    }
    figs.extend(bar_figures(&kernel, opts, multi, colors));
    let len = super::data::CpLen::choose(&cp.iter().map(|t| t.row).collect::<Vec<_>>());
    for ((k, seqlen, pass), rs) in group_ordered(cp.iter(), |t| (plot_key(t.row), len.key(t.row), t.row.pass.clone())) {
        let rs: Vec<Tagged> = rs.into_iter().copied().collect();
        figs.push(cp_figure(&k, len, seqlen, &pass, &rs, multi, colors));
    }
    figs
}

fn lines_by_series(rs: &[Tagged], multi: bool, cp: bool, colors: &mut Colors, x: impl Fn(&Row) -> f64, y: impl Fn(&Row) -> Option<f64>) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for t in rs {
        let (label, key, projected) = series_name(t, multi, cp);
        let color = colors.get(&key);
        let idx = match out.iter().position(|s| s.label == label) {
            Some(i) => i,
            None => {
                out.push(Series { label, color, style: if projected { LineStyle::Dashed } else { LineStyle::Solid }, points: vec![] });
                out.len() - 1
            }
        };
        if let Some(v) = y(t.row) {
            let xv = x(t.row);
            // A later row for the same x (re-measured case) replaces the earlier one.
            out[idx].points.retain(|p| p.0 != xv);
            out[idx].points.push((xv, v));
        }
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    // Start a projected line at the last measured point of the same series, so the eye follows it.
    for i in 0..out.len() {
        if out[i].style != LineStyle::Dashed || out[i].points.is_empty() {
            continue;
        }
        let first_x = out[i].points[0].0;
        let anchor =
            out.iter().find(|m| m.style == LineStyle::Solid && m.color == out[i].color).and_then(|m| m.points.iter().rev().find(|p| p.0 < first_x).copied());
        if let Some(a) = anchor {
            out[i].points.insert(0, a);
        }
    }
    out
}

fn legend_of(panels: &[Panel]) -> Vec<(String, usize, LineStyle)> {
    let mut l: Vec<(String, usize, LineStyle)> = Vec::new();
    for p in panels {
        match &p.content {
            Content::Lines(ss) => {
                for s in ss {
                    if !l.iter().any(|e| e.0 == s.label) {
                        l.push((s.label.clone(), s.color, s.style));
                    }
                }
            }
            Content::Bars(b) => {
                for (s, c) in &b.series {
                    if !l.iter().any(|e| e.0 == *s) {
                        l.push((s.clone(), *c, LineStyle::Solid));
                    }
                }
            }
        }
    }
    l
}

fn metric_vs_len(k: &GroupKey, rs: &[Tagged], metric: Metric, multi: bool, colors: &mut Colors) -> Figure {
    let mut passes = distinct(rs.iter().map(|t| t.row.pass.clone()));
    passes.sort_by_key(|p| pass_rank(p));
    let panels: Vec<Panel> = passes
        .iter()
        .map(|pass| {
            let sub: Vec<Tagged> = rs.iter().copied().filter(|t| &t.row.pass == pass).collect();
            let series = lines_by_series(&sub, multi, false, colors, |r| r.seqlen as f64, |r| metric.value(r));
            let (y_label, y_scale) = match metric {
                Metric::Mem => ("peak memory (bytes, log₂)".to_string(), Scale::Log2Bytes),
                _ => (format!("{} ({})", metric.caption(CaseKind::Kernel), if metric == Metric::Ms { "ms" } else { "10¹² FLOP/s" }), Scale::Linear),
            };
            Panel {
                title: pass_title(pass),
                x_label: "sequence length (tokens, log₂)".into(),
                y_label,
                x_scale: Scale::Log2Len,
                y_scale,
                y_from_zero: metric != Metric::Mem,
                content: Content::Lines(series),
            }
        })
        .collect();
    let what = match metric {
        Metric::Mem => "peak memory",
        _ => "attention throughput",
    };
    Figure {
        name: format!("{}-{}", if metric == Metric::Mem { "mem" } else { "tflops" }, k.slug()),
        title: format!("{}: {what} vs sequence length", k.pattern()),
        subtitle: setup_line(k, rs),
        legend: legend_of(&panels),
        panels,
    }
}

pub fn pass_title(pass: &str) -> String {
    match pass {
        "fwd" => "forward".into(),
        "bwd" => "backward".into(),
        "fwdbwd" => "forward + backward".into(),
        p => p.into(),
    }
}

fn bar_figures(kernel: &[Tagged], opts: &PlotOptions, multi: bool, colors: &mut Colors) -> Vec<Figure> {
    let mut figs = Vec::new();
    // Group ignoring the pattern and device: one figure per pass and setup.
    let mut groups = group_ordered(kernel.iter(), |t| {
        let mut k = plot_key(t.row);
        k.mask.clear();
        k.mask_params.clear();
        (k, t.row.pass.clone())
    });
    groups.sort_by_key(|((_, p), _)| pass_rank(p));
    for ((k, pass), rs) in groups {
        let rs: Vec<Tagged> = rs.into_iter().copied().collect();
        let patterns = distinct(rs.iter().map(|t| plot_key(t.row)));
        let at = match opts.at_seqlen {
            Some(s) => s,
            None => {
                // Largest length present (with any status) for every pattern.
                let mut common: Option<Vec<usize>> = None;
                for p in &patterns {
                    let lens: Vec<usize> = rs.iter().filter(|t| plot_key(t.row) == *p).map(|t| t.row.seqlen).collect();
                    common = Some(match common {
                        None => lens,
                        Some(c) => c.into_iter().filter(|s| lens.contains(s)).collect(),
                    });
                }
                match common.and_then(|c| c.into_iter().max()) {
                    Some(s) => s,
                    None => continue,
                }
            }
        };
        let at_rows: Vec<Tagged> = rs.iter().copied().filter(|t| t.row.seqlen == at).collect();
        if at_rows.is_empty() {
            continue;
        }
        let series_keys = distinct(at_rows.iter().map(|t| series_name(t, multi, false)));
        let series: Vec<(String, usize)> = series_keys.iter().map(|(label, key, _)| (label.clone(), colors.get(key))).collect();
        let groups: Vec<GroupKey> = distinct(at_rows.iter().map(|t| plot_key(t.row)));
        let values = groups
            .iter()
            .map(|g| {
                series_keys
                    .iter()
                    .map(|(label, _, _)| {
                        let row = at_rows.iter().rev().find(|t| plot_key(t.row) == *g && series_name(t, multi, false).0 == *label);
                        match row {
                            None => BarValue::Missing,
                            Some(t) => match (Metric::Tflops.value(t.row), mark(t.row.status)) {
                                (Some(v), _) => BarValue::Value(v),
                                (None, Some(m)) => BarValue::Mark(m),
                                (None, None) => BarValue::Missing,
                            },
                        }
                    })
                    .collect()
            })
            .collect();
        let bars = Bars { groups: groups.iter().map(|g| g.pattern()).collect(), series, values };
        let panel = Panel {
            title: format!("{} at S = {}", pass_title(&pass), fmt_seqlen(at)),
            x_label: "mask pattern".into(),
            y_label: "TFLOPS (10¹² FLOP/s)".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            y_from_zero: true,
            content: Content::Bars(bars),
        };
        let panels = vec![panel];
        figs.push(Figure {
            name: format!("bars-{}-S{}", slug(&pass), fmt_seqlen(at)),
            title: format!("Throughput per mask pattern, {} at S = {}", pass_title(&pass), fmt_seqlen(at)),
            subtitle: format!("{}   —   no bar: X unsupported · E out of memory · W wrong · T timeout · ! error", setup_line(&k, &rs)),
            legend: legend_of(&panels),
            panels,
        });
    }
    figs
}

fn cp_figure(k: &GroupKey, len: super::data::CpLen, seqlen: usize, pass: &str, rs: &[Tagged], multi: bool, colors: &mut Colors) -> Figure {
    let tput = lines_by_series(rs, multi, true, colors, |r| r.world_size as f64, |r| Metric::Tflops.value(r));
    // Scaling efficiency: the row's own column, else TFLOPS/GPU relative to the series' 1-GPU point.
    let eff = lines_by_series(
        rs,
        multi,
        true,
        colors,
        |r| r.world_size as f64,
        |r| {
            if r.status != Status::Ok {
                return None;
            }
            r.scaling_eff.or_else(|| {
                let one = rs.iter().find(|t| t.row.world_size == 1 && t.row.strategy == r.strategy && t.row.status == Status::Ok)?;
                Some(Metric::Tflops.value(r)? / Metric::Tflops.value(one.row)?)
            })
        },
    );
    let panels = vec![
        Panel {
            title: "throughput per GPU".into(),
            x_label: "world size (GPUs, log₂)".into(),
            y_label: "TFLOPS per GPU (10¹² FLOP/s)".into(),
            x_scale: Scale::Log2Count,
            y_scale: Scale::Linear,
            y_from_zero: true,
            content: Content::Lines(tput),
        },
        Panel {
            title: "scaling efficiency".into(),
            x_label: "world size (GPUs, log₂)".into(),
            y_label: "efficiency (1 = linear scaling)".into(),
            x_scale: Scale::Log2Count,
            y_scale: Scale::Linear,
            y_from_zero: true,
            content: Content::Lines(eff),
        },
    ];
    let backends = distinct(rs.iter().map(|t| t.row.backend.clone())).join(", ");
    Figure {
        name: format!("cp-{}-S{}{}-{}", k.slug(), fmt_seqlen(seqlen), if len == super::data::CpLen::PerRank { "-per-gpu" } else { "" }, slug(pass)),
        title: format!("Context parallel: {}, {}, {} (per-rank kernel {backends})", k.pattern(), len.label(seqlen), pass_title(pass)),
        subtitle: setup_line(k, rs),
        legend: legend_of(&panels),
        panels,
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

static FONT: Once = Once::new();

/// Registers the embedded DejaVu Sans as plotters' `sans-serif` (once per process).
pub fn register_font() {
    FONT.call_once(|| {
        // The bytes are a valid TTF shipped in the repository; failure would be a build defect.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, include_bytes!("../../assets/DejaVuSans.ttf")).is_err() {
            panic!("assets/DejaVuSans.ttf is not a valid font");
        }
    });
}

const PANEL_W: u32 = 620;
const PANEL_H: u32 = 460;
const HEADER_H: u32 = 64;
const LEGEND_ROW_H: u32 = 26;

/// Pixel size of a figure.
pub fn figure_size(fig: &Figure) -> (u32, u32) {
    let mut w = PANEL_W * fig.panels.len().max(1) as u32;
    for p in &fig.panels {
        if let Content::Bars(b) = &p.content {
            // Room for every group's bars and its label (≈ 8 px per character at 14 px), so a long
            // `pattern [params]` label is not cut at the right edge.
            let need: usize = b.groups.iter().map(|g| (b.series.len() * 36 + 60).max(g.chars().count() * 8 + 24)).sum();
            w = w.max(1000).max(160 + need as u32);
        }
    }
    (w, HEADER_H + PANEL_H + legend_rows(fig, w) * LEGEND_ROW_H + 16)
}

/// Width of one legend column: the longest label decides (about 8.5 px per character at 15 px).
fn legend_col_w(fig: &Figure) -> u32 {
    let longest = fig.legend.iter().map(|l| l.0.chars().count()).max().unwrap_or(0) as u32;
    (60 + longest * 17 / 2).max(220)
}

fn legend_per_row(fig: &Figure, w: u32) -> usize {
    ((w.saturating_sub(40)) / legend_col_w(fig)).max(1) as usize
}

fn legend_rows(fig: &Figure, w: u32) -> u32 {
    fig.legend.len().div_ceil(legend_per_row(fig, w)) as u32
}

/// The figure as an SVG document.
pub fn render_svg(fig: &Figure) -> Result<String, ReportError> {
    register_font();
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, figure_size(fig)).into_drawing_area();
        draw(&root, fig).map_err(|msg| ReportError::Draw { what: fig.name.clone(), msg })?;
        root.present().map_err(|e| ReportError::Draw { what: fig.name.clone(), msg: e.to_string() })?;
    }
    Ok(s)
}

/// The figure as a PNG file.
pub fn render_png(fig: &Figure, path: &Path) -> Result<(), ReportError> {
    register_font();
    crate::png::draw_to_png(path, figure_size(fig), |root| draw(root, fig)).map_err(|msg| ReportError::Draw { what: path.display().to_string(), msg })
}

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

fn rgb(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

fn de<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
    e.to_string()
}

/// "Nice" tick positions (1, 2, 5 × 10ᵏ) covering [lo, hi].
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / target as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= target as f64 + 0.5).unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

/// Integer (log₂) ticks covering [lo, hi], at most ~9 of them.
fn log2_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.ceil() as i64, hi.floor() as i64);
    let step = (((b - a) as f64) / 8.0).ceil().max(1.0) as i64;
    (a..=b).filter(|e| (e - a) % step == 0).map(|e| e as f64).collect()
}

fn axis_range(scale: Scale, vals: &[f64], from_zero: bool) -> (f64, f64, Vec<f64>) {
    let t: Vec<f64> = vals.iter().map(|&v| scale.fwd(v)).filter(|v| v.is_finite()).collect();
    let (mut lo, mut hi) = t.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    match scale {
        Scale::Linear => {
            if from_zero {
                lo = lo.min(0.0);
            }
            let pad = ((hi - lo) * 0.08).max(1e-9);
            if !from_zero || lo < 0.0 {
                lo -= pad;
            }
            hi += pad;
            (lo, hi, nice_ticks(lo, hi, 6))
        }
        _ => {
            let (l, h) = (lo.floor() - 0.3, hi.ceil() + 0.3);
            let (l, h) = if h - l < 1.5 { (l - 0.5, h + 0.5) } else { (l, h) };
            (l, h, log2_ticks(l, h))
        }
    }
}

fn tick_label(scale: Scale, v: f64) -> String {
    match scale {
        Scale::Linear => trim_zeros(&fmt_sig(v)),
        Scale::Log2Len => fmt_seqlen(2f64.powf(v).round() as usize),
        Scale::Log2Count => format!("{}", 2f64.powf(v).round() as u64),
        Scale::Log2Bytes => {
            let t = fmt_bytes(2f64.powf(v));
            match t.split_once(' ') {
                Some((n, u)) => format!("{} {u}", trim_zeros(n)),
                None => t,
            }
        }
        Scale::Log2 => trim_zeros(&fmt_sig(2f64.powf(v))),
    }
}

/// `50.0` → `50`, `0.250` → `0.25` (tick labels; table cells keep their significant digits).
fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(de)?;
    let (w, h) = root.dim_in_pixel();
    let (header, rest) = root.split_vertically(HEADER_H);
    header.draw_text(&fig.title, &("sans-serif", 22).into_font().color(&BLACK), (16, 10)).map_err(de)?;
    header.draw_text(&fig.subtitle, &("sans-serif", 15).into_font().color(&RGBColor(80, 80, 80)), (16, 38)).map_err(de)?;
    let (main, legend) = rest.split_vertically(PANEL_H);
    let areas = main.split_evenly((1, fig.panels.len().max(1)));
    for (area, p) in areas.iter().zip(&fig.panels) {
        draw_panel(area, p)?;
    }
    // Shared legend: a sample line (dashed for projections/fits, a dot for points) and the label.
    let per_row = legend_per_row(fig, w);
    let col_w = legend_col_w(fig) as i32;
    let _ = h;
    for (i, (label, c, style)) in fig.legend.iter().enumerate() {
        let (x, y) = (24 + (i % per_row) as i32 * col_w, 6 + (i / per_row) as i32 * LEGEND_ROW_H as i32);
        let col = rgb(*c);
        match style {
            LineStyle::Solid => legend.draw(&PathElement::new(vec![(x, y + 8), (x + 34, y + 8)], col.stroke_width(3))).map_err(de)?,
            LineStyle::Dashed | LineStyle::Fit => {
                for k in 0..3 {
                    legend.draw(&PathElement::new(vec![(x + k * 13, y + 8), (x + k * 13 + 8, y + 8)], col.stroke_width(3))).map_err(de)?;
                }
            }
            LineStyle::Points => legend.draw(&Circle::new((x + 17, y + 8), 4, col.filled())).map_err(de)?,
        }
        legend.draw_text(label, &("sans-serif", 15).into_font().color(&BLACK), (x + 44, y)).map_err(de)?;
    }
    Ok(())
}

/// A linear f64 axis whose ticks are exactly the given positions (plotters' own f64 axis picks its
/// ticks itself; log₂ axes need them at integer exponents).
#[derive(Clone)]
struct TickAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            vec![]
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let (xs, ys): (Vec<f64>, Vec<f64>) = match &p.content {
        Content::Lines(ss) => ss.iter().flat_map(|s| s.points.iter().copied()).unzip(),
        Content::Bars(b) => (
            vec![0.0, b.groups.len() as f64],
            b.values.iter().flatten().filter_map(|v| if let BarValue::Value(x) = v { Some(*x) } else { None }).chain([0.0]).collect(),
        ),
    };
    let (x0, x1, xticks) = match &p.content {
        Content::Bars(b) => (0.0, b.groups.len() as f64, (0..b.groups.len()).map(|i| i as f64 + 0.5).collect()),
        Content::Lines(_) => axis_range(p.x_scale, &xs, false),
    };
    let (y0, y1, yticks) = axis_range(p.y_scale, &ys, p.y_from_zero);
    let x_coord = TickAxis { lo: x0, hi: x1, ticks: xticks };
    let y_coord = TickAxis { lo: y0, hi: y1, ticks: yticks };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_coord, y_coord)
        .map_err(de)?;
    let (xs_, ys_) = (p.x_scale, p.y_scale);
    let bar_groups: Vec<String> = if let Content::Bars(b) = &p.content { b.groups.clone() } else { vec![] };
    let x_fmt = move |v: &f64| {
        if bar_groups.is_empty() {
            tick_label(xs_, *v)
        } else {
            bar_groups.get(v.floor() as usize).cloned().unwrap_or_default()
        }
    };
    let y_fmt = move |v: &f64| tick_label(ys_, *v);
    chart
        .configure_mesh()
        .x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(de)?;
    match &p.content {
        Content::Lines(ss) => {
            for s in ss {
                let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (p.x_scale.fwd(x), p.y_scale.fwd(y))).collect();
                let col = rgb(s.color);
                match s.style {
                    LineStyle::Solid => {
                        chart.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2))).map_err(de)?;
                        chart.draw_series(pts.iter().map(|&q| Circle::new(q, 4, col.filled()))).map_err(de)?;
                    }
                    LineStyle::Dashed => {
                        chart.draw_series(DashedLineSeries::new(pts.clone(), 9, 6, col.stroke_width(2))).map_err(de)?;
                        chart.draw_series(pts.iter().map(|&q| Circle::new(q, 4, col.stroke_width(2)))).map_err(de)?;
                    }
                    LineStyle::Points => {
                        chart.draw_series(pts.iter().map(|&q| Circle::new(q, 4, col.filled()))).map_err(de)?;
                    }
                    LineStyle::Fit => {
                        chart.draw_series(DashedLineSeries::new(pts.clone(), 9, 6, col.stroke_width(2))).map_err(de)?;
                    }
                }
            }
        }
        Content::Bars(b) => {
            let n = b.series.len().max(1) as f64;
            let bw = 0.8 / n;
            let mark_y = y0 + (y1 - y0) * 0.03;
            for (gi, vals) in b.values.iter().enumerate() {
                for (si, v) in vals.iter().enumerate() {
                    let xl = gi as f64 + 0.1 + si as f64 * bw;
                    let col = rgb(b.series[si].1);
                    match v {
                        BarValue::Value(y) => {
                            chart.draw_series(std::iter::once(Rectangle::new([(xl, 0.0), (xl + bw * 0.92, *y)], col.filled()))).map_err(de)?;
                        }
                        BarValue::Mark(m) => {
                            let style = ("sans-serif", 17).into_font().color(&col).pos(plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Center,
                                plotters::style::text_anchor::VPos::Bottom,
                            ));
                            chart.draw_series(std::iter::once(Text::new(m.to_string(), (xl + bw * 0.46, mark_y), style))).map_err(de)?;
                        }
                        BarValue::Missing => {}
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;

    fn row(backend: &str, mask: &str, s: usize, status: Status, tflops: f64) -> Row {
        let c = Case::kernel(backend, mask, Default::default(), s, HeadLayout { q: 8, kv: 8 }, 64, DType::Bf16, Pass::Fwd, DeviceKind::Cuda);
        let mut r = Row::for_case("r", &c, "NVIDIA H100");
        r.status = status;
        r.tflops = Some(tflops);
        r.peak_mem_bytes = Some(s as u64 * 1000);
        r
    }

    #[test]
    fn failed_rows_are_marks_not_points() {
        let rows = vec![
            row("a", "full", 1024, Status::Ok, 100.0),
            row("a", "full", 2048, Status::Oom, 99999.0),
            row("b", "full", 1024, Status::Ok, 120.0),
            row("b", "full", 2048, Status::Ok, 150.0),
            row("a", "causal", 2048, Status::Unsupported, 5.0),
            row("b", "causal", 2048, Status::Ok, 80.0),
        ];
        let runs = vec![Run { label: "r".into(), rows }];
        let figs = build_figures(&runs, &PlotOptions::default(), &mut Colors::default());
        let t = figs.iter().find(|f| f.name == "tflops-full").unwrap();
        let Content::Lines(ss) = &t.panels[0].content else { panic!() };
        assert_eq!(ss[0].points, vec![(1024.0, 100.0)]);
        assert_eq!(ss[1].points.len(), 2);
        let bars = figs.iter().find(|f| f.name == "bars-fwd-S2K").unwrap();
        let Content::Bars(b) = &bars.panels[0].content else { panic!() };
        assert_eq!(b.groups, vec!["full", "causal"]);
        assert_eq!(b.values[0], vec![BarValue::Mark("E"), BarValue::Value(150.0)]);
        assert_eq!(b.values[1], vec![BarValue::Mark("X"), BarValue::Value(80.0)]);
        let svg = render_svg(t).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(!svg.contains("99999"));
    }

    #[test]
    fn ticks() {
        assert_eq!(nice_ticks(0.0, 430.0, 6), vec![0.0, 100.0, 200.0, 300.0, 400.0]);
        assert_eq!(log2_ticks(9.7, 15.3), vec![10.0, 11.0, 12.0, 13.0, 14.0, 15.0]);
        assert_eq!(tick_label(Scale::Log2Len, 15.0), "32K");
    }
}
