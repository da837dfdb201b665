//! The figure model: what a figure shows, independent of how it is drawn. A [`Figure`] has a
//! title, a subtitle (device, dtype, heads, D), side-by-side [`Panel`]s of lines or grouped bars, and
//! one shared legend. Builders (`build.rs`, `report::cab`) make figures from rows; the renderer
//! (`render.rs`) draws them; `plots.json` is the serialised model, so the data behind every figure
//! can be read back without parsing SVG.

use serde::Serialize;

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
    /// The axis position of a value: itself (linear) or its log₂.
    pub fn fwd(self, v: f64) -> f64 {
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
