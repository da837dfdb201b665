//! LaTeX tables for a paper: a `table` float per table with booktabs rules, the unit in a spanning
//! header (`median time (ms) by sequence length S`), digits chosen per column so a column's numbers
//! line up, the best value per column in bold, and a caption naming the device, dtype, heads, D and
//! how the times were taken. Tables wider than the text are scaled down to `\linewidth` (graphicx).
//! With `standalone`, a complete document that compiles with `pdflatex` as it is.
//!
//! Only ASCII reaches the output: every other character we write (·, –, ², ≤, …) is mapped to a
//! LaTeX command, so the text compiles without any input-encoding or font setup.

use super::{Cell, Table, TableWriter};
use crate::report::data::{slug, Metric, MARK_LEGEND};

/// Packages the tables need (a document including them must load these).
pub const PREAMBLE_PACKAGES: &str = "\\usepackage{booktabs}\n\\usepackage{graphicx}\n";

#[derive(Debug, Clone, Copy, Default)]
pub struct Latex {
    /// Write a complete document (`\documentclass` … `\end{document}`) instead of table floats.
    pub standalone: bool,
}

/// Escapes LaTeX's special characters in plain text and maps non-ASCII characters to commands.
pub fn latex_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                o.push('\\');
                o.push(c);
            }
            '~' => o.push_str("\\textasciitilde{}"),
            '^' => o.push_str("\\textasciicircum{}"),
            '<' => o.push_str("\\textless{}"),
            '>' => o.push_str("\\textgreater{}"),
            '|' => o.push_str("\\textbar{}"),
            '`' => o.push_str("\\textasciigrave{}"),
            '·' => o.push_str("$\\cdot$"),
            '—' => o.push_str("---"),
            '–' => o.push_str("--"),
            '…' => o.push_str("\\ldots{}"),
            '×' => o.push_str("$\\times$"),
            '±' => o.push_str("$\\pm$"),
            '≈' => o.push_str("$\\approx$"),
            '≤' => o.push_str("$\\leq$"),
            '≥' => o.push_str("$\\geq$"),
            '∝' => o.push_str("$\\propto$"),
            '∞' => o.push_str("$\\infty$"),
            '→' => o.push_str("$\\rightarrow$"),
            '−' => o.push_str("$-$"),
            'µ' | 'μ' => o.push_str("$\\mu$"),
            '²' => o.push_str("$^2$"),
            '³' => o.push_str("$^3$"),
            '¹' => o.push_str("$^1$"),
            '⁰' => o.push_str("$^0$"),
            '₂' => o.push_str("$_2$"),
            c if c.is_ascii() => o.push(c),
            // Anything else we did not foresee: its code point, visibly, rather than a document that
            // stops compiling on "Unicode character not set up for use with LaTeX".
            c => o.push_str(&format!("\\texttt{{U+{:04X}}}", c as u32)),
        }
    }
    o
}

/// The unit a pivot table's numbers are shown in, and the factor from the metric's own unit.
fn unit(metric: Metric, per_gpu: bool, values: &[f64]) -> (String, f64) {
    match metric {
        Metric::Ms => ("median time (ms)".into(), 1.0),
        Metric::Tflops if per_gpu => ("TFLOPS per GPU ($10^{12}$ FLOP/s)".into(), 1.0),
        Metric::Tflops => ("TFLOPS ($10^{12}$ FLOP/s)".into(), 1.0),
        Metric::Mfu => ("MFU (\\%)".into(), 100.0),
        Metric::Energy => ("energy per call (J)".into(), 1.0),
        Metric::TflopsPerWatt => ("TFLOPS per watt".into(), 1.0),
        Metric::Mem => {
            // One binary unit for the whole table, chosen by the median so most cells read 1–1023.
            let mut v: Vec<f64> = values.iter().copied().filter(|x| *x > 0.0).collect();
            v.sort_by(f64::total_cmp);
            let median = v.get(v.len() / 2).copied().unwrap_or(1.0);
            let (name, f) = [("GiB", 1024f64.powi(3)), ("MiB", 1024f64.powi(2)), ("KiB", 1024.0)].into_iter().find(|(_, f)| median >= *f).unwrap_or(("B", 1.0));
            (format!("peak memory ({name})"), 1.0 / f)
        }
    }
}

