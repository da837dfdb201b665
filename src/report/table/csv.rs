//! One CSV block per table (a title line, a header, the rows), a blank line between blocks.

use super::{Cell, Table, TableWriter};

pub struct Csv;

impl TableWriter for Csv {
    fn write(&self, tables: &[Table]) -> String {
        let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
        for (i, t) in tables.iter().enumerate() {
            if i > 0 {
                w.write_record([""]).expect("in-memory write");
            }
            w.write_record([format!("{} — {}", t.title, t.subtitle)]).expect("in-memory write");
            w.write_record(std::iter::once(&t.corner).chain(&t.columns)).expect("in-memory write");
            for r in &t.rows {
                let cells = r.cells.iter().map(|c| match c {
                    Cell::Num { text, .. } => text.clone(),
                    Cell::Mark(m) => m.to_string(),
                    Cell::Text(s) => s.clone(),
                    Cell::Empty => String::new(),
                });
                w.write_record(std::iter::once(r.label.clone()).chain(cells)).expect("in-memory write");
            }
        }
        String::from_utf8(w.into_inner().expect("in-memory write")).expect("csv of UTF-8 strings")
    }
}
