//! Clocks. A [`Clock`] times one repeat at a time (criterion's `Measurement` idea, so a CUDA-event
//! clock and a rank-aware clock drop in); [`super::repeat`] owns warmup and the repeat policy.
//!
//! Per repeat the harness calls `prepare` (untimed: the L2 flush is enqueued, the device drained, the
//! ranks lined up) → `start` → the timed call → `stop`, and `take_times` whenever it needs the
//! durations of the repeats stopped so far.
//!
//! - [`HostClock`]: host `Instant` around the call, with the device synchronised before the stop is
//!   read (CUDA calls are asynchronous: without it the host would time kernel launches). With
//!   [`Ranks`] it is the CP clock: barrier → start → pass → device sync → stop, and a repeat's time is
//!   the max over ranks.
//! - [`CudaEventClock`]: a pair of CUDA events per repeat on the current stream, read after the fact;
//!   the host never synchronises between the flush and the start event (stream order alone guarantees
//!   the flush finishes first, as triton's `do_bench` relies on), so the GPU does not idle inside the
//!   timed region while the host launches the kernel.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::{MeasureError, TimingMode};
use crate::sys::cuda::{device_synchronize, CudaEvent};

/// Times repeats of one call, in milliseconds.
pub trait Clock {
    /// The row's `timing_mode`: how this clock measures.
    fn mode(&self) -> String;
    /// Untimed work before a repeat's start mark (L2 flush, draining the device, a barrier).
    fn prepare(&mut self) -> Result<(), MeasureError> {
        Ok(())
    }
    fn start(&mut self) -> Result<(), MeasureError>;
    fn stop(&mut self) -> Result<(), MeasureError>;
    /// Milliseconds of every repeat stopped since the last call, in order (waiting for the device
    /// where needed; the max over ranks for a rank-aware clock).
    fn take_times(&mut self) -> Result<Vec<f64>, MeasureError>;
    /// A stopping decision every participant agrees on: a rank-aware clock stops when any rank wants
    /// to (each rank's wall-clock budget runs out at a slightly different moment).
    fn agree(&mut self, stop: bool) -> Result<bool, MeasureError> {
        Ok(stop)
    }
}

/// Host-side time and device synchronisation: what a [`HostClock`] reads. Tests substitute scripted
/// or recording timelines to check what is read when.
pub trait Timeline {
    /// Blocks until the device has finished everything enqueued so far (no-op on the CPU).
    fn sync(&self) -> Result<(), MeasureError>;
    /// Host time in ms from an arbitrary fixed origin.
    fn now_ms(&self) -> f64;
    /// `cpu-instant` or `cuda-sync-instant`: goes into the clock's mode.
    fn name(&self) -> &'static str;
}

/// The CPU: calls are synchronous, `std::time::Instant`.
pub struct CpuTimeline(Instant);

impl Default for CpuTimeline {
    fn default() -> Self {
        CpuTimeline(Instant::now())
    }
}

impl Timeline for CpuTimeline {
    fn sync(&self) -> Result<(), MeasureError> {
        Ok(())
    }
    fn now_ms(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1e3
    }
    fn name(&self) -> &'static str {
        "cpu-instant"
    }
}

/// A CUDA device: `Instant` on the host, `cudaDeviceSynchronize`-style waits on the device.
pub struct CudaSyncTimeline {
    device: usize,
    origin: Instant,
}

impl CudaSyncTimeline {
    pub fn new(device: usize) -> Self {
        CudaSyncTimeline { device, origin: Instant::now() }
    }
}

impl Timeline for CudaSyncTimeline {
    fn sync(&self) -> Result<(), MeasureError> {
        Ok(device_synchronize(self.device)?)
    }
    fn now_ms(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() * 1e3
    }
    fn name(&self) -> &'static str {
        "cuda-sync-instant"
    }
}

/// The timeline of a tch device.
pub fn timeline_for(device: Device) -> Box<dyn Timeline> {
    match device {
        Device::Cuda(i) => Box::new(CudaSyncTimeline::new(i)),
        _ => Box::new(CpuTimeline::default()),
    }
}

