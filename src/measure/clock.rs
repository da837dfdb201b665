//! Clocks: a [`Clock`] times one synchronous call (criterion's `Measurement` idea, so a CUDA-event clock
//! drops in), and [`run_repeats`] owns warmup, the L2 flush and the repeat policy.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::stats::{spread, summarize, Summary};
use super::{MeasureSettings, TimingMode};
use crate::backend::shim::{device_synchronize, CudaEvent};
use crate::backend::BackendError;

/// Times one call of `f` in milliseconds.
pub trait Clock {
    /// Name for the row's `timing_mode` column.
    fn mode(&self) -> String;
    /// Work done before each repeat, outside the timed region (e.g. the L2 flush).
    fn before_repeat(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    fn time(&mut self, f: &mut dyn FnMut() -> Result<(), BackendError>) -> Result<f64, BackendError>;
}

/// `std::time::Instant` around a synchronous CPU call.
pub struct InstantClock;

impl Clock for InstantClock {
    fn mode(&self) -> String {
        "cpu-instant".into()
    }
    fn time(&mut self, f: &mut dyn FnMut() -> Result<(), BackendError>) -> Result<f64, BackendError> {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

/// CUDA events on the current stream around the call; with `L2flush`, a 256 MiB buffer is zeroed
/// (and synchronised) before each repeat, outside the events.
pub struct CudaEventClock {
    device: usize,
    flush: Option<Tensor>,
    start: CudaEvent,
    end: CudaEvent,
}

/// Size of the L2 flush buffer: larger than any current GPU's L2 (H100/H200: 50 MiB).
pub const L2_FLUSH_BYTES: i64 = 256 << 20;

impl CudaEventClock {
    pub fn new(device: usize, mode: TimingMode) -> Result<Self, BackendError> {
        let flush = match mode {
            TimingMode::L2flush => Some(Tensor::f_empty([L2_FLUSH_BYTES], (Kind::Uint8, Device::Cuda(device)))?),
            TimingMode::Back2back => None,
        };
        Ok(CudaEventClock { device, flush, start: CudaEvent::new()?, end: CudaEvent::new()? })
    }
}

impl Clock for CudaEventClock {
    fn mode(&self) -> String {
        if self.flush.is_some() { "cuda-event-l2flush" } else { "cuda-event-back2back" }.into()
    }
    fn before_repeat(&mut self) -> Result<(), BackendError> {
        if let Some(b) = &mut self.flush {
            let _ = b.f_zero_()?;
            device_synchronize(self.device)?;
        }
        Ok(())
    }
    fn time(&mut self, f: &mut dyn FnMut() -> Result<(), BackendError>) -> Result<f64, BackendError> {
        self.start.record(self.device)?;
        f()?;
        self.end.record(self.device)?;
        self.start.elapsed_ms(&self.end)
    }
}

/// Times of the repeats that ran.
#[derive(Debug, Clone)]
pub struct Timing {
    pub times_ms: Vec<f64>,
    pub summary: Summary,
}

/// Warmup, then repeats: a fixed number, or (adaptive, `target_spread` set) at least `repeats` and
/// until (p80 − p20)/median ≤ target, `max_repeats`, or `budget_s` seconds of wall time.
pub fn run_repeats(clock: &mut dyn Clock, s: &MeasureSettings, f: &mut dyn FnMut() -> Result<(), BackendError>) -> Result<Timing, BackendError> {
    for _ in 0..s.warmup {
        clock.before_repeat()?;
        f()?;
    }
    let started = Instant::now();
    let min = s.repeats.max(1);
    let max = match s.target_spread {
        Some(_) => s.max_repeats.max(min),
        None => min,
    };
    let mut times = Vec::with_capacity(min);
    while times.len() < max {
        clock.before_repeat()?;
        times.push(clock.time(f)?);
        if times.len() >= min {
            if let Some(t) = s.target_spread {
                if spread(&summarize(&times)) <= t || started.elapsed().as_secs_f64() >= s.budget_s {
                    break;
                }
            }
        }
    }
    let summary = summarize(&times);
    Ok(Timing { times_ms: times, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock returning scripted times, to test the repeat policy without timing anything.
    struct Scripted(Vec<f64>, usize);
    impl Clock for Scripted {
        fn mode(&self) -> String {
            "scripted".into()
        }
        fn time(&mut self, f: &mut dyn FnMut() -> Result<(), BackendError>) -> Result<f64, BackendError> {
            f()?;
            self.1 += 1;
            Ok(self.0[(self.1 - 1) % self.0.len()])
        }
    }

    #[test]
    fn fixed_repeats_and_warmup_calls() {
        let s = MeasureSettings { warmup: 3, repeats: 5, ..Default::default() };
        let mut calls = 0;
        let t = run_repeats(&mut Scripted(vec![1.0], 0), &s, &mut || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(t.times_ms.len(), 5);
        assert_eq!(calls, 8);
    }

    #[test]
    fn adaptive_stops_when_spread_is_small_or_at_max() {
        let s = MeasureSettings { warmup: 0, repeats: 3, target_spread: Some(0.05), max_repeats: 50, ..Default::default() };
        let t = run_repeats(&mut Scripted(vec![1.0], 0), &s, &mut || Ok(())).unwrap();
        assert_eq!(t.times_ms.len(), 3);
        let t = run_repeats(&mut Scripted(vec![1.0, 2.0], 0), &s, &mut || Ok(())).unwrap();
        assert_eq!(t.times_ms.len(), 50);
    }

    #[test]
    fn errors_stop_the_measurement() {
        let s = MeasureSettings::default();
        let r = run_repeats(&mut InstantClock, &s, &mut || Err(BackendError::Torch("boom".into())));
        assert!(r.is_err());
    }
}
