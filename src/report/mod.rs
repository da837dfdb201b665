//! Reports from result CSVs: pivot tables ([`table`]: the model, one file per format), figures
//! ([`plot`]: figure model, builders, renderer), run comparison ([`compare`]) with its exports for CI
//! dashboards ([`export`]: one file per format), CAB's efficiency analysis ([`cab`]) and a
//! self-contained HTML page ([`html`]). Like hyperfine's `export/`: a one-method trait, an enum
//! choosing the format, one small file per format. [`data`] holds what they share (loading, metrics,
//! marks, grouping). Nothing here measures anything: inputs are rows read with
//! [`data::read_checked`] (impossible numbers refused), and a row whose status is not `ok` never
//! becomes a number.

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
