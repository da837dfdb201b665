//! The CP case executor, shared by every strategy (the nccl-tests idea: one harness owns inputs,
//! checking, timing and the row; a strategy only computes). Run on every rank with the same spec.
//!
//! 1. Setup on every rank (mask, plan, shard); a failure on *any* rank is agreed on with an
//!    all-reduce, so all ranks exit with the same code and the failing rank names itself.
//! 2. Inputs: every rank draws the same full Q, K, V, dO from the seed and keeps its shard.
//! 3. Check (unless `--no-check`): one forward (+ backward) gathered on rank 0 and compared with the
//!    single-device sliced result: out, LSE, dQ, dK, dV; `max_abs_err` is the largest difference.
//! 4. Memory: the peak of one untimed pass on every rank (allocator statistics; max over ranks). Not
//!    for the local communicator, whose ranks share one process and its allocator counters.
//! 5. Timing through the one measurement path (`measure::run_repeats`) with the rank-aware clock:
//!    barrier → start → pass → device sync → stop, a repeat's time being the slowest rank's. Bytes sent
//!    per rank are counted by the communicator (max over ranks); the single-device time of the same
//!    problem is measured on rank 0 (same path, no ranks) for the scaling efficiency.

use std::ops::Range;

use tch::{Device, Kind, Tensor};

use super::comm::{Comm, CommRanks, ReduceOp};
use super::def::{CpDef, CpPlan};
use super::shard::{imbalance, Shard};
use super::{CpError, Problem};
use crate::attn::sliced::{sliced_backward, sliced_forward};
use crate::case::{DType, DeviceKind};
use crate::flops::{pass_flops, Pass};
use crate::measure::clock::timeline_for;
use crate::measure::memory::peak_above_baseline;
use crate::measure::{run_repeats, HostClock, MeasureError, MeasureSettings, Timeline};
use crate::results::{Row, Status};

/// One CP case on real ranks: what it computes and how it is measured.
#[derive(Debug, Clone)]
pub struct CpSpec {
    pub def: CpDef,
    /// Warmup, repeats (fixed or adaptive), check, seed — the same settings kernel cases use.
    pub settings: MeasureSettings,
    /// Testing hook (feature `test-hooks` only): `(rank, kind)` — `mask` gives that rank an
    /// invalid mask at setup, `error` fails it in the first timed repeat, `kill` makes it die by
    /// SIGKILL there.
    #[cfg(feature = "test-hooks")]
    pub fault: Option<(usize, String)>,
}

impl CpSpec {
    pub fn new(def: CpDef, settings: MeasureSettings) -> CpSpec {
        CpSpec {
            def,
            settings,
            #[cfg(feature = "test-hooks")]
            fault: None,
        }
    }

    /// Whether the testing hook asks `rank` to fail with `kind`.
    fn fault_is(&self, rank: usize, kind: &str) -> bool {
        #[cfg(feature = "test-hooks")]
        {
            matches!(&self.fault, Some((r, k)) if *r == rank && k == kind)
        }
        #[cfg(not(feature = "test-hooks"))]
        {
            let _ = (rank, kind);
            false
        }
    }
}

/// Why a case did not produce a row: the code every rank exits with and the message (set on ranks
/// that have something to say; rank 0 prints agreed bad input, a failing rank prints its own error).
#[derive(Debug)]
pub struct CaseFailure {
    pub code: u8,
    pub message: Option<String>,
}

/// Tolerance of the check, relative to max(1, max |reference|).
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::Fp64 => 1e-9,
        DType::Fp32 => 2e-4,
        DType::Fp16 | DType::Bf16 => 3e-2,
    }
}

