//! Fault injection for testing the runner through the real binary. Only active when the environment
//! variable `ATTNBENCH_FAULTS=1` is set; otherwise these backend names do not exist.
//!
//! - `fault-crash`: the worker process aborts (as a segfaulting kernel would) → `error` row, sweep goes on.
//! - `fault-hang`: the worker sleeps forever → killed at `timeout_s`, `timeout` row.
//! - `fault-wrong`: the `naive` kernel with its output perturbed, run through the real correctness
//!   gate → `wrong` row with `max_abs_err` and no timing.

use super::worker::WorkItem;
use crate::results::Row;

pub const FAULT_BACKENDS: &[&str] = &["fault-crash", "fault-hang", "fault-wrong"];

pub fn enabled() -> bool {
    std::env::var("ATTNBENCH_FAULTS").map(|v| v == "1").unwrap_or(false)
}

pub fn is_fault_backend(name: &str) -> bool {
    enabled() && FAULT_BACKENDS.contains(&name)
}

/// Handles a fault backend's case, or returns `None` for every other backend.
pub fn execute(item: &WorkItem) -> Option<Row> {
    if !is_fault_backend(&item.case.backend) {
        return None;
    }
    match item.case.backend.as_str() {
        "fault-crash" => std::process::abort(),
        "fault-hang" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        "fault-wrong" => Some(wrong(item)),
        _ => None,
    }
}

fn wrong(item: &WorkItem) -> Row {
    let backend = crate::backend::testing::PerturbedBackend::new("naive", 1e-1);
    let mut case = item.case.clone();
    case.backend = "naive".into();
    let mut row = match crate::exec::execute_kernel_case_with(&backend, &case, &item.settings, &item.run_id) {
        Ok(r) => r,
        Err(e) => {
            let mut r = Row::for_case(&item.run_id, &case, "");
            r.fail(crate::results::Status::Error, e.to_string());
            r
        }
    };
    // Keep the identity of the requested case.
    row.backend = item.case.backend.clone();
    row.case_id = item.case.case_id();
    Some(row)
}
