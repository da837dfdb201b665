//! HTML `<table>` elements (used by `attnbench report`): best values highlighted, marks with a
//! tooltip naming the status.

use super::{Cell, Table, TableWriter};

pub struct Html;

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl TableWriter for Html {
    fn write(&self, tables: &[Table]) -> String {
        let mut out = String::new();
        for t in tables {
            out.push_str(&format!(
                "<div class=\"tbl\"><h3>{}</h3><p class=\"sub\">{}</p>\n<table>\n<thead><tr><th>{}</th>",
                html_escape(&t.title),
                html_escape(&t.subtitle),
                html_escape(&t.corner)
            ));
            for c in &t.columns {
                out.push_str(&format!("<th>{}</th>", html_escape(c)));
            }
            out.push_str("</tr></thead>\n<tbody>\n");
            for r in &t.rows {
                out.push_str(&format!("<tr><th>{}</th>", html_escape(&r.label)));
                for c in &r.cells {
                    out.push_str(&match c {
                        Cell::Num { text, best: true, .. } => format!("<td class=\"best\"><strong>{}</strong></td>", html_escape(text)),
                        Cell::Num { text, best: false, .. } => format!("<td>{}</td>", html_escape(text)),
                        Cell::Mark(m) => format!("<td class=\"mark\" title=\"{}\">{}</td>", mark_title(m), html_escape(m)),
                        Cell::Text(s) => format!("<td>{}</td>", html_escape(s)),
                        Cell::Empty => "<td></td>".to_string(),
                    });
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody></table></div>\n");
        }
        out
    }
}

fn mark_title(m: &str) -> &'static str {
    match m {
        "X" => "unsupported",
        "E" => "out of memory",
        "W" => "wrong result",
        "T" => "timeout",
        "!" => "error",
        _ => "no value",
    }
}