/// The ranks of a CP job as a clock needs them (implemented by every communicator).
pub trait Ranks {
    fn barrier(&self) -> Result<(), MeasureError>;
    /// The maximum of `x` over all ranks (every rank gets it).
    fn max(&self, x: f64) -> Result<f64, MeasureError>;
}

/// Host time around a device-synchronised call; with [`Ranks`], the max over ranks after a barrier.
pub struct HostClock<'a> {
    timeline: &'a dyn Timeline,
    ranks: Option<&'a dyn Ranks>,
    /// Zeroed before each repeat (outside the timed region) when set: the L2 flush of `l2flush`.
    flush: Option<Tensor>,
    started_ms: f64,
    pending: Vec<f64>,
}

impl<'a> HostClock<'a> {
    /// One process, one device.
    pub fn new(timeline: &'a dyn Timeline) -> Self {
        HostClock { timeline, ranks: None, flush: None, started_ms: 0.0, pending: Vec::new() }
    }

    /// Every rank of a CP job, each on its own device: barrier → start → pass → device sync → stop;
    /// a repeat's time is the slowest rank's.
    pub fn ranked(timeline: &'a dyn Timeline, ranks: &'a dyn Ranks) -> Self {
        HostClock { timeline, ranks: Some(ranks), flush: None, started_ms: 0.0, pending: Vec::new() }
    }

    /// Zeroes `buf` before each repeat, before the device is drained (so outside the timed region):
    /// the same cold-L2 condition as [`CudaEventClock`] in `l2flush` mode. The mode gets `-l2flush`.
    pub fn with_l2_flush(mut self, buf: Option<Tensor>) -> Self {
        self.flush = buf;
        self
    }
}

/// The L2 flush buffer a CUDA case's clock zeroes before each repeat in `l2flush` mode (`None` on the
/// CPU or in `back2back` mode).
pub fn l2_flush_buffer(device: Device, mode: TimingMode) -> Result<Option<Tensor>, MeasureError> {
    match (device, mode) {
        (Device::Cuda(i), TimingMode::L2flush) => Ok(Some(Tensor::f_empty([L2_FLUSH_BYTES], (Kind::Uint8, Device::Cuda(i)))?)),
        _ => Ok(None),
    }
}

impl Clock for HostClock<'_> {
    fn mode(&self) -> String {
        let flush = if self.flush.is_some() { "-l2flush" } else { "" };
        match self.ranks {
            Some(_) => format!("rank-max-{}{flush}", self.timeline.name()),
            None => format!("{}{flush}", self.timeline.name()),
        }
    }
    fn prepare(&mut self) -> Result<(), MeasureError> {
        if let Some(b) = &mut self.flush {
            let _ = b.f_zero_()?;
        }
        // Work still queued from an earlier call (and the flush) must not run inside this repeat.
        self.timeline.sync()?;
        if let Some(r) = self.ranks {
            r.barrier()?;
        }
        Ok(())
    }
    fn start(&mut self) -> Result<(), MeasureError> {
        self.started_ms = self.timeline.now_ms();
        Ok(())
    }
    fn stop(&mut self) -> Result<(), MeasureError> {
        self.timeline.sync()?;
        self.pending.push(self.timeline.now_ms() - self.started_ms);
        Ok(())
    }
    fn take_times(&mut self) -> Result<Vec<f64>, MeasureError> {
        let local = std::mem::take(&mut self.pending);
        match self.ranks {
            None => Ok(local),
            Some(r) => local.into_iter().map(|t| r.max(t)).collect(),
        }
    }
    fn agree(&mut self, stop: bool) -> Result<bool, MeasureError> {
        match self.ranks {
            None => Ok(stop),
            Some(r) => Ok(r.max(if stop { 1.0 } else { 0.0 })? > 0.0),
        }
    }
}

/// Size of the L2 flush buffer: larger than any current GPU's L2 (H100/H200: 50 MiB).
pub const L2_FLUSH_BYTES: i64 = 256 << 20;

