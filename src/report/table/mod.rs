//! Pivot tables: backend × sequence length per (pattern, pass, dtype, heads, D, device) for kernel
//! rows, strategy × world size per (pattern, pass, length, per-rank kernel, …) for context-parallel
//! rows. Cells hold the chosen metric, or a mark (X/E/W/T/!) when the case has no number; the best
//! value per column is bold. One model ([`Table`]), one small writer per format ([`TableWriter`]).
//!
//! Like hyperfine's `export/`: a one-method trait, an enum choosing the format, one small file per
//! format (`markdown.rs`, `latex.rs`, `csv.rs`, `html.rs`). Adding a format is one file and one line
//! in [`TableFormat::writer`].

mod csv;
mod html;
mod latex;
mod markdown;

pub use self::csv::Csv;
pub use self::html::{html_escape, Html};
pub use self::latex::{latex_escape, Latex};
pub use self::markdown::Markdown;

use crate::case::CaseKind;
use crate::results::Row;

use super::data::{cp_series_labels, distinct, fmt_seqlen, group_ordered, mark, pass_rank, GroupKey, Metric, THROTTLE_LEGEND, THROTTLE_MARK};

/// One cell of a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A measured number: `value` in the metric's own unit (ms, TFLOPS, bytes, MFU fraction), `text`
    /// formatted for Markdown/CSV/HTML; `best` = best in its column (bold). The LaTeX writer formats
    /// `value` again with digits chosen per column.
    Num { value: f64, text: String, best: bool },
    /// A case that ran but has no number: X, E, W, T or !.
    Mark(&'static str),
    /// Free text (fit tables).
    Text(String),
    /// No row for this cell.
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub label: String,
    pub cells: Vec<Cell>,
}

/// A titled grid. `corner` names the row axis (`backend`, `strategy`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub title: String,
    pub subtitle: String,
    pub corner: String,
    pub columns: Vec<String>,
    pub rows: Vec<TableRow>,
    /// What the numbers of a pivot table are (units, direction); `None` for text tables (CAB).
    pub metric: Option<Metric>,
    /// What the columns are, with the unit where they have one (`sequence length S`, `world size`).
    pub column_axis: String,
    /// A sentence naming the setup for a publication caption: device, dtype, heads, D, batch and how
    /// the times were taken (the rows' `timing_mode`).
    pub caption: String,
}

impl Table {
    pub(crate) fn has_marks(&self) -> bool {
        self.rows.iter().any(|r| r.cells.iter().any(|c| matches!(c, Cell::Mark(_))))
    }
}

/// Builds the pivot tables of `rows` for `metric`: kernel groups first (in order of first
/// appearance), then context-parallel groups. When two rows fill the same cell the later one wins
/// (a resumed run that re-measured a case).
pub fn pivot(rows: &[Row], metric: Metric) -> Vec<Table> {
    let mut tables = Vec::new();
    let kernel: Vec<&Row> = rows.iter().filter(|r| r.kind == CaseKind::Kernel).collect();
    let mut groups = group_ordered(kernel.iter().copied(), |r| (GroupKey::of(r), r.pass.clone()));
    stable_sort_passes(&mut groups);
    for ((g, pass), rs) in groups {
        let series = distinct(rs.iter().map(|r| r.backend.clone()));
        let mut lens = distinct(rs.iter().map(|r| r.seqlen));
        lens.sort_unstable();
        let grid = build_grid(&rs, &series, &lens, metric, |r| r.backend.clone(), |r| r.seqlen);
        tables.push(Table {
            title: format!("{} · {}", g.pattern(), pass),
            subtitle: format!("{} — {}", g.setup(), metric.caption(CaseKind::Kernel)),
            corner: "backend".into(),
            columns: lens.iter().map(|&s| fmt_seqlen(s)).collect(),
            rows: grid,
            metric: Some(metric),
            column_axis: "sequence length S".into(),
            caption: caption(&g, &rs),
        });
        if let Some(t) = tables.last_mut() {
            flag_throttled(t, &rs, metric);
        }
    }
    let cp: Vec<&Row> = rows.iter().filter(|r| r.kind != CaseKind::Kernel).collect();
    let len = super::data::CpLen::choose(&cp);
    let mut groups = group_ordered(cp.iter().copied(), |r| (GroupKey::of(r), r.pass.clone(), len.key(r), r.backend.clone()));
    groups.sort_by_key(|((g, p, s, _), _)| (g.mask.clone(), pass_rank(p), *s));
    for ((g, pass, seqlen, backend), rs) in groups {
        let apart: Vec<String> = rs.iter().map(|r| (r.kind == CaseKind::Simulated).to_string()).collect();
        let names = cp_series_labels(&rs, &apart);
        let label = |r: &Row| {
            let name = rs.iter().position(|x| std::ptr::eq(*x, r)).map_or_else(|| r.strategy_label(), |i| names[i].clone());
            if r.kind == CaseKind::Simulated {
                format!("{name} (projected)")
            } else {
                name
            }
        };
        let series = distinct(rs.iter().map(|r| label(r)));
        let mut ws = distinct(rs.iter().map(|r| r.world_size));
        ws.sort_unstable();
        let grid = build_grid(&rs, &series, &ws, metric, label, |r| r.world_size);
        tables.push(Table {
            title: format!("{} · {} · context parallel, {} (kernel {})", g.pattern(), pass, len.label(seqlen), backend),
            subtitle: format!("{} — {} by world size", g.setup(), metric.caption(CaseKind::Cp)),
            corner: "strategy".into(),
            columns: ws.iter().map(|w| format!("{w} GPU{}", if *w == 1 { "" } else { "s" })).collect(),
            rows: grid,
            metric: Some(metric),
            column_axis: "world size (GPUs)".into(),
            caption: caption(&g, &rs),
        });
        if let Some(t) = tables.last_mut() {
            flag_throttled(t, &rs, metric);
        }
    }
    tables
}

