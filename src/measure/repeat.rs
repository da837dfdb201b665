//! The one repeat policy: warmup, then timed repeats — a fixed number, or adaptive (at least
//! `repeats`, until (p80 − p20)/median ≤ `target_spread`, `max_repeats` or `budget_s` of wall time) —
//! and the nccl-tests convention for collectives ([`run_back_to_back`]: iterations back to back, one
//! synchronisation). Generic over the timed call's error type, so kernels, CP passes and collectives
//! all measure through it.

use std::time::Instant;

use super::power::{PowerReading, PowerSource, Sampler, SAMPLE_PERIOD};
use super::stats::Summary;
use super::{Clock, MeasureError, MeasureSettings};

/// The repeats that ran, their statistics and how they were timed.
#[derive(Debug, Clone)]
pub struct Timing {
    pub times_ms: Vec<f64>,
    pub summary: Summary,
    /// The clock's mode (the row's `timing_mode`).
    pub mode: String,
}

/// How repeats are run and timed; [`repeats`]' policy decides how many. In this process a [`Clock`]
/// around a call ([`Clocked`]); for an external kernel its worker process, which runs and times the
/// repeats when their times are taken (`harness::external`), so every timing loop of the house follows
/// one policy.
pub trait Repeater<E> {
    /// `n` untimed warm-up calls, before the first timed repeat.
    fn warmup(&mut self, n: usize) -> Result<(), E>;
    /// One timed repeat (its time may be read only at the next [`Repeater::take_times`]).
    fn repeat(&mut self) -> Result<(), E>;
    /// Milliseconds of every repeat since the last call, in order.
    fn take_times(&mut self) -> Result<Vec<f64>, E>;
    /// A stopping decision every participant agrees on (see [`Clock::agree`]).
    fn agree(&mut self, stop: bool) -> Result<bool, E>;
    /// The row's `timing_mode`.
    fn mode(&self) -> String;
}

/// A [`Clock`] around an in-process call: warm-up = `prepare` then the call (so a warm-up sees what a
/// repeat sees); a repeat = `prepare`, `start`, the call, `stop`.
pub struct Clocked<'a, E> {
    pub clock: &'a mut dyn Clock,
    pub call: &'a mut dyn FnMut() -> Result<(), E>,
}

impl<E: From<MeasureError>> Repeater<E> for Clocked<'_, E> {
    fn warmup(&mut self, n: usize) -> Result<(), E> {
        for _ in 0..n {
            self.clock.prepare()?;
            (self.call)()?;
        }
        Ok(())
    }
    fn repeat(&mut self) -> Result<(), E> {
        self.clock.prepare()?;
        self.clock.start()?;
        (self.call)()?;
        Ok(self.clock.stop()?)
    }
    fn take_times(&mut self) -> Result<Vec<f64>, E> {
        Ok(self.clock.take_times()?)
    }
    fn agree(&mut self, stop: bool) -> Result<bool, E> {
        Ok(self.clock.agree(stop)?)
    }
    fn mode(&self) -> String {
        self.clock.mode()
    }
}

/// Warmup calls (each after the clock's `prepare`, so a warmup sees what a repeat sees), then repeats.
/// Errors of the call stop the measurement; so do impossible times (NaN, ∞, negative).
pub fn run_repeats<E: From<MeasureError>>(clock: &mut dyn Clock, s: &MeasureSettings, f: &mut dyn FnMut() -> Result<(), E>) -> Result<Timing, E> {
    repeats(&mut Clocked { clock, call: f }, s, None).map(|(t, _)| t)
}

/// [`run_repeats`] with `power` read by a [`Sampler`] on a background thread from the first timed
/// repeat to the last repeat's time being read (warmup excluded; issue 33).
pub fn run_repeats_powered<E: From<MeasureError>>(
    clock: &mut dyn Clock,
    s: &MeasureSettings,
    power: Box<dyn PowerSource>,
    f: &mut dyn FnMut() -> Result<(), E>,
) -> Result<(Timing, PowerReading), E> {
    let (t, p) = repeats(&mut Clocked { clock, call: f }, s, Some(power))?;
    // `repeats` always returns a reading when given a source; the fallback only avoids a panic path.
    Ok((t, p.unwrap_or_else(|| PowerReading::of("unavailable", &[]))))
}

