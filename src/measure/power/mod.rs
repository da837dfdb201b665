//! Power, energy, clocks and throttling while the timed repeats run (issue 33).
//!
//! A [`PowerSource`] reads the device once per call ([`PowerSample`]): power (W), a cumulative energy
//! counter (mJ) where the device has one, SM and memory clocks (MHz), temperature (°C) and the
//! throttle-reason bitmask. Three sources:
//! - [`nvml`]: NVIDIA's management library, opened at run time (`dlopen libnvidia-ml.so.1`), so CPU
//!   builds and machines without a driver work unchanged — they get [`Unavailable`];
//! - [`rapl`]: Linux RAPL package energy counters under `/sys/class/powercap` (CPU cases), where
//!   readable;
//! - [`Unavailable`]: nothing to read; the row says `unavailable` and its power columns stay empty —
//!   never a guess in a column that reads as a measurement.
//!
//! A [`Sampler`] reads its source on a background thread every [`SAMPLE_PERIOD`] from the start of
//! the first timed repeat to the end of the last ([`super::repeat::run_repeats_powered`]; warmup is
//! not sampled), plus one reading at each end. [`PowerReading::of`] turns the samples into the row's
//! figures: the energy of the interval from the energy counter where the source has one (difference
//! of the first and last reading), else by trapezoidal integration of power; average power = energy /
//! interval; median SM clock over samples where the GPU was not idle; the limiting throttle reasons
//! seen; and a clock drop (lowest busy SM clock more than [`CLOCK_DROP`] below the highest).

pub mod nvml;
pub mod rapl;
mod source;

pub use source::source_for;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the sampler reads its source while the timed repeats run.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(15);

/// Intervals shorter than this give no energy figure: NVML's counter and power readings update every
/// few to ~100 ms, so a shorter difference is mostly quantisation. The row says why in its note.
pub const MIN_INTERVAL_S: f64 = 0.05;

/// A busy SM clock more than this fraction below the highest busy clock of the same interval counts
/// as a clock drop (the row is flagged as throttled).
pub const CLOCK_DROP: f64 = 0.10;

/// One reading of a device. `None` where the source cannot read that quantity.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PowerSample {
    /// Host time of the reading, ms from an arbitrary origin fixed per source.
    pub t_ms: f64,
    /// Power draw, W.
    pub power_w: Option<f64>,
    /// Cumulative energy counter, mJ (already unwrapped by the source: never decreases).
    pub energy_mj: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
    pub mem_clock_mhz: Option<f64>,
    pub temp_c: Option<f64>,
    /// NVML's clock event (throttle) reasons bitmask; 0 where the source has none.
    pub throttle: u64,
}

/// Something that can read power, energy and clocks of the device a case runs on.
pub trait PowerSource: Send {
    /// The row's `power_source`: `nvml`, `rapl` or `unavailable`.
    fn name(&self) -> &'static str;
    /// One reading now; `None` when nothing could be read (the sample is skipped).
    fn sample(&mut self) -> Option<PowerSample>;
}

/// No power figures on this machine (no driver, no readable RAPL, or a source that failed to open).
pub struct Unavailable;

impl PowerSource for Unavailable {
    fn name(&self) -> &'static str {
        "unavailable"
    }
    fn sample(&mut self) -> Option<PowerSample> {
        None
    }
}

/// NVML clock event reason bits (nvml.h, `nvmlClocksEventReason*` / `nvmlClocksThrottleReason*`;
/// the same values in CUDA 11.x–13.x headers) that limit clocks, with the names the row uses.
/// Left out on purpose: GpuIdle (0x1, nothing to run), ApplicationsClocksSetting (0x2, the configured
/// clocks), SyncBoost (0x10) and DisplayClockSetting (0x100) — settings, not a limit being hit.
pub const LIMITING_REASONS: [(u64, &str); 5] =
    [(0x4, "sw_power_cap"), (0x8, "hw_slowdown"), (0x20, "sw_thermal"), (0x40, "hw_thermal"), (0x80, "hw_power_brake")];
/// NVML's GpuIdle reason: a sample taken while nothing ran (its clock is not the kernel's).
pub const REASON_GPU_IDLE: u64 = 0x1;
/// Mask of [`LIMITING_REASONS`].
pub const LIMITING_MASK: u64 = 0x4 | 0x8 | 0x20 | 0x40 | 0x80;

/// `sw_power_cap+hw_thermal` for a bitmask (limiting reasons only), plus `sm_clock_drop`.
pub fn throttle_text(bits: u64, clock_drop: bool) -> String {
    let mut parts: Vec<&str> = LIMITING_REASONS.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
    if clock_drop {
        parts.push("sm_clock_drop");
    }
    parts.join("+")
}

