//! Fault injection for testing the runner through the real binary. Compiled only with the `test-hooks`
//! feature (which only `cargo test` enables) and active only when `ATTNBENCH_FAULTS=1` is set;
//! otherwise these backend names do not exist.
//!
//! - `fault-crash`: the worker process aborts (as a segfaulting kernel would) → `error` row, sweep goes on.
//! - `fault-hang`: the worker sleeps forever → killed at `timeout_s`, `timeout` row.
//! - `fault-wrong`: the `naive` kernel with its output perturbed, run through the real correctness
//!   gate → `wrong` row with `max_abs_err` and no timing.

use tch::Tensor;

use super::worker::WorkItem;
use crate::backend::naive::NAIVE;
use crate::backend::{Backend, BackendError, Fwd, Inputs, Kernel};
use crate::case::Case;
use crate::flops::Pass;
use crate::mask::HeadMasks;
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
    let mut row = match crate::harness::kernel::execute_kernel_case_with(&PERTURBED, &item.case, &item.settings, &item.run_id) {
        Ok(r) => r,
        Err(e) => {
            let mut r = Row::for_case(&item.run_id, &item.case, "");
            r.fail(crate::results::Status::Error, e.to_string());
            r
        }
    };
    row.case_id = item.case.case_id();
    row
}

/// `naive` with 0.1 added to every output element: wrong by construction, otherwise a real kernel.
struct Perturbed;
static PERTURBED: Perturbed = Perturbed;

struct PerturbedKernel(Box<dyn Kernel>);

impl Backend for Perturbed {
    fn name(&self) -> &'static str {
        "fault-wrong"
    }
    fn summary(&self) -> &'static str {
        "test only: naive with a perturbed output"
    }
    fn supports(&self, case: &Case, masks: &HeadMasks) -> Result<(), String> {
        NAIVE.supports(case, masks)
    }
    fn autograd(&self) -> bool {
        NAIVE.autograd()
    }
    fn prepare(&self, case: &Case, x: &Inputs) -> Result<Box<dyn Kernel>, BackendError> {
        Ok(Box::new(PerturbedKernel(NAIVE.prepare(case, x)?)))
    }
}

impl Kernel for PerturbedKernel {
    fn forward(&mut self, x: &Inputs) -> Result<Fwd, BackendError> {
        let f = self.0.forward(x)?;
        Ok(Fwd { out: f.out.f_add_scalar(0.1)?, lse: f.lse })
    }
    fn backward(&mut self, x: &Inputs, fwd: &Fwd) -> Result<(Tensor, Tensor, Tensor), BackendError> {
        self.0.backward(x, fwd)
    }
    fn note(&self) -> String {
        "test only: output + 0.1".into()
    }
    fn cpu_bytes(&self, x: &Inputs, pass: Pass) -> u64 {
        self.0.cpu_bytes(x, pass)
    }
}