/// THE repeat policy, for every timing loop: `warmup` untimed calls, then at least `repeats` timed
/// ones — exactly that many in fixed mode; in adaptive mode (`target_spread`) one more at a time until
/// the spread is at most the target, `max_repeats` or `budget_s` of wall time since the first timed
/// repeat. `power` (when given) is sampled from the first timed repeat to the last time read.
pub fn repeats<E: From<MeasureError>>(
    r: &mut dyn Repeater<E>,
    s: &MeasureSettings,
    power: Option<Box<dyn PowerSource>>,
) -> Result<(Timing, Option<PowerReading>), E> {
    r.warmup(s.warmup)?;
    // Dropped (thread stopped) if a repeat fails.
    let sampler = power.map(|p| Sampler::start(p, SAMPLE_PERIOD));
    let started = Instant::now();
    let min = s.repeats.max(1);
    let max = match s.target_spread {
        Some(_) => s.max_repeats.max(min),
        None => min,
    };
    let mut times = Vec::with_capacity(min);
    let mut n = 0;
    while n < max {
        r.repeat()?;
        n += 1;
        if let (Some(target), true) = (s.target_spread, n >= min && n < max) {
            times.extend(r.take_times()?);
            let done = Summary::of(&times)?.spread() <= target || started.elapsed().as_secs_f64() >= s.budget_s;
            if r.agree(done)? {
                break;
            }
        }
    }
    // After the last time is read: a CUDA-event clock waits here for the device to finish.
    times.extend(r.take_times()?);
    if times.len() != n {
        return Err(MeasureError::Repeats { asked: n, got: times.len() }.into());
    }
    let reading = sampler.map(Sampler::finish);
    let summary = Summary::of(&times)?;
    Ok((Timing { times_ms: times, summary, mode: r.mode() }, reading))
}

/// nccl-tests' convention: `warmup` untimed calls, then `iters` calls back to back inside ONE timed
/// region (one synchronisation at the end). Returns ms per call (the slowest rank's, for a rank-aware
/// clock).
pub fn run_back_to_back<E: From<MeasureError>>(clock: &mut dyn Clock, warmup: usize, iters: usize, f: &mut dyn FnMut() -> Result<(), E>) -> Result<f64, E> {
    for _ in 0..warmup {
        f()?;
    }
    let iters = iters.max(1);
    clock.prepare()?;
    clock.start()?;
    for _ in 0..iters {
        f()?;
    }
    clock.stop()?;
    let total = clock.take_times()?;
    let s = Summary::of(&total)?;
    Ok(s.median / iters as f64)
}

#[cfg(test)]
mod tests {
    use super::super::clock::testing::ScriptedTimeline;
    use super::super::HostClock;
    use super::*;