/// How the interval's energy was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnergyMethod {
    /// Difference of the device's cumulative energy counter (NVML total energy, RAPL energy_uj).
    Counter,
    /// Trapezoidal integration of the power readings over the sample times.
    Integrated,
}

/// The statistics of one sampled interval (one rank).
#[derive(Debug, Clone, PartialEq)]
pub struct PowerReading {
    /// The source's name (`power_source`).
    pub source: &'static str,
    pub samples: usize,
    /// First to last sample, s.
    pub interval_s: f64,
    /// Energy of the interval, J (None: no counter and no power readings, or interval too short).
    pub energy_j: Option<f64>,
    pub method: Option<EnergyMethod>,
    /// Both estimates where both exist (the GPU check compares them).
    pub counter_j: Option<f64>,
    pub integrated_j: Option<f64>,
    /// energy_j / interval_s, W.
    pub avg_power_w: Option<f64>,
    /// Median SM clock over samples where the GPU was not idle, MHz.
    pub sm_clock_mhz: Option<f64>,
    pub mem_clock_mhz: Option<f64>,
    pub max_temp_c: Option<f64>,
    /// Limiting throttle reasons seen in any sample (OR of the bits, [`LIMITING_MASK`] only).
    pub throttle: u64,
    /// The busy SM clock fell more than [`CLOCK_DROP`] below its maximum within the interval.
    pub clock_drop: bool,
    /// Why there is no energy figure, when there is none (for the row's note).
    pub why_empty: String,
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

impl PowerReading {
    /// Statistics of `samples` (in time order) read from a source named `source`.
    pub fn of(source: &'static str, samples: &[PowerSample]) -> PowerReading {
        let interval_s = match (samples.first(), samples.last()) {
            (Some(a), Some(b)) => ((b.t_ms - a.t_ms) / 1e3).max(0.0),
            _ => 0.0,
        };
        let counter_ends = (samples.first().and_then(|s| s.energy_mj), samples.last().and_then(|s| s.energy_mj));
        let counter_j = match counter_ends {
            // A counter that did not advance was not read twice across an update (seen on an H200:
            // 0 J over 50 ms of busy kernels), so it says nothing; the power readings decide then.
            (Some(a), Some(b)) if samples.len() >= 2 && b > a => Some((b - a) / 1e3),
            _ => None,
        };
        let powered: Vec<(f64, f64)> = samples.iter().filter_map(|s| Some((s.t_ms, s.power_w?))).collect();
        let integrated_j = (powered.len() >= 2).then(|| powered.windows(2).map(|w| (w[1].0 - w[0].0) / 1e3 * (w[0].1 + w[1].1) / 2.0).sum::<f64>());
        let (mut energy_j, mut method) = match (counter_j, integrated_j) {
            (Some(c), _) => (Some(c), Some(EnergyMethod::Counter)),
            (None, Some(i)) => (Some(i), Some(EnergyMethod::Integrated)),
            _ => (None, None),
        };
        let mut why_empty = String::new();
        if source == "unavailable" {
            why_empty = "no power source on this machine (no NVML, no readable RAPL)".into();
        } else if samples.len() < 2 {
            why_empty = format!("{source}: fewer than 2 readings");
        } else if energy_j.is_none() {
            why_empty = if matches!(counter_ends, (Some(a), Some(b)) if a == b) {
                format!("{source}: the energy counter did not advance over the timed repeats and there are no power readings")
            } else {
                format!("{source}: no energy counter and no power readings")
            };
        } else if interval_s < MIN_INTERVAL_S {
            // No measured duration in the text: notes stay identical between runs of one suite.
            why_empty = format!("{source}: timed repeats too short for an energy figure (< {} ms)", MIN_INTERVAL_S * 1e3);
            energy_j = None;
            method = None;
        }
        let busy: Vec<&PowerSample> = samples.iter().filter(|s| s.throttle & REASON_GPU_IDLE == 0).collect();
        let mut sm: Vec<f64> = busy.iter().filter_map(|s| s.sm_clock_mhz).collect();
        let mut mem: Vec<f64> = busy.iter().filter_map(|s| s.mem_clock_mhz).collect();
        let clock_drop = match (sm.iter().copied().reduce(f64::min), sm.iter().copied().reduce(f64::max)) {
            (Some(lo), Some(hi)) => lo < (1.0 - CLOCK_DROP) * hi,
            _ => false,
        };
        PowerReading {
            source,
            samples: samples.len(),
            interval_s,
            energy_j,
            method,
            counter_j,
            integrated_j,
            avg_power_w: energy_j.filter(|_| interval_s > 0.0).map(|e| e / interval_s),
            sm_clock_mhz: median(&mut sm),
            mem_clock_mhz: median(&mut mem),
            max_temp_c: samples.iter().filter_map(|s| s.temp_c).reduce(f64::max),
            throttle: samples.iter().fold(0, |acc, s| acc | s.throttle) & LIMITING_MASK,
            clock_drop,
            why_empty,
        }
    }