/// Issue 33: a table with a number from a throttled row says what its mark means.
fn flag_throttled(t: &mut Table, rows: &[&Row], metric: Metric) {
    if rows.iter().any(|r| r.throttled() && metric.value(r).is_some()) {
        t.subtitle.push_str(&format!(" — {THROTTLE_LEGEND}"));
        t.caption.push_str(" Numbers marked with a dagger were measured while the GPU was throttled (power or thermal clock limit, or an SM clock drop; see the throttle column).");
    }
}

/// `NVIDIA H100 80GB HBM3, bf16, 64 query / 8 key-value heads, D = 128; timing: cuda-event-l2flush.`
fn caption(g: &GroupKey, rows: &[&Row]) -> String {
    let batch = if g.batch == 1 { String::new() } else { format!(", batch {}", g.batch) };
    let timing = distinct(rows.iter().map(|r| r.timing_mode.clone()).filter(|t| !t.is_empty()));
    let timing = if timing.is_empty() { "not recorded".to_string() } else { timing.join(", ") };
    format!("{}, {}, {} query / {} key-value heads, D = {}{batch}; timing: {timing}.", g.device, g.dtype, g.heads_q, g.heads_kv, g.head_dim)
}

/// Keeps groups in order of first appearance of their pattern, passes fwd, bwd, fwdbwd within it.
fn stable_sort_passes<T>(groups: &mut [((GroupKey, String), T)]) {
    let order: Vec<GroupKey> = distinct(groups.iter().map(|((g, _), _)| g.clone()));
    groups.sort_by_key(|((g, p), _)| (order.iter().position(|o| o == g).unwrap_or(usize::MAX), pass_rank(p)));
}

fn build_grid(
    rs: &[&Row],
    series: &[String],
    cols: &[usize],
    metric: Metric,
    row_of: impl Fn(&Row) -> String,
    col_of: impl Fn(&Row) -> usize,
) -> Vec<TableRow> {
    // values[i][j]: Some(Ok(v)) number, Some(Err(mark)) mark, None empty.
    let mut cells: Vec<Vec<Option<Result<f64, &'static str>>>> = vec![vec![None; cols.len()]; series.len()];
    let mut throttled = vec![vec![false; cols.len()]; series.len()];
    for r in rs {
        let i = series.iter().position(|s| *s == row_of(r)).expect("series from the same rows");
        let j = cols.iter().position(|c| *c == col_of(r)).expect("columns from the same rows");
        throttled[i][j] = r.throttled();
        cells[i][j] = Some(match (metric.value(r), mark(r.status)) {
            (Some(v), _) => Ok(v),
            (None, Some(m)) => Err(m),
            // ok but the column is empty (e.g. MFU on a CPU): no number and nothing failed.
            (None, None) => Err("–"),
        });
    }
    let best: Vec<Option<f64>> = (0..cols.len())
        .map(|j| {
            let vals: Vec<f64> = cells.iter().filter_map(|row| row[j].and_then(|c| c.ok())).collect();
            if vals.len() < 2 {
                return None;
            }
            let pick = if metric.higher_is_better() { f64::max } else { f64::min };
            vals.into_iter().reduce(pick)
        })
        .collect();
    series
        .iter()
        .zip(cells)
        .zip(throttled)
        .map(|((label, row), flags)| TableRow {
            label: label.clone(),
            cells: row
                .into_iter()
                .enumerate()
                .map(|(j, c)| match c {
                    Some(Ok(v)) => {
                        let mark = if flags[j] { THROTTLE_MARK } else { "" };
                        Cell::Num { value: v, text: format!("{}{mark}", metric.format(v)), best: best[j] == Some(v) }
                    }
                    Some(Err(m)) => Cell::Mark(m),
                    None => Cell::Empty,
                })
                .collect(),
        })
        .collect()
}