    #[test]
    fn fixed_repeats_and_warmup_calls() {
        let tl = ScriptedTimeline::with_durations(&[1.0]);
        let s = MeasureSettings { warmup: 3, repeats: 5, ..Default::default() };
        let mut calls = 0;
        let t = run_repeats::<MeasureError>(&mut HostClock::new(&tl), &s, &mut || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(t.times_ms.len(), 5);
        assert_eq!(calls, 8);
        assert_eq!(t.mode, "scripted");
    }

    #[test]
    fn adaptive_stops_when_spread_is_small_or_at_max() {
        let s = MeasureSettings { warmup: 0, repeats: 3, target_spread: Some(0.05), max_repeats: 50, ..Default::default() };
        let steady = ScriptedTimeline::with_durations(&[1.0]);
        let t = run_repeats::<MeasureError>(&mut HostClock::new(&steady), &s, &mut || Ok(())).unwrap();
        assert_eq!(t.times_ms.len(), 3);
        let noisy = ScriptedTimeline::with_durations(&[1.0, 2.0]);
        let t = run_repeats::<MeasureError>(&mut HostClock::new(&noisy), &s, &mut || Ok(())).unwrap();
        assert_eq!(t.times_ms.len(), 50);
    }

    #[test]
    fn errors_and_impossible_times_stop_the_measurement() {
        let tl = ScriptedTimeline::with_durations(&[1.0]);
        let r = run_repeats(&mut HostClock::new(&tl), &MeasureSettings::default(), &mut || Err(MeasureError::Ranks("boom".into())));
        assert!(r.is_err());
        // A clock that goes backwards (stop before start): −1 ms is rejected, not summarised.
        let backwards = ScriptedTimeline::with_durations(&[2.0, -1.0]);
        let r = run_repeats::<MeasureError>(&mut HostClock::new(&backwards), &MeasureSettings { warmup: 0, repeats: 2, ..Default::default() }, &mut || Ok(()));
        assert!(matches!(r, Err(MeasureError::BadTime { repeat: 1, .. })), "{r:?}");
    }

    #[test]
    fn power_is_sampled_around_the_timed_repeats_only() {
        use super::super::power::testing::{at, ScriptedSource};
        use std::sync::atomic::Ordering;
        let tl = ScriptedTimeline::with_durations(&[1.0]);
        let src = ScriptedSource::new("nvml", vec![at(0.0, 100.0, 1980.0), at(1000.0, 300.0, 1980.0)]);
        let reads = src.reads.clone();
        let mut seen_in_warmup = Vec::new();
        let mut calls = 0;
        let (t, p) = run_repeats_powered::<MeasureError>(
            &mut HostClock::new(&tl),
            &MeasureSettings { warmup: 2, repeats: 3, ..Default::default() },
            Box::new(src),
            &mut || {
                calls += 1;
                if calls <= 2 {
                    seen_in_warmup.push(reads.load(Ordering::SeqCst));
                }
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen_in_warmup, [0, 0], "no reading during warmup");
        assert_eq!(t.times_ms.len(), 3);
        assert_eq!(p.source, "nvml");
        assert!(p.samples >= 2, "a reading at each end");
        assert_eq!(p.sm_clock_mhz, Some(1980.0));
        // A failing repeat stops the sampler with the measurement (no thread left reading).
        let src = ScriptedSource::new("nvml", vec![at(0.0, 1.0, 1.0)]);
        let r = run_repeats_powered(&mut HostClock::new(&tl), &MeasureSettings::default(), Box::new(src), &mut || Err(MeasureError::Ranks("boom".into())));
        assert!(r.is_err());
    }

    /// A timer that runs its repeats elsewhere and reports them when asked (an external kernel's
    /// worker): it records the batches it is asked for and answers from a script.
    struct Deferred {
        script: Vec<f64>,
        given: usize,
        pending: usize,
        warmup: usize,
        batches: Vec<usize>,
        short: bool,
    }

    impl Repeater<MeasureError> for Deferred {
        fn warmup(&mut self, n: usize) -> Result<(), MeasureError> {
            self.warmup = n;
            Ok(())
        }
        fn repeat(&mut self) -> Result<(), MeasureError> {
            self.pending += 1;
            Ok(())
        }
        fn take_times(&mut self) -> Result<Vec<f64>, MeasureError> {
            let n = std::mem::take(&mut self.pending) - usize::from(self.short);
            if n > 0 {
                self.batches.push(n);
            }
            let t: Vec<f64> = (self.given..self.given + n).map(|i| self.script[i % self.script.len()]).collect();
            self.given += n;
            Ok(t)
        }
        fn agree(&mut self, stop: bool) -> Result<bool, MeasureError> {
            Ok(stop)
        }
        fn mode(&self) -> String {
            "deferred".into()
        }
    }

    /// The one policy, whoever times the repeats: a deferred timer (the external worker) is asked for
    /// `repeats` first (with the warm-up), then one more at a time in adaptive mode, and stops exactly
    /// where the in-process clock stops on the same times. (Before, the external loop asked for
    /// batches of `repeats`: 6 here instead of 4.)
    #[test]
    fn a_deferred_timer_follows_the_same_policy_as_an_in_process_clock() {
        let script = [1.0, 2.0, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5];
        let s = MeasureSettings { warmup: 2, repeats: 3, target_spread: Some(0.3), max_repeats: 20, budget_s: 60.0, ..Default::default() };
        let tl = ScriptedTimeline::with_durations(&script);
        let here = run_repeats::<MeasureError>(&mut HostClock::new(&tl), &s, &mut || Ok(())).unwrap();
        let mut d = Deferred { script: script.to_vec(), given: 0, pending: 0, warmup: 0, batches: vec![], short: false };
        let (there, _) = repeats(&mut d, &s, None).unwrap();
        assert_eq!(there.times_ms, here.times_ms);
        assert_eq!(there.times_ms.len(), 4, "{:?}", there.times_ms);
        assert_eq!((d.warmup, d.batches), (2, vec![3, 1]));
        assert_eq!(there.mode, "deferred");
        // A timer that returns fewer times than repeats ran is an error, not a shorter sample.
        let mut short = Deferred { script: script.to_vec(), given: 0, pending: 0, warmup: 0, batches: vec![], short: true };
        let r = repeats(&mut short, &MeasureSettings { warmup: 0, repeats: 3, ..Default::default() }, None);
        assert!(matches!(r, Err(MeasureError::Repeats { asked: 3, got: 2 })), "{r:?}");
    }

    #[test]
    fn back_to_back_is_one_timed_region_divided_by_iterations() {
        let tl = ScriptedTimeline::with_durations(&[8.0]);
        let mut calls = 0;
        let ms = run_back_to_back::<MeasureError>(&mut HostClock::new(&tl), 2, 4, &mut || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((ms, calls), (2.0, 6));
        assert_eq!(tl.log(), ["sync", "now", "sync", "now"], "one prepare, one start, one synchronised stop");
    }
}
