//! Measuring: clocks (CPU `Instant`, CUDA events with L2 flush), the warmup/repeat policy
//! ([`clock::run_repeats`]), statistics ([`stats`]), peak memory ([`memory`]) and host allocator
//! hygiene for CPU timings ([`allocator`]).

pub mod allocator;
pub mod clock;
pub mod memory;
pub mod settings;
pub mod stats;

pub use settings::{MeasureSettings, TimingMode};
