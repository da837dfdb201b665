//! LaTeX `table` environments with booktabs rules (`\usepackage{booktabs}`).

use super::{Cell, Table, TableWriter};
use crate::report::data::MARK_LEGEND;

pub struct Latex;

/// Escapes LaTeX's special characters in plain text.
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
            '·' => o.push_str("\\textperiodcentered{}"),
            '—' => o.push_str("---"),
            '–' => o.push_str("--"),
            '×' => o.push_str("$\\times$"),
            '²' => o.push_str("$^2$"),
            '≈' => o.push_str("$\\approx$"),
            '∞' => o.push_str("$\\infty$"),
            _ => o.push(c),
        }
    }
    o
}

impl TableWriter for Latex {
    fn write(&self, tables: &[Table]) -> String {
        let mut out = String::from("% Needs \\usepackage{booktabs}.\n");
        for t in tables {
            out.push_str("\\begin{table}[ht]\n\\centering\\small\n");
            out.push_str(&format!("\\caption{{{} ({})}}\n", latex_escape(&t.title), latex_escape(&t.subtitle)));
            out.push_str(&format!("\\begin{{tabular}}{{l{}}}\n\\toprule\n", "r".repeat(t.columns.len())));
            let head: Vec<String> = std::iter::once(&t.corner).chain(&t.columns).map(|c| latex_escape(c)).collect();
            out.push_str(&format!("{} \\\\\n\\midrule\n", head.join(" & ")));
            for r in &t.rows {
                let mut cells = vec![latex_escape(&r.label)];
                for c in &r.cells {
                    cells.push(match c {
                        Cell::Num { text, best: true } => format!("\\textbf{{{}}}", latex_escape(text)),
                        Cell::Num { text, best: false } => latex_escape(text),
                        Cell::Mark(m) => latex_escape(m),
                        Cell::Text(s) => latex_escape(s),
                        Cell::Empty => String::new(),
                    });
                }
                out.push_str(&format!("{} \\\\\n", cells.join(" & ")));
            }
            out.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n\n");
        }
        if tables.iter().any(Table::has_marks) {
            out.push_str(&format!("% Marks: {MARK_LEGEND}.\n"));
        }
        out
    }
}