/// CUDA events on the current stream around each repeat, each repeat with its own pair; with
/// `l2flush`, a 256 MiB buffer is zeroed before each repeat (enqueued, outside the events).
pub struct CudaEventClock {
    device: usize,
    flush: Option<Tensor>,
    pending: Vec<(CudaEvent, CudaEvent)>,
    current: Option<CudaEvent>,
    spare: Vec<CudaEvent>,
}

impl CudaEventClock {
    pub fn new(device: usize, mode: TimingMode) -> Result<Self, MeasureError> {
        let flush = match mode {
            TimingMode::L2flush => Some(Tensor::f_empty([L2_FLUSH_BYTES], (Kind::Uint8, Device::Cuda(device)))?),
            TimingMode::Back2back => None,
        };
        Ok(CudaEventClock { device, flush, pending: Vec::new(), current: None, spare: Vec::new() })
    }

    fn event(&mut self) -> Result<CudaEvent, MeasureError> {
        match self.spare.pop() {
            Some(e) => Ok(e),
            None => Ok(CudaEvent::new()?),
        }
    }
}

impl Clock for CudaEventClock {
    fn mode(&self) -> String {
        if self.flush.is_some() { "cuda-event-l2flush" } else { "cuda-event-back2back" }.into()
    }
    fn prepare(&mut self) -> Result<(), MeasureError> {
        if let Some(b) = &mut self.flush {
            // Enqueued only: the start event recorded next runs after it in stream order.
            let _ = b.f_zero_()?;
        }
        Ok(())
    }
    fn start(&mut self) -> Result<(), MeasureError> {
        let ev = self.event()?;
        ev.record(self.device)?;
        self.current = Some(ev);
        Ok(())
    }
    fn stop(&mut self) -> Result<(), MeasureError> {
        let start = self.current.take().ok_or(MeasureError::NoSamples)?;
        let end = self.event()?;
        end.record(self.device)?;
        self.pending.push((start, end));
        Ok(())
    }
    fn take_times(&mut self) -> Result<Vec<f64>, MeasureError> {
        let mut out = Vec::with_capacity(self.pending.len());
        for (start, end) in std::mem::take(&mut self.pending) {
            out.push(start.elapsed_ms(&end)?);
            self.spare.push(start);
            self.spare.push(end);
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fake timelines for tests of the measurement path (no timing thresholds: the times are scripted).
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::thread::ThreadId;

    /// Per thread: `now_ms` returns the next value of `script` (cycling), and every call is logged as
    /// `sync` or `now`, so a test sees the order in which a clock read time and waited for the device.
    pub struct ScriptedTimeline {
        script: Vec<f64>,
        state: Mutex<HashMap<ThreadId, (usize, Vec<&'static str>)>>,
    }

    impl ScriptedTimeline {
        /// `durations` become consecutive (start, stop) pairs: repeat i takes durations[i % len] ms.
        pub fn with_durations(durations: &[f64]) -> Self {
            let mut script = Vec::new();
            let mut t = 0.0;
            for d in durations {
                script.push(t);
                script.push(t + d);
                t += 100.0;
            }
            ScriptedTimeline { script, state: Mutex::new(HashMap::new()) }
        }

        /// The calls made from the current thread, in order.
        pub fn log(&self) -> Vec<&'static str> {
            self.state.lock().unwrap().get(&std::thread::current().id()).map(|s| s.1.clone()).unwrap_or_default()
        }
    }

    impl Timeline for ScriptedTimeline {
        fn sync(&self) -> Result<(), MeasureError> {
            self.state.lock().unwrap().entry(std::thread::current().id()).or_default().1.push("sync");
            Ok(())
        }
        fn now_ms(&self) -> f64 {
            let mut st = self.state.lock().unwrap();
            let e = st.entry(std::thread::current().id()).or_default();
            e.1.push("now");
            let v = self.script[e.0 % self.script.len()];
            e.0 += 1;
            v
        }
        fn name(&self) -> &'static str {
            "scripted"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::ScriptedTimeline;
    use super::*;

    struct TwoRanks(f64);
    impl Ranks for TwoRanks {
        fn barrier(&self) -> Result<(), MeasureError> {
            Ok(())
        }
        fn max(&self, x: f64) -> Result<f64, MeasureError> {
            Ok(x.max(self.0))
        }
    }

    #[test]
    fn host_clock_waits_for_the_device_before_reading_the_stop() {
        let tl = ScriptedTimeline::with_durations(&[1.0, 2.0]);
        let mut c = HostClock::new(&tl);
        for _ in 0..2 {
            c.prepare().unwrap();
            c.start().unwrap();
            c.stop().unwrap();
        }
        assert_eq!(c.take_times().unwrap(), vec![1.0, 2.0]);
        assert_eq!(tl.log(), ["sync", "now", "sync", "now", "sync", "now", "sync", "now"]);
        assert_eq!(c.mode(), "scripted");
    }

    #[test]
    fn host_clock_flushes_before_draining_and_says_so() {
        // CP rows on CUDA in `l2flush` mode flush L2 like kernel rows: the buffer is zeroed before the
        // device is drained, so the flush never runs inside the timed region. A CPU tensor stands in
        // for the 256 MiB CUDA buffer.
        let tl = testing::ScriptedTimeline::with_durations(&[1.0]);
        let buf = Tensor::ones([64], (Kind::Uint8, Device::Cpu));
        let mut c = HostClock::new(&tl).with_l2_flush(Some(buf.shallow_clone()));
        assert_eq!(c.mode(), "scripted-l2flush");
        c.prepare().unwrap();
        assert_eq!(buf.sum(Kind::Int64).int64_value(&[]), 0, "flushed in prepare");
        assert_eq!(tl.log(), ["sync"]);
        assert_eq!(HostClock::new(&tl).mode(), "scripted");
        assert!(l2_flush_buffer(Device::Cpu, TimingMode::L2flush).unwrap().is_none());
    }

    #[test]
    fn ranked_clock_reports_the_slowest_rank_and_agrees() {
        let tl = ScriptedTimeline::with_durations(&[1.0]);
        let slow = TwoRanks(5.0);
        let mut c = HostClock::ranked(&tl, &slow);
        c.prepare().unwrap();
        c.start().unwrap();
        c.stop().unwrap();
        assert_eq!(c.take_times().unwrap(), vec![5.0]);
        assert_eq!(c.mode(), "rank-max-scripted");
        assert!(c.agree(false).unwrap(), "the other rank (max 5.0 > 0) wants to stop");
    }

    /// On the GPU machine (`launch/gpu-check` runs the ignored `cuda_` tests): per-repeat events give
    /// one positive time per repeat after a single read at the end, the flush runs outside them, and
    /// the caching allocator's peak sees a call's allocation.
    #[test]
    #[ignore = "needs a CUDA device; run by launch/gpu-check"]
    fn cuda_event_clock_times_each_repeat_and_the_allocator_sees_the_peak() {
        use crate::measure::{memory::peak_above_baseline, run_repeats, MeasureSettings, MemSource};
        assert!(crate::sys::cuda_available(), "this test needs a CUDA device");
        let a = crate::sys::rng::randn([4096, 4096], (Kind::BFloat16, Device::Cuda(0))).unwrap();
        let mut call = || -> Result<(), MeasureError> {
            let _ = a.f_matmul(&a)?;
            Ok(())
        };
        for mode in [TimingMode::L2flush, TimingMode::Back2back] {
            let mut clock = CudaEventClock::new(0, mode).unwrap();
            let t = run_repeats(&mut clock, &MeasureSettings { warmup: 2, repeats: 7, ..Default::default() }, &mut call).unwrap();
            assert_eq!(t.times_ms.len(), 7);
            assert!(t.times_ms.iter().all(|&ms| ms > 0.0), "{mode:?}: {:?}", t.times_ms);
            assert_eq!(t.mode, format!("cuda-event-{}", mode.name()));
        }
        let (peak, source) = peak_above_baseline::<MeasureError>(Device::Cuda(0), &mut call).unwrap();
        assert_eq!(source, MemSource::CudaAllocator);
        assert!(peak >= 4096 * 4096 * 2, "a 32 MiB product must show in the peak: {peak}");
    }
}
