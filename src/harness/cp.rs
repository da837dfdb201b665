//! The CP case harness, shared by every strategy (the nccl-tests idea: one harness owns inputs,
//! checking, timing and the row; a strategy only computes). Run on every rank with the same spec.
//!
//! 0. The ranks agree on the case before anything else ([`agree`]): a fingerprint of the case and the
//!    measurement settings is compared with rank 0's, so ranks started with different arguments stop
//!    with one message and exit 2 instead of deadlocking in mismatched collectives.
//! 1. Setup on every rank ([`CpSetup::new`]); a failure on *any* rank is agreed on with an
//!    all-reduce, so all ranks exit with the same code and the failing rank names itself.
//! 2. Inputs: every rank draws the same full Q, K, V, dO from the seed and keeps its shard.
//! 3. Check (unless `--no-check`): one forward (+ backward) gathered on rank 0 and compared with the
//!    single-device result of the same kernel (the case's `backend`): out, LSE, dQ, dK, dV, each by
//!    the kernel gate's comparer against its own scale, bounds from the one tolerance table
//!    (`harness::gate`, column "one device"); `max_abs_err` is the largest difference.
//! 4. Memory: the peak of one untimed pass on every rank (allocator statistics; max over ranks). Not
//!    for the local communicator, whose ranks share one process and its allocator counters.
//! 5. Timing through the one measurement path (`measure::run_repeats`) with the rank-aware clock:
//!    (L2 flush on CUDA in `l2flush` mode) → barrier → start → pass → device sync → stop, a repeat's
//!    time being the slowest rank's. This is a host clock, unlike kernel rows' CUDA events: a CP pass
//!    is many kernels and transfers on several devices, and only the host sees all of them end; CP
//!    times therefore also hold launch and synchronisation latency (tens of µs), which every CP row's
//!    note and `timing_mode` (`rank-max-cuda-sync-instant-l2flush`) say. Bytes sent per rank are
//!    counted by the communicator (max over ranks); the single-device time of the same problem is
//!    measured on rank 0 with the same warm-up and the same clock, no ranks, for the scaling
//!    efficiency.

use std::ops::Range;

use tch::{Device, Tensor};

use crate::case::{Case, DeviceKind};
use crate::cp::comm::{Comm, CommRanks, ReduceOp};
use crate::cp::engine::Problem;
use crate::cp::setup::CpSetup;
use crate::cp::shard::{imbalance, Shard};
use crate::cp::CpError;
use crate::flops::pass_flops;
use crate::harness::gate::{Against, Checker};
use crate::measure::clock::{l2_flush_buffer, timeline_for};
use crate::measure::memory::peak_above_baseline;
use crate::measure::{run_repeats, run_repeats_powered, HostClock, MeasureError, MeasureSettings, Timeline};
use crate::results::{Row, Status};

/// One CP case on real ranks: what it computes and how it is measured.
#[derive(Debug, Clone)]
pub struct CpSpec {
    /// What is computed (kind `cp`; `world_size` must be the job's).
    pub case: Case,
    /// Warmup, repeats (fixed or adaptive), check, seed — the same settings kernel cases use.
    pub settings: MeasureSettings,
    /// Testing hook (feature `test-hooks` only): `(rank, kind)` — `mask` gives that rank an
    /// invalid mask at setup, `error` fails it in the first timed repeat, `kill` makes it die by
    /// SIGKILL there.
    #[cfg(feature = "test-hooks")]
    pub fault: Option<(usize, String)>,
}

impl CpSpec {
    pub fn new(case: Case, settings: MeasureSettings) -> CpSpec {
        CpSpec {
            case,
            settings,
            #[cfg(feature = "test-hooks")]
            fault: None,
        }
    }

