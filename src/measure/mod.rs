//! THE measurement path, used by kernel cases, CP cases, `attnbench comm` and the simulator's measured
//! pieces: clocks ([`clock`]: host `Instant` around a device-synchronised call, optionally rank-aware;
//! CUDA events with an L2 flush), the one repeat policy ([`repeat`]: warmup, fixed or adaptive
//! repeats, back-to-back batches), the one statistics routine ([`stats`]), peak memory from the
//! allocators ([`memory`]), host allocator hygiene for CPU timings ([`allocator`]), and power, energy
//! and clocks sampled while the timed repeats run ([`power`]).
//!
//! A row's `timing_mode` is always [`clock::Clock::mode`] of the clock that ran.

pub mod allocator;
pub mod clock;
pub mod memory;
pub mod power;
pub mod repeat;
pub mod settings;
pub mod stats;

pub use clock::{Clock, CpuTimeline, CudaEventClock, HostClock, Ranks, Timeline};
pub use memory::MemSource;
pub use power::{PowerReading, PowerSource};
pub use repeat::{repeats, run_back_to_back, run_repeats, run_repeats_powered, Clocked, Repeater, Timing};
pub use settings::{MeasureSettings, TimingMode};
pub use stats::Summary;

use crate::sys::SysError;

/// Why a measurement failed. A case that fails to measure becomes an `error` (or `oom`) row.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MeasureError {
    /// A device call (event, synchronisation, allocator statistics) failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A barrier or reduction over ranks failed.
    #[error("ranks: {0}")]
    Ranks(String),
    /// A clock produced a duration that is not a finite, non-negative number of milliseconds.
    #[error("repeat {repeat}: measured {ms} ms, not a finite non-negative duration")]
    BadTime { repeat: usize, ms: f64 },
    /// A timer gave another number of times than repeats ran (an external worker's answer).
    #[error("{asked} repeats ran but {got} times came back")]
    Repeats { asked: usize, got: usize },
    /// Statistics of no samples.
    #[error("no repeat was timed")]
    NoSamples,
}

impl From<tch::TchError> for MeasureError {
    fn from(e: tch::TchError) -> Self {
        MeasureError::Sys(e.into())
    }
}