    /// The row's `throttle` text (empty when nothing limited the clocks).
    pub fn throttle_text(&self) -> String {
        throttle_text(self.throttle, self.clock_drop)
    }
}

/// Reads a [`PowerSource`] on a background thread from [`Sampler::start`] to [`Sampler::finish`]:
/// one reading at once, then one every `period`, and one at the stop.
pub struct Sampler {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<Vec<PowerSample>>>,
    source: &'static str,
}

impl Sampler {
    /// Starts sampling `source` (the first reading is taken before this returns, so the interval
    /// starts no later than the caller's next instruction).
    pub fn start(mut source: Box<dyn PowerSource>, period: Duration) -> Sampler {
        let name = source.name();
        let first = source.sample();
        let (tx, rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("attnbench-power".into())
            .spawn(move || {
                let mut out: Vec<PowerSample> = first.into_iter().collect();
                let mut next = Instant::now() + period;
                loop {
                    match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                        Err(RecvTimeoutError::Timeout) => {
                            out.extend(source.sample());
                            // A fixed period, not a fixed pause: a slow read does not stretch it.
                            next += period;
                            let now = Instant::now();
                            if next < now {
                                next = now + period;
                            }
                        }
                        // Stop asked (or the sampler dropped): one last reading closes the interval.
                        _ => {
                            out.extend(source.sample());
                            return out;
                        }
                    }
                }
            })
            .ok();
        Sampler { stop: Some(tx), handle, source: name }
    }

    /// Stops the thread and returns the statistics of everything it read.
    pub fn finish(mut self) -> PowerReading {
        let samples = self.stop_and_join();
        PowerReading::of(self.source, &samples)
    }

    fn stop_and_join(&mut self) -> Vec<PowerSample> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    /// A measurement that stops with an error still stops its sampler thread.
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A scripted source for tests of the sampler and the statistics (the way `ScriptedTimeline`
    //! tests the clocks): readings come from a script, in order, the last one repeating.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    pub struct ScriptedSource {
        pub script: Vec<PowerSample>,
        pub name: &'static str,
        /// How many readings were taken (shared with the test).
        pub reads: Arc<AtomicUsize>,
    }

    impl ScriptedSource {
        pub fn new(name: &'static str, script: Vec<PowerSample>) -> Self {
            ScriptedSource { script, name, reads: Arc::new(AtomicUsize::new(0)) }
        }
    }

    impl PowerSource for ScriptedSource {
        fn name(&self) -> &'static str {
            self.name
        }
        fn sample(&mut self) -> Option<PowerSample> {
            let i = self.reads.fetch_add(1, Ordering::SeqCst);
            self.script.get(i.min(self.script.len().checked_sub(1)?)).copied()
        }
    }

