//! The renderer: draws a [`Figure`] with plotters to SVG or PNG, with the embedded DejaVu Sans
//! font (no system fonts, no fontconfig). Nothing here looks at rows: axis ranges, ticks and
//! labels come from the figure's points and scales alone.

use std::path::Path;
use std::sync::Once;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::data::{fmt_bytes, fmt_seqlen, fmt_sig, ReportError};

use super::figure::{BarValue, Content, Figure, LineStyle, Panel, Scale, PALETTE};

static FONT: Once = Once::new();

/// Registers the embedded DejaVu Sans as plotters' `sans-serif` (once per process).
pub fn register_font() {
    FONT.call_once(|| {
        // The bytes are a valid TTF shipped in the repository; failure would be a build defect.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, include_bytes!("../../../assets/DejaVuSans.ttf")).is_err() {
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

    #[test]
    fn ticks() {
        assert_eq!(nice_ticks(0.0, 430.0, 6), vec![0.0, 100.0, 200.0, 300.0, 400.0]);
        assert_eq!(log2_ticks(9.7, 15.3), vec![10.0, 11.0, 12.0, 13.0, 14.0, 15.0]);
        assert_eq!(tick_label(Scale::Log2Len, 15.0), "32K");
    }
}
