//! GitHub Markdown tables (fit a README): bold best values, marks as letters, a legend line when
//! any table has marks.

use super::{Cell, Table, TableWriter};
use crate::report::data::MARK_LEGEND;

pub struct Markdown;

impl TableWriter for Markdown {
    fn write(&self, tables: &[Table]) -> String {
        let mut out = String::new();
        for t in tables {
            out.push_str(&format!("### {}\n\n{}\n\n", t.title, t.subtitle));
            out.push_str(&format!("| {} |", md_escape(&t.corner)));
            for c in &t.columns {
                out.push_str(&format!(" {} |", md_escape(c)));
            }
            out.push_str("\n|:--|");
            out.push_str(&"--:|".repeat(t.columns.len()));
            out.push('\n');
            for r in &t.rows {
                out.push_str(&format!("| {} |", md_escape(&r.label)));
                for c in &r.cells {
                    let s = match c {
                        Cell::Num { text, best: true, .. } => format!("**{text}**"),
                        Cell::Num { text, best: false, .. } => text.clone(),
                        Cell::Mark(m) => m.to_string(),
                        Cell::Text(s) => md_escape(s),
                        Cell::Empty => String::new(),
                    };
                    out.push_str(&format!(" {s} |"));
                }
                out.push('\n');
            }
            out.push('\n');
        }
        if tables.iter().any(Table::has_marks) {
            out.push_str(&format!("Marks: {MARK_LEGEND}. Best per column in **bold**.\n"));
        }
        out
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}