    /// A busy reading at `t_ms` with `w` watts and SM clock `sm`.
    pub fn at(t_ms: f64, w: f64, sm: f64) -> PowerSample {
        PowerSample { t_ms, power_w: Some(w), sm_clock_mhz: Some(sm), mem_clock_mhz: Some(2619.0), temp_c: Some(40.0), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{at, ScriptedSource};
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_counter_that_did_not_advance_is_not_zero_energy() {
        // 60 ms at 400 W, but the counter reads the same value at both ends (coarser update period).
        let s: Vec<PowerSample> =
            (0..5).map(|i| PowerSample { t_ms: 15.0 * i as f64, power_w: Some(400.0), energy_mj: Some(1_000_000.0), ..Default::default() }).collect();
        let r = PowerReading::of("nvml", &s);
        assert_eq!(r.counter_j, None);
        assert_eq!(r.method, Some(EnergyMethod::Integrated));
        assert!((r.energy_j.unwrap() - 24.0).abs() < 1e-9 && (r.avg_power_w.unwrap() - 400.0).abs() < 1e-9, "{r:?}");
        // No power readings either: no figure at all, and the note says why — never 0 J.
        let bare: Vec<PowerSample> = s.iter().map(|x| PowerSample { power_w: None, ..*x }).collect();
        let r = PowerReading::of("nvml", &bare);
        assert_eq!((r.energy_j, r.avg_power_w), (None, None));
        assert!(!r.why_empty.is_empty());
    }

    #[test]
    fn counter_wins_over_integration_and_average_is_energy_over_interval() {
        // 0.2 s at 300 W then 500 W: the counter says 90 J; trapezoids of the power readings 80 J.
        let mut s = vec![at(0.0, 300.0, 1980.0), at(100.0, 300.0, 1980.0), at(200.0, 500.0, 1980.0)];
        for (i, e) in [0.0, 30_000.0, 90_000.0].iter().enumerate() {
            s[i].energy_mj = Some(*e);
        }
        let r = PowerReading::of("nvml", &s);
        assert_eq!(r.counter_j, Some(90.0));
        assert_eq!(r.integrated_j, Some(30.0 + 40.0));
        assert_eq!((r.energy_j, r.method), (Some(90.0), Some(EnergyMethod::Counter)));
        assert!((r.avg_power_w.unwrap() - 450.0).abs() < 1e-9);
        assert!((r.interval_s - 0.2).abs() < 1e-12);
        // Without the counter: the trapezoids.
        let no_counter: Vec<PowerSample> = s.iter().map(|x| PowerSample { energy_mj: None, ..*x }).collect();
        let r = PowerReading::of("nvml", &no_counter);
        assert_eq!((r.energy_j, r.method), (Some(70.0), Some(EnergyMethod::Integrated)));
        assert!((r.avg_power_w.unwrap() - 350.0).abs() < 1e-9);
    }

    #[test]
    fn clocks_median_over_busy_samples_and_throttle_reasons() {
        let mut s = vec![at(0.0, 400.0, 1980.0), at(20.0, 400.0, 1900.0), at(40.0, 400.0, 1800.0), at(60.0, 100.0, 345.0)];
        s[3].throttle = REASON_GPU_IDLE; // idle: its 345 MHz is not a kernel's clock
        s[1].throttle = 0x4 | 0x2; // power cap (+ application clocks, not a limit)
        let r = PowerReading::of("nvml", &s);
        assert_eq!(r.sm_clock_mhz, Some(1900.0));
        assert!(!r.clock_drop, "1800 is within 10 % of 1980");
        assert_eq!(r.throttle, 0x4);
        assert_eq!(r.throttle_text(), "sw_power_cap");
        s[2].sm_clock_mhz = Some(1500.0);
        s[2].throttle = 0x40;
        let r = PowerReading::of("nvml", &s);
        assert!(r.clock_drop);
        assert_eq!(r.throttle_text(), "sw_power_cap+hw_thermal+sm_clock_drop");
        let quiet = PowerReading::of("nvml", &[at(0.0, 1.0, 1980.0), at(100.0, 1.0, 1980.0)]);
        assert_eq!(quiet.throttle_text(), "");
    }

    #[test]
    fn no_guess_when_nothing_or_too_little_was_read() {
        let r = PowerReading::of("unavailable", &[]);
        assert_eq!((r.energy_j, r.avg_power_w, r.sm_clock_mhz), (None, None, None));
        assert!(r.why_empty.contains("no power source"), "{}", r.why_empty);
        let short = PowerReading::of("nvml", &[at(0.0, 300.0, 1980.0), at(10.0, 300.0, 1980.0)]);
        assert_eq!(short.avg_power_w, None, "10 ms is too short for an energy figure");
        assert!(short.why_empty.contains("too short"), "{}", short.why_empty);
        assert_eq!(short.sm_clock_mhz, Some(1980.0), "clocks are still read");
        // A counter that went backwards (driver reload) is not a negative energy.
        let mut back = vec![at(0.0, 300.0, 1980.0), at(100.0, 300.0, 1980.0)];
        back[0].energy_mj = Some(5_000.0);
        back[1].energy_mj = Some(1_000.0);
        assert_eq!(PowerReading::of("nvml", &back).method, Some(EnergyMethod::Integrated));
    }

    #[test]
    fn sampler_reads_at_both_ends_and_periodically_in_between() {
        // A period far longer than the test: exactly the first and the closing reading.
        let src = ScriptedSource::new("nvml", vec![at(0.0, 100.0, 1980.0), at(500.0, 300.0, 1980.0)]);
        let reads = src.reads.clone();
        let s = Sampler::start(Box::new(src), Duration::from_secs(3600));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "the first reading is taken before start returns");
        let r = s.finish();
        assert_eq!(r.samples, 2);
        assert_eq!(r.integrated_j, Some(100.0));
        // A short period: wait until the thread has read a few times, then stop.
        let script: Vec<PowerSample> = (0..100).map(|i| at(i as f64 * 10.0, 200.0, 1980.0)).collect();
        let src = ScriptedSource::new("nvml", script);
        let reads = src.reads.clone();
        let s = Sampler::start(Box::new(src), Duration::from_millis(1));
        while reads.load(Ordering::SeqCst) < 6 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = s.finish();
        assert!(r.samples >= 7, "{}", r.samples);
        assert_eq!(r.samples, reads.load(Ordering::SeqCst), "every reading is kept");
        assert!((r.avg_power_w.unwrap() - 200.0).abs() < 1e-9);
        // Dropped without finish (a measurement error): the thread still stops.
        let src = ScriptedSource::new("nvml", vec![at(0.0, 1.0, 1.0)]);
        drop(Sampler::start(Box::new(src), Duration::from_millis(1)));
    }

    /// The GPU check's energy step (launch/gpu-check; ≈ 12 s): (1) under a steady load, the energy
    /// the sampler integrates from NVML's power readings matches NVML's own total-energy counter over
    /// the same interval within 5 % — the counter the rows use where the GPU has one, and the
    /// integration they fall back to where it has not; (2) a real kernel case through the harness
    /// fills every power column from NVML.
    #[test]
    #[ignore = "needs a CUDA device and NVML; run by launch/gpu-check"]
    fn cuda_energy_matches_the_nvml_counter() {
        use crate::case::{Case, DType, DeviceKind, HeadLayout};
        use tch::{Device, Kind};
        assert!(crate::sys::cuda_available(), "this test needs a CUDA device");
        let source = nvml::NvmlSource::open(0).expect("NVML opens on a GPU machine");
        let a = crate::sys::rng::randn([8192, 8192], (Kind::BFloat16, Device::Cuda(0))).unwrap();
        let busy = |secs: f64| {
            let t0 = Instant::now();
            while t0.elapsed().as_secs_f64() < secs {
                for _ in 0..8 {
                    let _ = a.matmul(&a);
                }
                crate::sys::cuda::device_synchronize(0).unwrap();
            }
        };
        // Warm up to a steady power draw first: NVML's power reading is a ~1 s average on Hopper.
        busy(2.0);
        let sampler = Sampler::start(Box::new(source), SAMPLE_PERIOD);
        busy(6.0);
        let r = sampler.finish();
        let (counter, integrated) = (r.counter_j.expect("Volta and newer have the energy counter"), r.integrated_j.expect("power readings"));
        let rel = (integrated - counter).abs() / counter;
        println!(
            "energy over {:.2} s ({} samples): counter {counter:.1} J, integrated {integrated:.1} J ({:+.2} %), avg {:.0} W, SM {:?} MHz, throttle `{}`",
            r.interval_s,
            r.samples,
            (integrated / counter - 1.0) * 100.0,
            r.avg_power_w.unwrap(),
            r.sm_clock_mhz,
            r.throttle_text()
        );
        assert!(rel <= 0.05, "integrated {integrated:.1} J vs counter {counter:.1} J: {:.1} % apart", rel * 100.0);
        // A case through the harness: ~300 causal forwards at S = 8K, well over the 50 ms minimum.
        let case = Case::kernel(
            "sdpa-flash",
            "causal",
            Default::default(),
            8192,
            HeadLayout { q: 32, kv: 32 },
            128,
            DType::Bf16,
            crate::flops::Pass::Fwd,
            DeviceKind::Cuda,
        );
        let settings = crate::measure::MeasureSettings { warmup: 5, repeats: 300, check: false, ..Default::default() };
        let row = crate::harness::kernel::execute_kernel_case(&case, &settings, "gpu-check").unwrap();
        println!(
            "case {}: {:?} W, {:?} J/call, {:?} TFLOPS/W, SM {:?} MHz, throttle `{}`",
            row.case_id, row.avg_power_w, row.energy_j, row.tflops_per_watt, row.sm_clock_mhz, row.throttle
        );
        assert_eq!(row.status, crate::results::Status::Ok, "{}", row.error);
        assert_eq!(row.power_source, "nvml");
        let (w, j) = (row.avg_power_w.unwrap(), row.energy_j.unwrap());
        assert!(w > 0.0 && (j - w * row.ms_median.unwrap() / 1e3).abs() <= 1e-9 * j.max(1.0));
        assert!(row.tflops_per_watt.unwrap() > 0.0 && row.sm_clock_mhz.unwrap() > 0.0);
    }

    #[test]
    fn unavailable_source_gives_an_empty_reading() {
        let r = Sampler::start(Box::new(Unavailable), SAMPLE_PERIOD).finish();
        assert_eq!((r.source, r.samples, r.avg_power_w), ("unavailable", 0, None));
    }
}