/// The testing hook's mid-run faults (first timed repeat): `error` fails this rank, `kill` kills it.
#[cfg(feature = "test-hooks")]
fn inject_timed_fault(spec: &CpSpec, rank: usize) -> Result<(), CpError> {
    if spec.fault_is(rank, "error") {
        return Err(CpError::Config(format!("injected failure on rank {rank} (--fault)")));
    }
    if spec.fault_is(rank, "kill") {
        // SAFETY: raising a signal on ourselves; the testing hook wants an abrupt death.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
    Ok(())
}

#[cfg(not(feature = "test-hooks"))]
fn inject_timed_fault(_spec: &CpSpec, _rank: usize) -> Result<(), CpError> {
    Ok(())
}

/// Resolves the case on this rank (see [`CpDef::plan`]); the `mask` fault gives this rank alone an
/// invalid (empty) mask. Errors: exit code 2 (bad input) and the message.
fn setup(spec: &CpSpec, world: usize, rank: usize) -> Result<CpPlan, (u8, String)> {
    if spec.fault_is(rank, "mask") {
        return CpDef { seqlen: 0, ..spec.def.clone() }.plan(world).map_err(|m| (2, m));
    }
    spec.def.plan(world).map_err(|m| (2, m))
}

/// Rows `ranges` of dim 2 of `x`, concatenated.
pub fn take_ranges(x: &Tensor, ranges: &[Range<usize>]) -> Tensor {
    let parts: Vec<Tensor> = ranges.iter().map(|r| x.narrow(2, r.start as i64, r.len() as i64)).collect();
    Tensor::cat(&parts, 2).contiguous()
}

/// Writes local `part` (ranges concatenated along dim 2) into the global tensor `into`.
fn put_ranges(into: &Tensor, part: &Tensor, ranges: &[Range<usize>]) {
    let mut off = 0;
    for r in ranges {
        into.narrow(2, r.start as i64, r.len() as i64).copy_(&part.narrow(2, off, r.len() as i64));
        off += r.len() as i64;
    }
}

/// Gathers `local` of every rank on rank 0 into a global tensor shaped like `global_like`.
fn gather_global(comm: &dyn Comm, shard: &Shard, local: &Tensor, global_like: &Tensor) -> Result<Option<Tensor>, CpError> {
    if comm.rank() != 0 {
        comm.send(&local.contiguous(), 0)?;
        return Ok(None);
    }
    let g = global_like.zeros_like().to_kind(local.kind());
    put_ranges(&g, local, shard.ranges(0));
    for r in 1..comm.size() {
        let mut s = local.size();
        s[2] = shard.len(r) as i64;
        let got = comm.recv(&Tensor::empty(s.as_slice(), (local.kind(), local.device())), r)?;
        put_ranges(&g, &got, shard.ranges(r));
    }
    Ok(Some(g))
}

fn max_abs(a: &Tensor, b: &Tensor) -> (f64, f64) {
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    // −inf LSE on empty rows: equal infinities count as no difference.
    let both_inf = a.isinf().logical_and(&b.isinf()).logical_and(&a.eq_tensor(&b));
    let d = (&a - &b).abs().masked_fill(&both_inf, 0.0);
    let r = b.abs().masked_fill(&b.isinf(), 0.0);
    (d.max().double_value(&[]), r.max().double_value(&[]))
}

/// Runs one CP case on this rank. Rank 0 gets `Ok(Some(row))`, other ranks `Ok(None)`.
/// Setup failures come back as `Err` on every rank (agreed); a failure after setup is returned to
/// the caller of this rank only — the caller must abort the job (the other ranks are mid-collective).
pub fn run_case(comm: &dyn Comm, spec: &CpSpec, run_id: &str, device_name: &str) -> Result<Option<Row>, Result<CaseFailure, CpError>> {
    let timeline = timeline_for(device_of(spec.def.device));
    run_case_on(comm, spec, run_id, device_name, timeline.as_ref())
}

/// The tch device of this rank for a case on `kind`.
fn device_of(kind: DeviceKind) -> Device {
    match kind {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Cuda => Device::Cuda(local_device_index()),
    }
}

/// [`run_case`] reading host time and device synchronisation from `timeline` (tests pass recording or
/// scripted ones).
pub(crate) fn run_case_on(
    comm: &dyn Comm,
    spec: &CpSpec,
    run_id: &str,
    device_name: &str,
    timeline: &dyn Timeline,
) -> Result<Option<Row>, Result<CaseFailure, CpError>> {
    let (world, rank) = (comm.size(), comm.rank());
    let local = setup(spec, world, rank);
    let code = match &local {
        Ok(_) => 0.0,
        Err((c, _)) => *c as f64,
    };
    let agreed = comm.all_reduce_f64(code, ReduceOp::Max).map_err(|e| Err(e.into()))?;
    if agreed > 0.0 {
        // Bad input seen by rank 0 (usually by everyone): rank 0 alone prints it. Otherwise the
        // failing ranks print theirs, prefixed with their rank.
        let r0_failed = comm.all_reduce_f64(if rank == 0 && local.is_err() { 1.0 } else { 0.0 }, ReduceOp::Max).map_err(|e| Err(e.into()))? > 0.0;
        let message = match local {
            Err((_, m)) if rank == 0 => Some(m),
            Err((_, m)) if !r0_failed => Some(format!("rank {rank}: {m}")),
            _ => None,
        };
        return Err(Ok(CaseFailure { code: agreed as u8, message }));
    }
    let s = local.expect("agreed ok");
    run_after_setup(comm, spec, &s, run_id, device_name, timeline).map_err(Err)
}

fn run_after_setup(comm: &dyn Comm, spec: &CpSpec, s: &CpPlan, run_id: &str, device_name: &str, timeline: &dyn Timeline) -> Result<Option<Row>, CpError> {
    let (world, rank) = (comm.size(), comm.rank());
    let settings = &spec.settings;
    let dev = device_of(spec.def.device);
    let (b, hq, hkv, n, d) = (spec.def.batch as i64, spec.def.heads.q as i64, spec.def.heads.kv as i64, spec.def.seqlen as i64, spec.def.head_dim as i64);
    let kind = spec.def.dtype.kind();
    // The global torch RNG is shared by the ranks of a local (threaded) world: draw under a lock.
    let (q, k, v, dout) = {
        let _g = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(settings.seed as i64);
        let opts = (kind, Device::Cpu);
        (
            Tensor::randn([b, hq, n, d], opts).to_device(dev),
            Tensor::randn([b, hkv, n, d], opts).to_device(dev),
            Tensor::randn([b, hkv, n, d], opts).to_device(dev),
            Tensor::randn([b, hq, n, d], opts).to_device(dev),
        )
    };
    let mine = s.shard.ranges(rank);
    let (ql, kl, vl, dol) = (take_ranges(&q, mine), take_ranges(&k, mine), take_ranges(&v, mine), take_ranges(&dout, mine));
    let scale = 1.0 / (spec.def.head_dim as f64).sqrt();
    let p = Problem { mask: &s.mask, shard: &s.shard, scale, layout: s.layout };
    let eng = &s.engine;

    let case = spec.def.case(world);
    let mut row = Row::for_case(run_id, &case, device_name);
    row.mask_area = s.mask.area() as f64;
    row.density = s.mask.density();
    row.flops = pass_flops(s.mask.area() as u128 * spec.def.heads.q as u128, spec.def.head_dim, spec.def.batch, spec.def.pass);
    row.imbalance = Some(imbalance(&s.schedule.work()));
    row.note = format!("{}; sharding={}", eng.note(&s.layout), s.shard.kind);

    // Forward once: the check uses it, and backward needs the final out/lse of the rows.
    let (out, lse) = eng.forward(comm, &p, &ql, &kl, &vl)?;
    let mut err: Option<f64> = None;
    if settings.check {
        let mut worst = 0.0f64;
        let (ro, rl) = sliced_forward(&q, &k, &v, &s.mask, scale)
            .map(Some)
            .or_else(|e| if rank == 0 { Err(e) } else { Ok(None) })?
            .unwrap_or_else(|| (q.zeros_like(), q.zeros_like()));
        let mut pairs: Vec<(Option<Tensor>, Tensor)> =
            vec![(gather_global(comm, &s.shard, &out, &q)?, ro.shallow_clone()), (gather_global(comm, &s.shard, &lse, &rl)?, rl.shallow_clone())];
        if spec.def.pass.includes_backward() {
            let (dq, dk, dv) = eng.backward(comm, &p, &ql, &kl, &vl, &out, &lse, &dol)?;
            let refs = if rank == 0 { Some(sliced_backward(&q, &k, &v, &ro, &rl, &dout, &s.mask, scale)?) } else { None };
            let (rdq, rdk, rdv) = refs.unwrap_or_else(|| (q.zeros_like(), k.zeros_like(), v.zeros_like()));
            pairs.push((gather_global(comm, &s.shard, &dq, &q)?, rdq));
            pairs.push((gather_global(comm, &s.shard, &dk, &k)?, rdk));
            pairs.push((gather_global(comm, &s.shard, &dv, &v)?, rdv));
        }
        let mut scale_ref = 1.0f64;
        for (got, want) in &pairs {
            if let Some(g) = got {
                let (e, r) = max_abs(g, want);
                worst = worst.max(e);
                scale_ref = scale_ref.max(r);
            }
        }
        let worst = comm.all_reduce_f64(if rank == 0 { worst } else { 0.0 }, ReduceOp::Max)?;
        let scale_ref = comm.all_reduce_f64(if rank == 0 { scale_ref } else { 0.0 }, ReduceOp::Max)?;
        err = Some(worst);
        row.max_abs_err = err;
        if worst.is_nan() || worst > tolerance(spec.def.dtype) * scale_ref {
            row.fail(Status::Wrong, format!("max |cp − single device| = {worst:.3e} > tolerance {:.1e}", tolerance(spec.def.dtype) * scale_ref));
            return Ok((rank == 0).then_some(row));
        }
    }

    // One pass as timed: forward, backward (given out/lse), or both.
    let run_pass = |comm: &dyn Comm| -> Result<(), CpError> {
        match spec.def.pass {
            Pass::Fwd => {
                let _ = eng.forward(comm, &p, &ql, &kl, &vl)?;
            }
            Pass::Bwd => {
                let _ = eng.backward(comm, &p, &ql, &kl, &vl, &out, &lse, &dol)?;
            }
            Pass::Fwdbwd => {
                let (o, l) = eng.forward(comm, &p, &ql, &kl, &vl)?;
                let _ = eng.backward(comm, &p, &ql, &kl, &vl, &o, &l, &dol)?;
            }
        }
        Ok(())
    };
    // Peak memory of one untimed pass on every rank (max over ranks); skipped when the ranks are
    // threads sharing one process's allocator counters.
    let peak = if comm.backend_name() == "local" {
        None
    } else {
        let (bytes, source) = peak_above_baseline::<CpError>(dev, &mut || run_pass(comm))?;
        Some((comm.all_reduce_f64(bytes as f64, ReduceOp::Max)? as u64, source))
    };

    let ranks = CommRanks(comm);
    let mut clock = HostClock::ranked(timeline, &ranks);
    let (mut calls, mut bytes) = (0usize, 0u64);
    let mut timed_pass = || -> Result<(), CpError> {
        calls += 1;
        comm.reset_bytes_sent();
        run_pass(comm)?;
        bytes = comm.bytes_sent();
        if calls == settings.warmup + 1 {
            inject_timed_fault(spec, rank)?;
        }
        Ok(())
    };
    let timing = match run_repeats(&mut clock, settings, &mut timed_pass) {
        Ok(t) => t,
        // Every rank sees the same (max-reduced) times, so every rank rejects them alike: a row, not an
        // aborted job.
        Err(CpError::Measure(e @ (MeasureError::BadTime { .. } | MeasureError::NoSamples))) => {
            row.fail(Status::Error, e.to_string());
            return Ok((rank == 0).then_some(row));
        }
        Err(e) => return Err(e),
    };
    let max_bytes = comm.all_reduce_f64(bytes as f64, ReduceOp::Max)? as u64;
    let planned = s.schedule.bytes_sent()[rank];
    let bytes_match = comm.all_reduce_f64(if planned == bytes { 0.0 } else { 1.0 }, ReduceOp::Max)? == 0.0;

    // Single-device time of the same total problem, on rank 0 (others wait at the barrier), through
    // the same measurement path without ranks.
    let mut single_ms = None;
    if rank == 0 {
        let (ro, rl) = sliced_forward(&q, &k, &v, &s.mask, scale)?;
        let single = MeasureSettings { warmup: 0, repeats: settings.repeats.clamp(1, 3), target_spread: None, ..settings.clone() };
        let t = run_repeats(&mut HostClock::new(timeline), &single, &mut || -> Result<(), CpError> {
            match spec.def.pass {
                Pass::Fwd => {
                    let _ = sliced_forward(&q, &k, &v, &s.mask, scale)?;
                }
                Pass::Bwd => {
                    let _ = sliced_backward(&q, &k, &v, &ro, &rl, &dout, &s.mask, scale)?;
                }
                Pass::Fwdbwd => {
                    let (o, l) = sliced_forward(&q, &k, &v, &s.mask, scale)?;
                    let _ = sliced_backward(&q, &k, &v, &o, &l, &dout, &s.mask, scale)?;
                }
            }
            Ok(())
        })?;
        single_ms = Some(t.summary.median);
    }
    comm.barrier()?;

    if rank != 0 {
        return Ok(None);
    }
    row.set_timing(&timing, spec.def.dtype.name());
    if let Some((b, source)) = peak {
        row.set_memory(b, source);
    }
    let med = timing.summary.median;
    row.bytes_sent = Some(max_bytes);
    row.bandwidth_gbps = Some(max_bytes as f64 / (med * 1e-3) / 1e9);
    row.scaling_eff = single_ms.map(|s1| s1 / (world as f64 * med));
    row.max_abs_err = err;
    if !bytes_match {
        row.note.push_str("; bytes sent differ from the schedule");
    }
    Ok(Some(row))
}

static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// CUDA device of this rank: LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID (default 0).
/// The CUDA device of this rank: local rank modulo the visible devices — the same rule the NCCL
/// communicator uses, so tensors and NCCL buffers live on one device even with more ranks than GPUs.
pub fn local_device_index() -> usize {
    let local = ["LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"].iter().find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok()).unwrap_or(0);
    let count = if crate::sys::cuda_available() { tch::Cuda::device_count().max(1) as usize } else { 1 };
    local % count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::HeadLayout;
    use crate::cp::comm::local::LocalWorld;
    use crate::cp::registry::STRATEGIES;

    pub(crate) fn spec(strategy: &str, pattern: &str, params: &[(&str, &str)], seqlen: usize, pass: Pass) -> CpSpec {
        let settings = MeasureSettings { warmup: 0, repeats: 1, check: true, seed: 7, ..Default::default() };
        CpSpec::new(CpDef::for_test(strategy, pattern, params, seqlen, HeadLayout { q: 12, kv: 2 }, pass), settings)
    }

    fn run_local(world: usize, sp: CpSpec) -> Row {
        let rows = LocalWorld::run(world, move |c| run_case(c, &sp, "t", "cpu").map_err(|e| format!("{e:?}")));
        rows.into_iter().next().unwrap().expect("case ran").expect("rank 0 has the row")
    }

    /// Every strategy, world 2..4 (uneven 50 = 3·16+2 included), four masks, forward+backward: output,
    /// LSE and gradients equal the single-device result, and the bytes sent equal the schedule's.
    #[test]
    fn every_strategy_matches_single_device_in_a_local_world() {
        let masks: [(&str, &[(&str, &str)]); 4] = [
            ("full", &[]),
            ("causal", &[]),
            ("causal_document", &[("doc_lens", "20,7,23")]),
            ("sliding_window", &[("window_left", "9"), ("window_right", "4")]),
        ];
        let mut failures = Vec::new();
        for def in STRATEGIES {
            for world in [2usize, 3, 4] {
                for (m, params) in masks {
                    let row = run_local(world, spec(def.name, m, params, 50, Pass::Fwdbwd));
                    if row.status != Status::Ok || row.note.contains("differ") {
                        failures.push(format!("{} W={world} {m}: {} {} err={:?} note={}", def.name, row.status, row.error, row.max_abs_err, row.note));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The simulator's glue model counts the merges the engine really runs: per rank, as many
    /// `RunningMerge::add` calls over as many output elements as the schedule's `Merge` entries (the
    /// forward runs twice in a case without warmup: once untimed, once timed).
    #[test]
    #[cfg(feature = "test-hooks")]
    fn schedule_merges_are_the_merges_each_rank_runs() {
        use crate::attn::merge::MERGES_ON_THIS_THREAD;
        use crate::cp::schedule::GlueOp;
        for def in STRATEGIES {
            for world in [2usize, 4] {
                for (m, params) in [("causal", &[][..]), ("causal_document", &[("doc_lens", "20,7,23")][..])] {
                    let mut sp = spec(def.name, m, params, 50, Pass::Fwd);
                    sp.settings.check = false;
                    let per_rank = LocalWorld::run(world, {
                        let sp = sp.clone();
                        move |c| {
                            MERGES_ON_THIS_THREAD.with(|x| x.set((0, 0)));
                            run_case(c, &sp, "t", "cpu").map_err(|e| format!("{e:?}")).unwrap();
                            MERGES_ON_THIS_THREAD.with(|x| x.get())
                        }
                    });
                    let s = setup(&sp, world, 0).map_err(|e| e.1).unwrap();
                    for (r, &(calls, elems)) in per_rank.iter().enumerate() {
                        let merges: Vec<u64> = s
                            .schedule
                            .steps
                            .iter()
                            .flat_map(|st| st.glue.iter())
                            .filter(|g| g.rank == r)
                            .filter_map(|g| match g.op {
                                GlueOp::Merge { batch, heads, rows, head_dim } => Some((batch * heads * rows * head_dim) as u64),
                                _ => None,
                            })
                            .collect();
                        assert_eq!((calls, elems), (2 * merges.len(), 2 * merges.iter().sum::<u64>()), "{} W={world} {m} rank {r}", def.name);
                    }
                }
            }
        }
    }

    #[test]
    fn zigzag_balances_causal_work_and_contiguous_does_not() {
        let a = run_local(4, spec("ring-p2p", "causal", &[], 64, Pass::Fwd)).imbalance.unwrap();
        let z = run_local(4, spec("ring-p2p-zigzag", "causal", &[], 64, Pass::Fwd)).imbalance.unwrap();
        // contiguous, c = 16, W = 4: (2cW − c + 1)/(Wc + 1) = 113/65
        assert!((a - 113.0 / 65.0).abs() < 1e-12, "{a}");
        assert_eq!(z, 1.0);
    }

    #[test]
    fn bad_configuration_is_agreed_bad_input() {
        let mut sp = spec("usp", "causal", &[], 48, Pass::Fwd);
        sp.def.ulysses_degree = 3;
        let out = LocalWorld::run(2, move |c| match run_case(c, &sp, "t", "cpu") {
            Err(Ok(f)) => (f.code, f.message),
            other => panic!("expected an agreed failure, got {:?}", other.map(|r| r.is_some())),
        });
        assert_eq!(out[0].0, 2);
        assert!(out[0].1.as_ref().unwrap().contains("--ulysses-degree"), "{:?}", out[0].1);
        assert_eq!(out[1], (2, None));
    }

    #[test]
    #[cfg(feature = "test-hooks")]
    fn a_bad_mask_on_one_rank_is_reported_by_that_rank() {
        let mut sp = spec("ring-p2p", "causal", &[], 48, Pass::Fwd);
        sp.fault = Some((1, "mask".into()));
        let out = LocalWorld::run(3, move |c| match run_case(c, &sp, "t", "cpu") {
            Err(Ok(f)) => (f.code, f.message),
            _ => panic!("expected an agreed failure"),
        });
        assert_eq!(out[0], (2, None));
        assert!(out[1].1.as_ref().unwrap().starts_with("rank 1: --mask causal"), "{:?}", out[1]);
        assert_eq!(out[2], (2, None));
    }

    /// The CP timing path never reads the stop time before the device has finished: on every rank,
    /// every timed repeat is `sync` (drain, before the barrier) → `now` (start) → pass → `sync` → `now`
    /// (stop). Removing the device synchronisation before the stop breaks the pattern.
    #[test]
    fn cp_timing_reads_the_clock_only_after_the_device_finished() {
        use crate::measure::clock::testing::ScriptedTimeline;
        use std::sync::Arc;
        let tl = Arc::new(ScriptedTimeline::with_durations(&[1.0]));
        let mut sp = spec("ring-p2p", "causal", &[], 32, Pass::Fwd);
        sp.settings.check = false;
        sp.settings.repeats = 3;
        let logs = LocalWorld::run(2, {
            let tl = tl.clone();
            move |c| {
                run_case_on(c, &sp, "t", "cpu", tl.as_ref()).map_err(|e| format!("{e:?}")).unwrap();
                tl.log()
            }
        });
        for (rank, log) in logs.iter().enumerate() {
            assert!(log.len() >= 4 * 3, "rank {rank}: {log:?}");
            for (i, chunk) in log.chunks(4).enumerate() {
                assert_eq!(chunk, ["sync", "now", "sync", "now"], "rank {rank}, repeat {i}: {log:?}");
            }
        }
    }

    /// Kernel rows and CP rows summarise identical repeat times identically (one statistics routine,
    /// the sample cv), and an impossible time becomes an `error` row on both paths, not a panic.
    #[test]
    fn kernel_and_cp_rows_share_one_statistics_routine() {
        use crate::case::Case;
        use crate::measure::clock::testing::ScriptedTimeline;
        use crate::measure::Summary;
        use std::sync::Arc;
        let durations = [1.0, 2.0, 3.0, 4.0];
        let settings = MeasureSettings { warmup: 0, repeats: 4, check: false, seed: 7, ..Default::default() };
        let kernel_row = |d: &[f64]| {
            let case = Case::kernel("naive", "causal", Default::default(), 32, HeadLayout { q: 2, kv: 1 }, 16, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
            crate::exec::execute_timed(&crate::backend::naive::NAIVE, &case, &settings, "t", &ScriptedTimeline::with_durations(d)).unwrap()
        };
        let cp_row = |d: &[f64]| {
            let tl = Arc::new(ScriptedTimeline::with_durations(d));
            let sp = CpSpec::new(CpDef::for_test("ring-p2p", "causal", &[], 32, HeadLayout { q: 2, kv: 1 }, Pass::Fwd), settings.clone());
            LocalWorld::run(2, move |c| run_case_on(c, &sp, "t", "cpu", tl.as_ref()).map_err(|e| format!("{e:?}")).unwrap()).remove(0).unwrap()
        };
        let (k, c) = (kernel_row(&durations), cp_row(&durations));
        let want = Summary::of(&durations).unwrap();
        assert_eq!((k.status, c.status), (Status::Ok, Status::Ok), "{} / {}", k.error, c.error);
        assert_eq!(k.cv, Some(want.cv));
        assert_eq!(c.cv, Some(want.cv));
        assert_eq!((k.ms_median, k.ms_p20, k.ms_p80), (c.ms_median, c.ms_p20, c.ms_p80));
        assert_eq!(c.timing_mode, "rank-max-scripted");
        // A NaN duration: an error row with empty timing columns on both paths.
        for row in [kernel_row(&[1.0, f64::NAN]), cp_row(&[1.0, f64::NAN])] {
            assert_eq!(row.status, Status::Error, "{row:?}");
            assert!(row.error.contains("not a finite"), "{}", row.error);
            assert!(row.ms_median.is_none() && row.cv.is_none() && row.tflops.is_none());
        }
    }
}