/// Context-parallel tables (columns = world sizes) show TFLOPS per GPU.
fn per_gpu(t: &Table) -> bool {
    t.column_axis.starts_with("world size")
}

/// Decimal places for one column: three significant figures for its smallest number, at most five
/// for its largest, between 0 and 6.
fn column_decimals(values: &[f64]) -> usize {
    let mags: Vec<f64> = values.iter().map(|v| v.abs()).filter(|v| *v > 0.0 && v.is_finite()).collect();
    if mags.is_empty() {
        return 0;
    }
    let lo = mags.iter().copied().fold(f64::INFINITY, f64::min).log10().floor() as i32;
    let hi = mags.iter().copied().fold(0.0, f64::max).log10().floor() as i32;
    (2 - lo).min(4 - hi).clamp(0, 6) as usize
}

/// The cells of one table as LaTeX, numbers formatted per column.
fn cells(t: &Table) -> Vec<Vec<String>> {
    let all: Vec<f64> = t.rows.iter().flat_map(|r| r.cells.iter()).filter_map(|c| if let Cell::Num { value, .. } = c { Some(*value) } else { None }).collect();
    let factor = t.metric.map(|m| unit(m, per_gpu(t), &all).1).unwrap_or(1.0);
    let decimals: Vec<usize> = (0..t.columns.len())
        .map(|j| {
            let col: Vec<f64> =
                t.rows.iter().filter_map(|r| if let Some(Cell::Num { value, .. }) = r.cells.get(j) { Some(value * factor) } else { None }).collect();
            column_decimals(&col)
        })
        .collect();
    t.rows
        .iter()
        .map(|r| {
            std::iter::once(latex_escape(&r.label))
                .chain(r.cells.iter().enumerate().map(|(j, c)| match c {
                    Cell::Num { value, best, text } => {
                        let mut n = format!("{:.*}", decimals[j], value * factor);
                        // Issue 33: a throttled row's number keeps its mark.
                        if text.ends_with(crate::report::data::THROTTLE_MARK) {
                            n.push_str("$^\\dagger$");
                        }
                        if *best {
                            format!("\\textbf{{{n}}}")
                        } else {
                            n
                        }
                    }
                    Cell::Mark(m) => latex_escape(m),
                    Cell::Text(s) => latex_escape(s),
                    Cell::Empty => String::new(),
                }))
                .collect()
        })
        .collect()
}

/// Longer text than this (characters) wraps in a paragraph column instead of widening the table.
const WRAP: usize = 28;

/// A column header; a long one on two lines (a nested tabular, no package needed) so it does not
/// set the column's width.
fn header_cell(s: &str) -> String {
    if s.chars().count() <= 16 {
        return latex_escape(s);
    }
    let mid = s.len() / 2;
    let split = s.match_indices(' ').map(|(i, _)| i).min_by_key(|i| i.abs_diff(mid));
    match split {
        Some(i) => format!("\\begin{{tabular}}[b]{{@{{}}c@{{}}}}{}\\\\{}\\end{{tabular}}", latex_escape(&s[..i]), latex_escape(&s[i + 1..])),
        None => latex_escape(s),
    }
}

/// `r` for numbers and marks, a wrapping `p{…}` for columns of long text (CAB's notes).
fn column_spec(t: &Table, j: usize) -> &'static str {
    let longest = t.rows.iter().filter_map(|r| if let Some(Cell::Text(s)) = r.cells.get(j) { Some(s.chars().count()) } else { None }).max().unwrap_or(0);
    if longest > WRAP {
        "p{4.2cm}"
    } else {
        "r"
    }
}

