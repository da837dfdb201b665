//! External kernels (`ext:NAME`): kernels attnbench cannot call through libtorch — FlexAttention,
//! FlashAttention 2/3 varlen, MagiAttention's FFA, FlashMask, a user's own — run in a worker process
//! that speaks the kernel-worker protocol (docs/EXTERNAL-KERNELS.md) over JSON lines.
//!
//! The split of work is what makes an external row comparable with a built-in one: the worker builds
//! the inputs (from the seed, bitwise as attnbench does, or from attnbench's tensor file), runs its
//! kernel, writes its outputs to a tensor file and measures raw per-repeat times by the protocol's
//! rules. The harness owns everything else (`harness::external`, which talks to the worker through
//! this folder: the row, FLOPs, the same correctness gate against the same f64 reference, the one
//! repeat policy and the statistics); this folder knows nothing of the harness. A worker that crashes,
//! hangs, prints garbage or computes the wrong thing gives an `error`/`timeout`/`wrong` row and the
//! sweep goes on.

pub mod adapters;
pub mod config;
pub mod files;
pub mod name;
pub mod process;
pub mod protocol;
pub mod seed;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use config::ExternalConfig;
pub use name::{is_external, PREFIX};

use super::{Backend, Inputs, Kernel};
use crate::attn::KernelError;
use crate::case::Case;
use crate::mask::HeadMasks;

/// Seconds the suite runner waits beyond `measure.timeout_s` for an external case: the worker's own
/// deadline is `timeout_s`, and when it fires only the external worker is killed and restarted (its
/// `attnbench worker` parent, with the other workers it keeps warm, stays), so the runner's hard limit
/// comes a little later.
pub const RUNNER_GRACE_S: f64 = 2.0;

/// An `ext:NAME` backend in the registry's terms. It only names the kernel: cases are executed by the
/// harness (`harness::external`), which talks to the worker.
pub struct External {
    name: &'static str,
}

impl Backend for External {
    fn name(&self) -> &'static str {
        self.name
    }
    fn summary(&self) -> &'static str {
        "external kernel run by its worker process (docs/EXTERNAL-KERNELS.md)"
    }
    fn supports(&self, _case: &Case, _masks: &HeadMasks) -> Result<(), String> {
        // The worker answers `unsupported` itself, at run time: asking it here would start Python for
        // every planned case.
        Ok(())
    }
    fn autograd(&self) -> bool {
        false
    }
    fn prepare(&self, _case: &Case, _x: &Inputs) -> Result<Box<dyn Kernel>, KernelError> {
        Err(KernelError::Unsupported(format!("{} runs in its worker process (harness::external), not in-process", self.name)))
    }
}

static KNOWN: Mutex<Vec<&'static External>> = Mutex::new(Vec::new());

/// The backend for `name` when it is an `ext:NAME` name (one instance per distinct name, kept for the
/// life of the process like the built-in statics).
pub fn find(name: &str) -> Option<&'static dyn Backend> {
    name::adapter_name(name)?;
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(b) = known.iter().find(|b| b.name == name) {
        return Some(*b);
    }
    let b: &'static External = Box::leak(Box::new(External { name: Box::leak(name.to_string().into_boxed_str()) }));
    known.push(b);
    Some(b)
}

/// Environment of every worker: the helper package on `PYTHONPATH`, unbuffered Python output.
pub fn worker_env() -> Result<Vec<(String, String)>, String> {
    Ok(vec![("PYTHONPATH".into(), adapters::pythonpath()?), ("PYTHONUNBUFFERED".into(), "1".into())])
}

static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// A request id unique within this process.
pub fn new_id(case: &Case) -> String {
    format!("{}-{}", case.case_id(), REQUESTS.fetch_add(1, Ordering::Relaxed))
}
