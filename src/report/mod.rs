//! Reports from result CSVs: plots, pivot tables, run comparison with exports for CI dashboards,
//! CAB-style efficiency fits and a self-contained HTML page. Like hyperfine's `export/`, each output
//! is one small file with one job; [`data`] holds what they share (loading, metrics, marks,
//! grouping). Nothing here measures anything: inputs are rows read with
//! [`crate::results::read_rows`], and a row whose status is not `ok` never becomes a number.

pub mod cab;
pub mod compare;
pub mod data;
pub mod export;
pub mod html;
pub mod plot;
pub mod table;

pub use data::{load_runs, mark, Metric, ReportError, Run};

/// Maps a report error to the CLI's error: bad input (unreadable CSV, wrong flag) → exit 2.
pub fn cli_error(e: ReportError) -> anyhow::Error {
    if e.is_bad_input() {
        crate::error::BadInput(e.to_string()).into()
    } else {
        e.into()
    }
}
