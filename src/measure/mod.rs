//! Measuring: clocks (CPU `Instant`, CUDA events with L2 flush), the warmup/repeat policy
//! ([`clock::run_repeats`]), statistics ([`stats`]) and peak memory ([`memory`]).

pub mod clock;
pub mod memory;
pub mod settings;
pub mod stats;

pub use settings::{MeasureSettings, TimingMode};
