//! Peak memory of a call, in bytes above the pre-call baseline. CUDA: the caching allocator's peak
//! (`allocated_bytes` aggregate pool) after a peak reset, minus the bytes allocated before the call.
//! CPU: libtorch keeps no CPU allocator statistics, so the backend counts the bytes of the tensors it
//! allocates for one call from their shapes ([`crate::backend::Kernel::cpu_bytes`]).

use crate::backend::shim::{mem_reset_peak, mem_stats};
use crate::backend::BackendError;

/// Runs `f` once on CUDA device `device` and returns its allocator peak above the baseline.
pub fn cuda_peak_above_baseline(device: usize, f: &mut dyn FnMut() -> Result<(), BackendError>) -> Result<u64, BackendError> {
    crate::backend::shim::device_synchronize(device)?;
    let (base, _) = mem_stats(device)?;
    mem_reset_peak(device)?;
    f()?;
    crate::backend::shim::device_synchronize(device)?;
    let (_, peak) = mem_stats(device)?;
    Ok(peak.saturating_sub(base))
}
