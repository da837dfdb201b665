//! Fault injection for testing the runner through the real binary. Compiled only with the `test-hooks`
//! feature (which only `cargo test` enables) and active only when `ATTNBENCH_FAULTS=1` is set;
//! otherwise these backend names do not exist.
//!
//! - `fault-crash`: the worker process aborts (as a segfaulting kernel would) → `error` row, sweep goes on.
//! - `fault-hang`: the worker sleeps forever → killed at `timeout_s`, `timeout` row.
//! - `fault-wrong`: the `naive` kernel with its output perturbed, run through the real correctness
//!   gate → `wrong` row with `max_abs_err` and no timing.
//! - `fault-oom-torch` / `fault-oom-rust`: allocate (and touch) 64 MiB blocks through libtorch's CPU
//!   allocator / Rust's global allocator until an allocation fails — a case whose memory estimate was
//!   wrong. Under the runner's worker cap that is an `oom` row (libtorch's error, or Rust's abort read
//!   from the dead worker's stderr). They give up with an `error` row after [`OOM_SAFETY_STOP`]
//!   bytes, so an ineffective cap fails a test instead of filling the machine.

use tch::Tensor;

use crate::attn::KernelError;
use crate::backend::naive::NAIVE;
use crate::backend::{Backend, Fwd, Inputs, Kernel};
use crate::case::Case;
use crate::flops::Pass;
use crate::harness::WorkItem;
use crate::mask::HeadMasks;
use crate::results::Row;

pub const FAULT_BACKENDS: &[&str] = &["fault-crash", "fault-hang", "fault-wrong", "fault-oom-torch", "fault-oom-rust"];

/// Where the `fault-oom-*` backends stop if no allocation has failed: 2 GiB.
pub const OOM_SAFETY_STOP: u64 = 2 << 30;
const OOM_BLOCK: usize = 64 << 20;

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
        "fault-oom-torch" => Some(oom_torch(item)),
        "fault-oom-rust" => Some(oom_rust(item)),
        _ => None,
    }
}

fn oom_torch(item: &WorkItem) -> Row {
    let mut row = Row::for_case(&item.run_id, &item.case, "cpu");
    let mut held = Vec::new();
    while ((held.len() * OOM_BLOCK) as u64) < OOM_SAFETY_STOP {
        match Tensor::f_empty([(OOM_BLOCK / 4) as i64], (tch::Kind::Float, tch::Device::Cpu)).and_then(|mut t| t.f_fill_(1.0)) {
            Ok(t) => held.push(t),
            Err(e) => {
                let e = crate::attn::KernelError::from(e);
                let status = if matches!(e, KernelError::Oom(_)) { crate::results::Status::Oom } else { crate::results::Status::Error };
                row.fail(status, format!("{e} (after {} MiB)", (held.len() * OOM_BLOCK) >> 20));
                return row;
            }
        }
    }
    row.fail(crate::results::Status::Error, format!("allocated {} MiB without an allocation failure: the worker is not capped", OOM_SAFETY_STOP >> 20));
    row
}

fn oom_rust(item: &WorkItem) -> Row {
    let mut held: Vec<Vec<u8>> = Vec::new();
    while ((held.len() * OOM_BLOCK) as u64) < OOM_SAFETY_STOP {
        // An allocation failure here aborts the process ("memory allocation of N bytes failed").
        held.push(vec![1u8; OOM_BLOCK]);
    }
    let mut row = Row::for_case(&item.run_id, &item.case, "cpu");
    row.fail(crate::results::Status::Error, format!("allocated {} MiB without an allocation failure: the worker is not capped", OOM_SAFETY_STOP >> 20));
    row
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
    fn prepare(&self, case: &Case, x: &Inputs) -> Result<Box<dyn Kernel>, KernelError> {
        Ok(Box::new(PerturbedKernel(NAIVE.prepare(case, x)?)))
    }
}

impl Kernel for PerturbedKernel {
    fn forward(&mut self, x: &Inputs) -> Result<Fwd, KernelError> {
        let f = self.0.forward(x)?;
        Ok(Fwd { out: f.out.f_add_scalar(0.1)?, lse: f.lse })
    }
    fn backward(&mut self, x: &Inputs, fwd: &Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        self.0.backward(x, fwd)
    }
    fn note(&self) -> String {
        "test only: output + 0.1".into()
    }
    fn cpu_bytes(&self, x: &Inputs, pass: Pass) -> u64 {
        self.0.cpu_bytes(x, pass)
    }
}