    /// A fingerprint of everything that must be equal on every rank (the case and the settings): 52
    /// bits of SHA-256, exact in the f64 all-reduce the ranks compare it with.
    pub fn fingerprint(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let text = format!("{}|{}", self.case.canonical(), serde_json::to_string(&self.settings).unwrap_or_default());
        let d = Sha256::digest(text.as_bytes());
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) & ((1 << 52) - 1)
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

/// What the ranks of a job agree on, as [`agree`]'s message names it.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// What each rank brings (`case`, `configuration`).
    pub what: &'static str,
    /// The job's kind (`CP`, `comm`).
    pub name: &'static str,
}

impl Job {
    pub const CP: Job = Job { what: "case", name: "CP" };
    pub const COMM: Job = Job { what: "configuration", name: "comm" };
}

/// Agreement of every rank before anything moves: each rank brings its own fingerprint (see
/// [`CpSpec::fingerprint`]) or the one-line reason it could not build its case. Collective. Returns
/// `Ok` when every rank is fine and equal to rank 0; else the failure every rank exits with (code 2):
/// rank 0 says what is wrong (its own bad input, or the first rank whose case differs), a rank whose
/// input was bad while rank 0's was fine says its own reason; `job` names what differs.
pub fn agree(comm: &dyn Comm, local: Result<u64, String>, job: Job) -> Result<(), CaseFailure> {
    let (world, rank) = (comm.size(), comm.rank());
    let fail = |m: String| CaseFailure { code: 2, message: Some(m) };
    let quiet = || CaseFailure { code: 2, message: None };
    let comm_err = |e: crate::cp::comm::CommError| fail(format!("rank {rank}: {e}"));
    // The lowest rank that could not build its case, if any (encoded as world − rank, 0 = none).
    let bad_here = if local.is_err() { (world - rank) as f64 } else { 0.0 };
    let first_bad = comm.all_reduce_f64(bad_here, ReduceOp::Max).map_err(comm_err)?;
    if first_bad > 0.0 {
        let first = world - first_bad as usize;
        return Err(match local {
            Err(m) if rank == first && rank == 0 => fail(m),
            Err(m) if rank == first => fail(format!("rank {rank}: {m}")),
            _ => quiet(),
        });
    }
    let mine = local.expect("checked above") as f64;
    let root = comm.all_reduce_f64(if rank == 0 { mine } else { 0.0 }, ReduceOp::Max).map_err(comm_err)?;
    let differs_here = if mine != root { (world - rank) as f64 } else { 0.0 };
    let first_diff = comm.all_reduce_f64(differs_here, ReduceOp::Max).map_err(comm_err)?;
    if first_diff > 0.0 {
        let r = world - first_diff as usize;
        return Err(if rank == 0 {
            fail(format!("rank {r} was started with a different {} than rank 0 (every rank of a {} job must get the same arguments)", job.what, job.name))
        } else {
            quiet()
        });
    }
    Ok(())
}

