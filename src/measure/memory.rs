//! Peak memory of a call, read from an allocator: the CUDA caching allocator's peak
//! (`allocated_bytes`, aggregate pool) on a GPU, the shim's counting CPU allocator
//! ([`crate::sys::cpu_alloc`]) on the CPU. Every row says where its figure came from ([`MemSource`]).
//!
//! The rule, the same for every backend: **the inputs (q, k, v, dout in the standard layout) are
//! excluded; everything the backend allocates for its call is included** — what its `prepare` keeps
//! (packed copies, K/V repeated to the query heads, dense masks, device offsets) and what the call
//! allocates on top of that. So the baseline is read after the inputs exist and BEFORE `prepare`
//! ([`measure_prepare`]), and the row's figure is [`PrepareMemory::with_call`]: the larger of
//! prepare's own peak and what prepare keeps plus the call's peak above its own baseline. The
//! correctness gate, which runs between the two, is not counted (its allocations are freed before the
//! call's baseline is read).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::Device;

use super::MeasureError;
use crate::sys::{cpu_alloc, cuda};

/// Where a row's `peak_mem_bytes` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemSource {
    /// The CUDA caching allocator's peak statistics.
    CudaAllocator,
    /// The counting CPU allocator the shim installs in front of libtorch's.
    CpuAllocator,
    /// A formula over tensor shapes (nothing was measured).
    Estimate,
    /// PaddlePaddle's CUDA allocator peak (`paddle.device.cuda.max_memory_allocated`), measured by an
    /// external worker whose kernel allocates through Paddle (ext:flashmask), not torch (issue 28).
    PaddleAllocator,
}

impl MemSource {
    pub fn name(self) -> &'static str {
        match self {
            MemSource::CudaAllocator => "cuda-allocator",
            MemSource::CpuAllocator => "cpu-allocator",
            MemSource::Estimate => "estimate",
            MemSource::PaddleAllocator => "paddle-allocator",
        }
    }
}

impl fmt::Display for MemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MemSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [MemSource::CudaAllocator, MemSource::CpuAllocator, MemSource::Estimate, MemSource::PaddleAllocator]
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown memory source `{s}`"))
    }
}

/// Allocator bytes (now, peak since the last reset) on `device`, after the device finished its work.
fn read(device: Device) -> Result<(u64, u64), MeasureError> {
    match device {
        Device::Cuda(i) => {
            cuda::device_synchronize(i)?;
            Ok(cuda::mem_stats(i)?)
        }
        _ => Ok(cpu_alloc::stats()?),
    }
}

fn reset_peak(device: Device) -> Result<(), MeasureError> {
    match device {
        Device::Cuda(i) => Ok(cuda::mem_reset_peak(i)?),
        _ => Ok(cpu_alloc::reset_peak()?),
    }
}

/// What a backend's `prepare` allocated above the inputs: `kept` (still live after it returned) and
/// `peak` (its high-water mark), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrepareMemory {
    pub kept: u64,
    pub peak: u64,
}

impl PrepareMemory {
    /// The row's figure (see the module doc): max(prepare's peak, kept + the call's peak above its
    /// own baseline).
    pub fn with_call(self, call_peak: u64) -> u64 {
        self.peak.max(self.kept + call_peak)
    }
}

/// Runs a backend's `prepare` (`f`) and measures what it allocates above the bytes live before it.
pub fn measure_prepare<T, E: From<MeasureError>>(device: Device, f: impl FnOnce() -> Result<T, E>) -> Result<(T, PrepareMemory), E> {
    let (base, _) = read(device)?;
    reset_peak(device)?;
    let out = f()?;
    let (now, peak) = read(device)?;
    Ok((out, PrepareMemory { kept: now.saturating_sub(base), peak: peak.saturating_sub(base) }))
}

/// Runs `f` once on `device` and returns its allocator peak above the baseline, and the source.
pub fn peak_above_baseline<E: From<MeasureError>>(device: Device, f: &mut dyn FnMut() -> Result<(), E>) -> Result<(u64, MemSource), E> {
    match device {
        Device::Cuda(i) => {
            let read = || -> Result<u64, MeasureError> {
                cuda::device_synchronize(i)?;
                Ok(cuda::mem_stats(i)?.0)
            };
            let base = read()?;
            cuda::mem_reset_peak(i).map_err(MeasureError::from)?;
            f()?;
            cuda::device_synchronize(i).map_err(MeasureError::from)?;
            let (_, peak) = cuda::mem_stats(i).map_err(MeasureError::from)?;
            Ok((peak.saturating_sub(base), MemSource::CudaAllocator))
        }
        _ => {
            cpu_alloc::reset_peak().map_err(MeasureError::from)?;
            let (base, _) = cpu_alloc::stats().map_err(MeasureError::from)?;
            f()?;
            let (_, peak) = cpu_alloc::stats().map_err(MeasureError::from)?;
            Ok((peak.saturating_sub(base), MemSource::CpuAllocator))
        }
    }
}
