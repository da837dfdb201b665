//! Measuring: clocks, repeat policy, statistics, memory. (Clocks and stats being filled in.)

pub mod settings;

pub use settings::{MeasureSettings, TimingMode};