/// Resolves the case on this rank (see [`CpSetup::new`]); the `mask` fault gives this rank alone an
/// invalid (empty) mask. Errors are bad input (one line).
fn setup(spec: &CpSpec, world: usize, rank: usize) -> Result<CpSetup, String> {
    if spec.case.world_size != world {
        return Err(format!("the case is for {} ranks but this job has {world}", spec.case.world_size));
    }
    if spec.fault_is(rank, "mask") {
        return CpSetup::new(&Case { seqlen: 0, ..spec.case.clone() });
    }
    CpSetup::new(&spec.case)
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

/// Runs one CP case on this rank. Rank 0 gets `Ok(Some(row))`, other ranks `Ok(None)`.
/// Setup failures come back as `Err` on every rank (agreed); a failure after setup is returned to
/// the caller of this rank only — the caller must abort the job (the other ranks are mid-collective).
pub fn run_case(comm: &dyn Comm, spec: &CpSpec, run_id: &str, device_name: &str) -> Result<Option<Row>, Result<CaseFailure, CpError>> {
    let timeline = timeline_for(device_of(spec.case.device));
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
    // Set up locally (no communication), then agree: every rank set up fine AND has rank 0's case.
    let local = setup(spec, world, rank);
    agree(comm, local.as_ref().map(|_| spec.fingerprint()).map_err(Clone::clone), Job::CP).map_err(Ok)?;
    let s = local.expect("agreed ok");
    run_after_setup(comm, spec, &s, run_id, device_name, timeline).map_err(Err)
}

fn run_after_setup(comm: &dyn Comm, spec: &CpSpec, s: &CpSetup, run_id: &str, device_name: &str, timeline: &dyn Timeline) -> Result<Option<Row>, CpError> {
    let (world, rank) = (comm.size(), comm.rank());
    let settings = &spec.settings;
    let case = &spec.case;
    let dev = device_of(case.device);
    // Every rank draws the whole problem, as a kernel case would (same seed, same inputs), and keeps
    // its shard.
    let [q, k, v, dout] = crate::backend::draw_inputs(case, settings.seed, dev)?;
    let mine = s.shard.ranges(rank);
    let (ql, kl, vl, dol) = (take_ranges(&q, mine), take_ranges(&k, mine), take_ranges(&v, mine), take_ranges(&dout, mine));
    let scale = 1.0 / (case.head_dim as f64).sqrt();
    let attn = s.attention;
    let p = Problem { mask: &s.mask, shard: &s.shard, scale, layout: s.layout, attention: attn };
    let eng = &s.engine;

    let mut row = Row::for_case(run_id, case, device_name);
    row.strategy_params = s.options.to_params().to_string();
    // TF32 set explicitly (sys::precision) on every rank, recorded on CUDA where it applies.
    let tf32 = crate::sys::precision::apply_tf32(settings.tf32).map_err(|e| CpError::from(crate::attn::KernelError::from(e)))?;
    row.tf32 = (case.device == DeviceKind::Cuda).then_some(tf32.any());
    row.mask_area = s.mask.area() as f64;
    row.density = s.mask.density();
    row.flops = pass_flops(s.mask.area() as u128 * case.heads.q as u128, case.head_dim, case.batch, case.pass);
    row.imbalance = Some(imbalance(&s.schedule.work()));
    let engine_note = eng.note(&s.layout);
    row.note = format!("{}{}sharding={}; per-rank kernel {}", engine_note, if engine_note.is_empty() { "" } else { "; " }, s.shard.kind, attn.name());

    // Forward once: the check uses it, and backward needs the final out/lse of the rows.
    let saved = eng.forward(comm, &p, &ql, &kl, &vl)?;
    let (out, lse) = (&saved.0, &saved.1);
    let mut err: Option<f64> = None;
    if settings.check {
        let (ro, rl) = attn
            .forward(&q, &k, &v, &s.mask, scale)
            .map(Some)
            .or_else(|e| if rank == 0 { Err(e) } else { Ok(None) })?
            .unwrap_or_else(|| (q.zeros_like(), q.zeros_like()));
        let mut pairs: Vec<(&'static str, Option<Tensor>, Tensor)> =
            vec![("out", gather_global(comm, &s.shard, out, &q)?, ro.shallow_clone()), ("lse", gather_global(comm, &s.shard, lse, &rl)?, rl.shallow_clone())];
        if case.pass.includes_backward() {
            let (dq, dk, dv) = eng.backward(comm, &p, &ql, &kl, &vl, out, lse, &dol)?;
            let refs = if rank == 0 { Some(attn.backward(&q, &k, &v, &ro, &rl, &dout, &s.mask, scale)?) } else { None };
            let (rdq, rdk, rdv) = refs.unwrap_or_else(|| (q.zeros_like(), k.zeros_like(), v.zeros_like()));
            pairs.push(("dq", gather_global(comm, &s.shard, &dq, &q)?, rdq));
            pairs.push(("dk", gather_global(comm, &s.shard, &dk, &k)?, rdk));
            pairs.push(("dv", gather_global(comm, &s.shard, &dv, &v)?, rdv));
        }
        // The one comparer and tolerance table (harness::gate), on rank 0 (it alone has the gathered
        // tensors); every rank learns the verdict.
        let tol = Against::OneDevice.tolerance(case.dtype);
        let mut check = Checker::default();
        for (name, got, want) in &pairs {
            if let Some(g) = got {
                check.add(name, g, want, if name.starts_with('d') { tol.grad } else { tol.out }).map_err(crate::attn::KernelError::from)?;
            }
        }
        let failed = comm.all_reduce_f64(if rank == 0 && !check.passed { 1.0 } else { 0.0 }, ReduceOp::Max)? > 0.0;
        let worst = comm.all_reduce_f64(if rank == 0 { check.max_abs } else { 0.0 }, ReduceOp::Max)?;
        err = Some(worst);
        row.max_abs_err = err;
        if failed {
            row.fail(
                Status::Wrong,
                format!("differs from the single-device result: max |cp − single device| = {worst:.3e}; {} > tolerance {:.1e}", check.worst_text(), tol.out),
            );
            return Ok((rank == 0).then_some(row));
        }
    }

    // One pass as timed: forward, backward (given out/lse), or both — the one dispatch.
    let run_pass = |comm: &dyn Comm| -> Result<(), CpError> {
        super::pass::one_pass(&mut EnginePass { comm, p: &p, eng: eng.as_ref(), q: &ql, k: &kl, v: &vl, dout: &dol }, case.pass, Some(&saved))
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
    // The CP clock (see the module doc, step 5): host time of a device-synchronised pass, slowest rank,
    // with the kernel rows' L2 flush before each repeat on CUDA in `l2flush` mode.
    let mut clock = HostClock::ranked(timeline, &ranks).with_l2_flush(l2_flush_buffer(dev, settings.timing_mode)?);
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
    let (power, counting) = super::cp_power::rank_source(comm, dev);
    let (timing, power) = match run_repeats_powered(&mut clock, settings, power, &mut timed_pass) {
        Ok(t) => t,
        // Every rank sees the same (max-reduced) times, so every rank rejects them alike: a row, not an
        // aborted job.
        Err(CpError::Measure(e @ (MeasureError::BadTime { .. } | MeasureError::NoSamples))) => {
            row.fail(Status::Error, e.to_string());
            return Ok((rank == 0).then_some(row));
        }
        Err(e) => return Err(e),
    };
    let power = super::cp_power::sum_over_ranks(comm, &power, counting)?;
    let max_bytes = comm.all_reduce_f64(bytes as f64, ReduceOp::Max)? as u64;
    let scheduled = s.schedule.bytes_sent()[rank];
    let bytes_match = comm.all_reduce_f64(if scheduled == bytes { 0.0 } else { 1.0 }, ReduceOp::Max)? == 0.0;

    // Single-device time of the same total problem, on rank 0 (others wait at the barrier), through
    // the same measurement path without ranks.
    let mut single_ms = None;
    if rank == 0 {
        let (ro, rl) = attn.forward(&q, &k, &v, &s.mask, scale)?;
        // Same warm-up and the same clock as the CP pass (host time, device synchronised, L2 flushed),
        // so the scaling efficiency compares like with like.
        let single = MeasureSettings { repeats: settings.repeats.clamp(1, 3), target_spread: None, ..settings.clone() };
        let mut single_clock = HostClock::new(timeline).with_l2_flush(l2_flush_buffer(dev, settings.timing_mode)?);
        let saved = (ro, rl);
        let mut one_device = OneDevice { attn, mask: &s.mask, scale, q: &q, k: &k, v: &v, dout: &dout };
        let t = run_repeats(&mut single_clock, &single, &mut || -> Result<(), CpError> { super::pass::one_pass(&mut one_device, case.pass, Some(&saved)) })?;
        single_ms = Some(t.summary.median);
    }
    comm.barrier()?;

    if rank != 0 {
        return Ok(None);
    }
    row.set_timing(&timing, case.dtype.name());
    if let Some((b, source)) = peak {
        row.set_memory(b, source);
    }
    let med = timing.summary.median;
    row.bytes_sent = Some(max_bytes);
    row.bandwidth_gbps = Some(max_bytes as f64 / (med * 1e-3) / 1e9);
    row.scaling_eff = single_ms.map(|s1| s1 / (world as f64 * med));
    row.note.push_str(CP_CLOCK_NOTE);
    row.max_abs_err = err;
    if !bytes_match {
        row.note.push_str("; bytes sent differ from the schedule");
    }
    row.set_power(&power);
    Ok(Some(row))
}

/// The CP engine on this rank's shard, as the one pass dispatch ([`super::pass::one_pass`]) runs it.
struct EnginePass<'a> {
    comm: &'a dyn Comm,
    p: &'a Problem<'a>,
    eng: &'a dyn crate::cp::engine::Engine,
    q: &'a Tensor,
    k: &'a Tensor,
    v: &'a Tensor,
    dout: &'a Tensor,
}

impl super::pass::Directions for EnginePass<'_> {
    type Fwd = (Tensor, Tensor);
    type Error = CpError;
    fn forward(&mut self) -> Result<(Tensor, Tensor), CpError> {
        self.eng.forward(self.comm, self.p, self.q, self.k, self.v)
    }
    fn backward(&mut self, (o, l): &(Tensor, Tensor)) -> Result<(), CpError> {
        self.eng.backward(self.comm, self.p, self.q, self.k, self.v, o, l, self.dout).map(|_| ())
    }
}

/// The per-rank kernel on the whole problem on one device (the scaling efficiency's baseline), as the
/// one pass dispatch runs it.
struct OneDevice<'a> {
    attn: &'static dyn crate::attn::MaskedAttention,
    mask: &'a crate::mask::Mask,
    scale: f64,
    q: &'a Tensor,
    k: &'a Tensor,
    v: &'a Tensor,
    dout: &'a Tensor,
}

