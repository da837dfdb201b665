//! The worker process. The runner never runs a kernel in its own process: a segfault, an abort inside
//! a CUDA library or a hang would take the whole night-long sweep down with it. Instead it starts
//! `attnbench worker` once, sends it one case per line (JSON) on stdin and reads one row per line
//! back; on a crash or a timeout it kills the worker, writes an `error`/`timeout` row and starts a
//! fresh one. One process for many cases keeps the per-case overhead at a pipe round trip.

use std::io::{BufRead, Write};

use anyhow::Context;

use crate::harness::WorkItem;
use crate::results::Row;

/// Prefix of the worker's answer lines, so stray output of a library on stdout cannot be mistaken for
/// a row.
pub const ROW_PREFIX: &str = "@@attnbench-row ";

/// Serves requests until stdin closes. Each answer is a [`ROW_PREFIX`] line with the row as JSON.
pub fn serve() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.context("worker: reading a case from stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let item: WorkItem = serde_json::from_str(&line).context("worker: unreadable case on stdin")?;
        let row = execute(&item);
        writeln!(out, "{ROW_PREFIX}{}", serde_json::to_string(&row)?).and_then(|_| out.flush()).context("worker: writing a row to stdout")?;
    }
    Ok(())
}

/// Runs one work item in this process through the one harness entry ([`crate::harness::run`]). Mask
/// or parameter errors cannot reach here (the plan validated them), but if one does it becomes an
/// `error` row rather than a dead worker.
pub fn execute(item: &WorkItem) -> Row {
    #[cfg(feature = "test-hooks")]
    if let Some(row) = super::faults::execute(item) {
        return row;
    }
    crate::harness::run(item)
}
