//! Peak memory of a call, in bytes above the pre-call baseline, read from an allocator: the CUDA
//! caching allocator's peak (`allocated_bytes`, aggregate pool) on a GPU, the shim's counting CPU
//! allocator ([`crate::sys::cpu_alloc`]) on the CPU. Both count tensor storage the call allocates (the
//! inputs exist before the baseline, so they are excluded). Every row says where its figure came from
//! ([`MemSource`]).

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