impl super::pass::Directions for OneDevice<'_> {
    type Fwd = (Tensor, Tensor);
    type Error = CpError;
    fn forward(&mut self) -> Result<(Tensor, Tensor), CpError> {
        Ok(self.attn.forward(self.q, self.k, self.v, self.mask, self.scale)?)
    }
    fn backward(&mut self, (o, l): &(Tensor, Tensor)) -> Result<(), CpError> {
        self.attn.backward(self.q, self.k, self.v, o, l, self.dout, self.mask, self.scale).map(|_| ()).map_err(Into::into)
    }
}

/// What every CP row says about its clock (its `timing_mode` names it; this says how it differs from
/// kernel rows).
pub const CP_CLOCK_NOTE: &str = "; clock: host time of a device-synchronised pass after a barrier, slowest rank (kernel rows: CUDA events, so CP ms also hold launch and sync latency); scaling_eff against a single-device time on the same clock, same warm-up";

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
    use crate::case::{DType, HeadLayout};
    use crate::cp::comm::local::LocalWorld;
    use crate::cp::registry::STRATEGIES;
    use crate::cp::setup::fixtures::cp_case;
    use crate::flops::Pass;

    pub(crate) fn spec(strategy: &str, pattern: &str, params: &[(&str, &str)], seqlen: usize, pass: Pass) -> CpSpec {
        let settings = MeasureSettings { warmup: 0, repeats: 1, check: true, seed: 7, ..Default::default() };
        CpSpec::new(cp_case(strategy, pattern, params, seqlen, 2, HeadLayout { q: 12, kv: 2 }, pass), settings)
    }

    /// The masks every strategy is checked on against one device, on S = 50 (documents of 20, 7, 23).
    const GATE_MASKS: [(&str, &[(&str, &str)]); 4] =
        [("full", &[]), ("causal", &[]), ("causal_document", &[("doc_lens", "20,7,23")]), ("sliding_window", &[("window_left", "9"), ("window_right", "4")])];

    fn run_local(world: usize, mut sp: CpSpec) -> Row {
        sp.case.world_size = world;
        let rows = LocalWorld::run(world, move |c| run_case(c, &sp, "t", "cpu").map_err(|e| format!("{e:?}")));
        rows.into_iter().next().unwrap().expect("case ran").expect("rank 0 has the row")
    }

    /// Every strategy, world 2..4 (uneven 50 = 3·16+2 included), four masks, forward+backward: output,
    /// LSE and gradients equal the single-device result, and the bytes sent equal the schedule's.
    #[test]
    fn every_strategy_matches_single_device_in_a_local_world() {
        let mut failures = Vec::new();
        for def in STRATEGIES {
            for world in [2usize, 3, 4] {
                for (m, params) in GATE_MASKS {
                    let row = run_local(world, spec(def.name, m, params, 50, Pass::Fwdbwd));
                    if row.status != Status::Ok || row.note.contains("differ") {
                        failures.push(format!("{} W={world} {m}: {} {} err={:?} note={}", def.name, row.status, row.error, row.max_abs_err, row.note));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// LoongTrain (`usp` with an inner ring): U = 2 × a ring of 4 split into 2 inner rings of 2, and
    /// U = 1 × 2 × 4, on the same four masks, forward+backward, against the single-device result.
    #[test]
    fn loongtrain_matches_single_device_in_a_local_world() {
        let mut failures = Vec::new();
        for (u, inner) in [(2, 2), (1, 4)] {
            for (m, params) in GATE_MASKS {
                let mut sp = spec("usp", m, params, 50, Pass::Fwdbwd);
                sp.case.cp = crate::case::CpOptions { ulysses_degree: Some(u), inner_ring: Some(inner), sharding: None };
                let row = run_local(8, sp);
                if row.status != Status::Ok || row.note.contains("differ") || !row.note.contains(&format!("inner={inner} outer=")) {
                    failures.push(format!("U={u} I={inner} {m}: {} {} err={:?} note={}", row.status, row.error, row.max_abs_err, row.note));
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
                    sp.case.world_size = world;
                    let per_rank = LocalWorld::run(world, {
                        let sp = sp.clone();
                        move |c| {
                            MERGES_ON_THIS_THREAD.with(|x| x.set((0, 0)));
                            run_case(c, &sp, "t", "cpu").map_err(|e| format!("{e:?}")).unwrap();
                            MERGES_ON_THIS_THREAD.with(|x| x.get())
                        }
                    });
                    let s = setup(&sp, world, 0).unwrap();
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
        sp.case.cp.ulysses_degree = Some(3);
        let out = LocalWorld::run(2, move |c| match run_case(c, &sp, "t", "cpu") {
            Err(Ok(f)) => (f.code, f.message),
            other => panic!("expected an agreed failure, got {:?}", other.map(|r| r.is_some())),
        });
        assert_eq!(out[0].0, 2);
        assert!(out[0].1.as_ref().unwrap().contains("--ulysses-degree"), "{:?}", out[0].1);
        assert_eq!(out[1], (2, None));
    }

    /// Ranks started with different arguments (another length, another strategy, other settings)
    /// stop before any tensor moves: exit code 2 everywhere, one message from rank 0 naming the
    /// first rank that differs. (Before, such a job segfaulted, aborted in MPI or hung.)
    #[test]
    fn ranks_that_disagree_stop_with_one_message() {
        let base = spec("ring-p2p", "causal", &[], 48, Pass::Fwd);
        let other_len = CpSpec { case: Case { seqlen: 64, ..base.case.clone() }, ..base.clone() };
        let other_strategy = CpSpec { case: Case { strategy: "ulysses".into(), ..base.case.clone() }, ..base.clone() };
        let other_seed = CpSpec { settings: MeasureSettings { seed: 8, ..base.settings.clone() }, ..base.clone() };
        for odd in [other_len, other_strategy, other_seed] {
            let specs: Vec<CpSpec> = (0..3)
                .map(|r| if r == 2 { odd.clone() } else { base.clone() })
                .map(|mut s| {
                    s.case.world_size = 3;
                    s
                })
                .collect();
            let out = LocalWorld::run(3, move |c| match run_case(c, &specs[c.rank()], "t", "cpu") {
                Err(Ok(f)) => (f.code, f.message),
                other => panic!("expected an agreed failure, got {:?}", other.map(|r| r.is_some())),
            });
            assert!(out.iter().all(|(code, _)| *code == 2), "{out:?}");
            assert_eq!(out.iter().filter(|(_, m)| m.is_some()).count(), 1, "{out:?}");
            assert!(out[0].1.as_deref().unwrap().starts_with("rank 2 was started with a different case than rank 0"), "{out:?}");
        }
    }

    /// A rank whose own arguments could not even be parsed joins the agreement with its reason: every
    /// rank stops (exit 2), that rank alone says why.
    #[test]
    fn a_rank_with_bad_arguments_stops_every_rank() {
        let out = LocalWorld::run(3, |c| {
            let mine = if c.rank() == 1 { Err("--dtype: unknown dtype `fp7`".to_string()) } else { Ok(42) };
            agree(c, mine, Job::CP).map_err(|f| (f.code, f.message))
        });
        assert_eq!(out[0], Err((2, None)));
        assert_eq!(out[1], Err((2, Some("rank 1: --dtype: unknown dtype `fp7`".to_string()))));
        assert_eq!(out[2], Err((2, None)));
        assert!(LocalWorld::run(2, |c| agree(c, Ok(7), Job::CP).is_ok()).into_iter().all(|ok| ok));
    }

    #[test]
    #[cfg(feature = "test-hooks")]
    fn a_bad_mask_on_one_rank_is_reported_by_that_rank() {
        let mut sp = spec("ring-p2p", "causal", &[], 48, Pass::Fwd);
        sp.fault = Some((1, "mask".into()));
        sp.case.world_size = 3;
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
        sp.case.world_size = 2;
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

    /// The single-device baseline of the scaling efficiency gets the CP pass's warm-up (it had none)
    /// and the same clock: on rank 0 the timeline sees the CP pass's W warm-up drains and R timed
    /// repeats, then the baseline's W warm-up drains and its repeats — each repeat `sync, now, sync,
    /// now`. Every CP row's note says how its clock differs from kernel rows'.
    #[test]
    fn single_device_baseline_is_warmed_up_and_timed_like_the_cp_pass() {
        use crate::measure::clock::testing::ScriptedTimeline;
        use std::sync::Arc;
        let tl = Arc::new(ScriptedTimeline::with_durations(&[1.0]));
        let mut sp = spec("ring-p2p", "causal", &[], 32, Pass::Fwd);
        sp.settings.check = false;
        sp.settings.warmup = 2;
        sp.settings.repeats = 3;
        sp.case.world_size = 2;
        let out = LocalWorld::run(2, {
            let tl = tl.clone();
            move |c| {
                let row = run_case_on(c, &sp, "t", "cpu", tl.as_ref()).map_err(|e| format!("{e:?}")).unwrap();
                (row, tl.log())
            }
        });
        let timed: Vec<&str> = ["sync", "sync"].into_iter().chain((0..3).flat_map(|_| ["sync", "now", "sync", "now"])).collect();
        assert_eq!(out[1].1, timed, "rank 1: the CP pass only");
        let both: Vec<&str> = timed.iter().chain(timed.iter()).copied().collect();
        assert_eq!(out[0].1, both, "rank 0: the CP pass, then the baseline with the same warm-up");
        let row = out[0].0.as_ref().unwrap();
        assert!(row.scaling_eff.is_some());
        assert!(row.note.contains("clock: host time") && row.note.contains("kernel rows: CUDA events"), "{}", row.note);
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
            crate::harness::kernel::execute_timed(&crate::backend::naive::NAIVE, &case, &settings, "t", &ScriptedTimeline::with_durations(d)).unwrap()
        };
        let cp_row = |d: &[f64]| {
            let tl = Arc::new(ScriptedTimeline::with_durations(d));
            let sp = CpSpec::new(cp_case("ring-p2p", "causal", &[], 32, 2, HeadLayout { q: 2, kv: 1 }, Pass::Fwd), settings.clone());
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