/// Renders tables into one text, like hyperfine's exporters: one small writer per format.
pub trait TableWriter {
    fn write(&self, tables: &[Table]) -> String;
}

/// Output formats of `attnbench table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    /// GitHub Markdown (fits a README).
    Md,
    /// LaTeX `table` environments using booktabs rules (`\usepackage{booktabs}`).
    Latex,
    /// One CSV block per table (a title line, a header, the rows), blank line between blocks.
    Csv,
    /// HTML `<table>` elements (used by `attnbench report`).
    Html,
}

impl TableFormat {
    pub fn writer(self) -> Box<dyn TableWriter> {
        match self {
            TableFormat::Md => Box::new(Markdown),
            TableFormat::Latex => Box::new(Latex::default()),
            TableFormat::Csv => Box::new(Csv),
            TableFormat::Html => Box::new(Html),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;
    use crate::results::Status;

    fn row(backend: &str, s: usize, status: Status, tflops: f64) -> Row {
        let c = Case::kernel(backend, "causal", Default::default(), s, HeadLayout { q: 8, kv: 8 }, 64, DType::Bf16, Pass::Fwd, DeviceKind::Cuda);
        let mut r = Row::for_case("r", &c, "NVIDIA H100");
        r.status = status;
        r.tflops = Some(tflops);
        r
    }

    #[test]
    fn pivot_marks_and_best() {
        let rows =
            vec![row("a", 2048, Status::Ok, 100.0), row("a", 1024, Status::Ok, 50.0), row("b", 1024, Status::Ok, 60.0), row("b", 2048, Status::Oom, 9999.0)];
        let t = pivot(&rows, Metric::Tflops);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].columns, vec!["1K", "2K"]);
        assert_eq!(
            t[0].rows[0].cells,
            vec![Cell::Num { value: 50.0, text: "50.0".into(), best: false }, Cell::Num { value: 100.0, text: "100".into(), best: false }]
        );
        assert_eq!(t[0].rows[1].cells, vec![Cell::Num { value: 60.0, text: "60.0".into(), best: true }, Cell::Mark("E")]);
        let md = Markdown.write(&t);
        assert!(md.contains("| b | **60.0** | E |"), "{md}");
        assert!(!md.contains("9999"));
        let tex = Latex::default().write(&t);
        assert!(tex.contains("\\textbf{60.0} & E"), "{tex}");
    }

    /// Issue 33: a number measured while the GPU was throttled carries † in every format, and the
    /// table says what † means; unthrottled tables say nothing about it.
    #[test]
    fn throttled_rows_are_flagged() {
        let mut hot = row("b", 1024, Status::Ok, 60.0);
        hot.throttle = "sw_power_cap".into();
        let rows = vec![row("a", 1024, Status::Ok, 50.0), hot];
        let t = pivot(&rows, Metric::Tflops);
        assert_eq!(t[0].rows[1].cells, vec![Cell::Num { value: 60.0, text: "60.0†".into(), best: true }]);
        assert!(t[0].subtitle.contains("throttled while timed"), "{}", t[0].subtitle);
        assert!(Markdown.write(&t).contains("**60.0†**"));
        assert!(Latex::default().write(&t).contains("$^\\dagger$"), "{}", Latex::default().write(&t));
        let calm = pivot(&rows[..1], Metric::Tflops);
        assert!(!calm[0].subtitle.contains("throttled"));
    }
}