fn table_float(t: &Table, out: &mut String) {
    let n = t.columns.len();
    let all: Vec<f64> = t.rows.iter().flat_map(|r| r.cells.iter()).filter_map(|c| if let Cell::Num { value, .. } = c { Some(*value) } else { None }).collect();
    let unit_text = t.metric.map(|m| unit(m, per_gpu(t), &all).0);
    let axis = latex_escape(&t.column_axis);
    let marks = t.has_marks();
    let mut caption = latex_escape(&t.title);
    if let Some(u) = &unit_text {
        caption.push_str(&format!(": {u} by {axis}"));
    }
    caption.push_str(". ");
    caption.push_str(&latex_escape(if t.caption.is_empty() { &t.subtitle } else { &t.caption }));
    if t.metric.is_some() {
        caption.push_str(" Best per column in bold.");
    }
    if marks {
        caption.push_str(&format!(" {}.", latex_escape(&MARK_LEGEND.replace(" · ", ", "))));
    }
    out.push_str("\\begin{table}[htbp]\n\\centering\\small\n");
    out.push_str(&format!("\\caption{{{caption}}}\n\\label{{tab:attnbench-{}}}\n", slug(&t.title)));
    // Scaled down to the line width only when wider than it (a wide pivot); never scaled up.
    out.push_str("\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n");
    let spec: String = (0..n).map(|j| column_spec(t, j)).collect();
    out.push_str(&format!("\\begin{{tabular}}{{l{spec}}}\n\\toprule\n"));
    if let Some(u) = &unit_text {
        out.push_str(&format!(" & \\multicolumn{{{n}}}{{c}}{{{u} by {axis}}} \\\\\n\\cmidrule(l){{2-{}}}\n", n + 1));
    }
    let head: Vec<String> = std::iter::once(&t.corner).chain(&t.columns).map(|c| header_cell(c)).collect();
    out.push_str(&format!("{} \\\\\n\\midrule\n", head.join(" & ")));
    for row in cells(t) {
        out.push_str(&format!("{} \\\\\n", row.join(" & ")));
    }
    out.push_str("\\bottomrule\n\\end{tabular}}% resizebox\n\\end{table}\n\n");
}

impl TableWriter for Latex {
    fn write(&self, tables: &[Table]) -> String {
        let mut out = String::new();
        if self.standalone {
            out.push_str("% attnbench table --format latex --standalone: compile with pdflatex.\n");
            out.push_str("\\documentclass[a4paper]{article}\n\\usepackage[margin=2cm]{geometry}\n");
            out.push_str(PREAMBLE_PACKAGES);
            out.push_str("\\begin{document}\n\n");
        } else {
            out.push_str("% attnbench tables: the preamble needs \\usepackage{booktabs} and \\usepackage{graphicx}.\n");
        }
        for (i, t) in tables.iter().enumerate() {
            // LaTeX holds at most 18 floats waiting for a place; flush them now and then.
            if self.standalone && i > 0 && i % 12 == 0 {
                out.push_str("\\clearpage\n\n");
            }
            table_float(t, &mut out);
        }
        if tables.iter().any(Table::has_marks) {
            out.push_str(&format!("% Marks: {}.\n", MARK_LEGEND.replace(" · ", ", ")));
        }
        if self.standalone {
            out.push_str("\\end{document}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_per_column() {
        assert_eq!(column_decimals(&[412.0, 380.0, 60.1]), 1);
        assert_eq!(column_decimals(&[0.0123, 0.5]), 4);
        assert_eq!(column_decimals(&[123456.0, 98765.0]), 0);
        assert_eq!(column_decimals(&[]), 0);
    }

    #[test]
    fn only_ascii_comes_out() {
        let s = latex_escape("causal_document [docs=a_b;x=50%&#~^{}$\\] · S² ≤ ∝ log₂ 10¹² — ✓");
        assert!(s.is_ascii(), "{s}");
        assert!(s.contains("\\_") && s.contains("\\%") && s.contains("\\&") && s.contains("\\#") && s.contains("\\textbackslash{}"));
        assert!(s.contains("\\texttt{U+2713}"), "{s}");
    }
}
