//! The CP model against the figures LongCA-bench's authors published: digitised data, the mapping of
//! their baselines onto our strategies, the calibration of the model's free parameters and the
//! comparison (`attnbench simulate --compare-published`). docs/SIMULATION.md has the tables.
//!
//! - **Data.** `data/longca-cp-published-h100.csv` (TFLOPS/GPU per mask × pass × strategy × world,
//!   read off the blog's bar charts) and `data/fa3-kernel-published-h100.csv` (the FA3 kernel bars of
//!   the same post); their headers give source, method and reading precision.
//! - **Setup** (MagiAttention `exps/dist_attn`, which produced the figures): 8K tokens per GPU, 64:8
//!   heads, D = 128, bf16, batch 1; full and causal masks, and full/causal document masks packed from
//!   the `magi_default` length table by Sampler B (chunk ¼ of the pack, [`crate::mask::doclen::pack_lengths`];
//!   our `docs=magi_packed`) averaged over 20 packs; every baseline on FA3 varlen calls; TFLOPS/GPU =
//!   mask FLOPs / (max over ranks of the time × W). Their baselines are modelled with
//!   [`Implementation::Longca`].
//! - **Kernel parameters** of the FA3 tile model ([`Fa3Model`]) are fitted to the published dense
//!   (full, causal) FA3 kernel bars; the varlen kernel bars are the kernel-level check.
//! - **CP parameters** ([`CpParams`]: the inter-node bandwidth, the glue's memory efficiency and its
//!   per-launch cost) are fitted ONLY to the forward figures at W = 8 and 16 ([`is_calibration`]);
//!   every other point (backward, W = 32 and 64) is held out.

use std::collections::BTreeMap;

use serde::Serialize;

use super::comm_model::{preset, Link, Topology};
use super::compute::{ComputeModel, Fa3Compute, PieceTimer, Roofline};
use super::fa3::{CallShape, Fa3Model, Fa3Pass, Segment};
use super::predict::predict;
use super::{compute_times, setup, Implementation, SimError, SimSpec};
use crate::case::{Case, CpOptions, DType, DeviceKind, HeadLayout};
use crate::cp::schedule::Schedule;
use crate::flops::{pass_flops, Pass};
use crate::mask::doclen;
use crate::mask::Params;

/// Digitised CP figures (see the file's header).
pub const CP_CSV: &str = include_str!("../../data/longca-cp-published-h100.csv");
/// Digitised FA3 kernel figures (see the file's header).
pub const KERNEL_CSV: &str = include_str!("../../data/fa3-kernel-published-h100.csv");

/// Tokens per GPU, heads and head dim of the published CP sweep.
pub const TOKENS_PER_GPU: usize = 8192;
pub const HEADS: HeadLayout = HeadLayout { q: 64, kv: 8 };
pub const HEAD_DIM: usize = 128;
/// Heads of the published kernel sweep (its script: 48:8; the blog's table says 64:8).
pub const KERNEL_HEADS: HeadLayout = HeadLayout { q: 48, kv: 8 };
/// Packs the published figures average for the document masks.
pub const PUBLISHED_PACKS: usize = 20;
/// H100 SXM: streaming multiprocessors, dense bf16 peak (TFLOPS), HBM (TB/s).
pub const H100_SMS: usize = 132;
pub const H100_PEAK_TFLOPS: f64 = 989.4;
pub const H100_MEM_TBPS: f64 = 3.35;
/// Fraction of HBM bandwidth FA3's backward pre/post-processing kernels sustain (an assumption).
pub const FA3_MEM_EFFICIENCY: f64 = 0.8;

/// One published CP bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpPoint {
    pub mask: String,
    pub pass: Pass,
    pub strategy: String,
    pub world: usize,
    pub tflops: f64,
}

/// One published FA3 kernel bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelPoint {
    pub mask: String,
    pub pass: Pass,
    pub seqlen: usize,
    pub tflops: f64,
}

fn data_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).skip(1).map(|l| l.split(',').map(str::trim).collect())
}

fn pass_of(s: &str) -> Pass {
    s.parse().expect("embedded data: pass is fwd or bwd")
}

/// The digitised CP bars, every strategy (including the ones we do not implement).
pub fn cp_points() -> Vec<CpPoint> {
    data_lines(CP_CSV)
        .map(|f| CpPoint {
            mask: f[0].to_string(),
            pass: pass_of(f[1]),
            strategy: f[2].to_string(),
            world: f[3].parse().expect("embedded data: world"),
            tflops: f[4].parse().expect("embedded data: tflops"),
        })
        .collect()
}

/// The digitised FA3 kernel bars.
pub fn kernel_points() -> Vec<KernelPoint> {
    data_lines(KERNEL_CSV)
        .map(|f| KernelPoint {
            mask: f[0].to_string(),
            pass: pass_of(f[1]),
            seqlen: f[2].parse().expect("embedded data: seqlen"),
            tflops: f[3].parse().expect("embedded data: tflops"),
        })
        .collect()
}

/// The published strategies we implement, in the figures' order.
pub const IMPLEMENTED: [&str; 5] = ["ulysses", "ring_p2p", "ring_allgather", "usp", "loongtrain"];

/// Our configuration of a published strategy at `world` GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub strategy: &'static str,
    pub ulysses_degree: usize,
    pub inner_ring: usize,
}

impl Config {
    /// `ulysses`, `ring-p2p-zigzag`, `usp U=8`, `usp U=8 inner=2`, …
    pub fn label(&self) -> String {
        let mut s = self.strategy.to_string();
        if self.ulysses_degree > 0 {
            s.push_str(&format!(" U={}", self.ulysses_degree));
        }
        if self.inner_ring > 0 {
            s.push_str(&format!(" inner={}", self.inner_ring));
        }
        s
    }
}

/// LoongTrain's inner ring over a ring of `ring` members, as `exps/dist_attn/run_benchmark.py` picks
/// its window count (the largest divisor i of the ring with i ≤ ring/i; the inner ring is ring/i).
pub fn loongtrain_inner(ring: usize) -> usize {
    let mut windows = 1;
    for i in 1..=ring {
        if !ring.is_multiple_of(i) {
            continue;
        }
        if i > ring / i {
            break;
        }
        windows = i;
    }
    if windows >= ring {
        windows = 1;
    }
    ring / windows
}

/// Published name → our strategy: Ulysses → `ulysses`; Ring P2P → `ring-p2p-zigzag`; Ring AllGather →
/// `ring-allgather`; USP → `usp` with U = min(W, 8); LoongTrain → `usp` with U = min(W, 8) and its
/// double ring (inner ring per [`loongtrain_inner`]). `None` for MagiAttention and HybridDCP.
pub fn config(published: &str, world: usize) -> Option<Config> {
    let u = world.min(8);
    Some(match published {
        "ulysses" => Config { strategy: "ulysses", ulysses_degree: 0, inner_ring: 0 },
        "ring_p2p" => Config { strategy: "ring-p2p-zigzag", ulysses_degree: 0, inner_ring: 0 },
        "ring_allgather" => Config { strategy: "ring-allgather", ulysses_degree: 0, inner_ring: 0 },
        "usp" => Config { strategy: "usp", ulysses_degree: u, inner_ring: 0 },
        "loongtrain" => Config { strategy: "usp", ulysses_degree: u, inner_ring: loongtrain_inner(world / u) },
        _ => return None,
    })
}

/// Our mask pattern and parameters for a published mask and pack seed.
pub fn mask_of(mask: &str, seed: u64) -> (String, Params) {
    match mask {
        "full_document" | "causal_document" => (mask.to_string(), Params::new().set("docs", doclen::MAGI_PACKED).set("seed", seed)),
        other => (other.to_string(), Params::new()),
    }
}

/// True for the points the CP parameters are fitted on: forward at W = 8 and 16.
pub fn is_calibration(p: &CpPoint) -> bool {
    p.pass == Pass::Fwd && (p.world == 8 || p.world == 16)
}

/// The FA3 model on H100 with the kernel parameters fitted to the published kernel bars
/// ([`fit_kernel`] reproduces them; a test checks it).
pub fn h100_fa3() -> Fa3Model {
    Fa3Model {
        fwd: pass_of_tuple(FITTED_FWD),
        bwd: pass_of_tuple(FITTED_BWD),
        varlen_fwd: pass_of_tuple(FITTED_VARLEN_FWD),
        varlen_bwd: pass_of_tuple(FITTED_VARLEN_BWD),
        sms: H100_SMS,
        peak_tflops: H100_PEAK_TFLOPS,
        mem_tbps: H100_MEM_TBPS * FA3_MEM_EFFICIENCY,
    }
}

fn pass_of_tuple(t: (f64, f64, f64)) -> Fa3Pass {
    Fa3Pass { efficiency: t.0, item_us: t.1, launch_us: t.2 }
}

/// (efficiency, µs per work item, µs per call) of dense and varlen calls, forward and backward, as
/// [`fit_kernel`] fits them to the published kernel bars.
pub const FITTED_FWD: (f64, f64, f64) = (0.704, 0.0, 16.0);
pub const FITTED_BWD: (f64, f64, f64) = (0.604, 1.5, 46.0);
pub const FITTED_VARLEN_FWD: (f64, f64, f64) = (0.704, 3.35, 81.0);
pub const FITTED_VARLEN_BWD: (f64, f64, f64) = (0.604, 14.25, 186.0);

/// The CP-level free parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpParams {
    /// Inter-node bandwidth per GPU and direction, GB/s (the preset's datasheet value is 50).
    pub inter_gbps: f64,
    /// Fraction of HBM bandwidth the glue work (merges, copies, accumulation) sustains. Fitted, so it
    /// also absorbs how far the glue's counted bytes are from the real ones: above 1 means the
    /// implementation moves fewer bytes than counted.
    pub mem_efficiency: f64,
    /// Cost of one glue kernel launch, µs.
    pub launch_us: f64,
}

/// The CP parameters fitted by [`fit_cp`] on the calibration points (W = 8, 16 forward).
pub const H100_CP: CpParams = CpParams { inter_gbps: 50.0, mem_efficiency: 0.5, launch_us: 9.0 };

/// The `h100` preset with the calibrated inter-node bandwidth (`h100-longca`).
pub fn topology(cp: &CpParams) -> Topology {
    let mut t = preset("h100").expect("h100 preset");
    t.inter = Link { alpha_us: t.inter.alpha_us, beta_gbps: cp.inter_gbps };
    t.name = "h100-longca".into();
    t
}

/// The compute model: FA3 tiles for attention, the bandwidth roofline with `cp` for the glue.
pub fn fa3_compute(kernel: Fa3Model, cp: &CpParams) -> ComputeModel {
    ComputeModel::Fa3(Fa3Compute { kernel, glue: glue_roofline(cp) })
}

fn glue_roofline(cp: &CpParams) -> Roofline {
    Roofline {
        peak_tflops: H100_PEAK_TFLOPS,
        efficiency: 1.0,
        launch_us: cp.launch_us,
        mem_tbps: H100_MEM_TBPS,
        mem_efficiency: cp.mem_efficiency,
        device: "H100",
    }
}

// ---------------------------------------------------------------------------------------------------
// Kernel level
// ---------------------------------------------------------------------------------------------------

/// Draws of the varlen kernel bars averaged per point (the script draws one).
pub const KERNEL_DRAWS: u64 = 16;

/// The calls of one kernel bar: one dense call (full, causal) or varlen calls over [`KERNEL_DRAWS`]
/// length draws (document masks), with the bar's FLOPs.
fn kernel_calls(p: &KernelPoint) -> Vec<(Vec<Segment>, CallShape, f64)> {
    let causal = p.mask.starts_with("causal");
    let shape = |varlen| CallShape { heads_q: KERNEL_HEADS.q, heads_kv: KERNEL_HEADS.kv, head_dim: HEAD_DIM, backward: p.pass == Pass::Bwd, varlen };
    let seg = |l: usize| Segment { lq: l, lk: l, area: if causal { (l * (l + 1) / 2) as u64 } else { (l * l) as u64 } };
    let flops = |segs: &[Segment]| {
        let area: u64 = segs.iter().map(|s| s.area).sum();
        pass_flops(area as u128 * KERNEL_HEADS.q as u128, HEAD_DIM, 1, p.pass)
    };
    if p.mask.ends_with("_document") {
        let table = doclen::histogram("varlen_long").expect("embedded table");
        (0..KERNEL_DRAWS)
            .map(|d| {
                let segs: Vec<Segment> = doclen::sample_lengths_a_prime(&table, p.seqlen, &mut doclen::rng(1000 + d)).into_iter().map(seg).collect();
                let f = flops(&segs);
                (segs, shape(true), f)
            })
            .collect()
    } else {
        let segs = vec![seg(p.seqlen)];
        let f = flops(&segs);
        vec![(segs, shape(false), f)]
    }
}

/// Modelled TFLOPS of a kernel bar (mean over draws).
pub fn kernel_tflops(m: &Fa3Model, p: &KernelPoint) -> f64 {
    let calls = kernel_calls(p);
    calls.iter().map(|(s, sh, f)| f / m.call_s(s, sh) / 1e12).sum::<f64>() / calls.len() as f64
}

/// Which kernel bars fit which parameters: dense calls to the full and causal bars, varlen calls to
/// the full-document bars; the causal-document bars are the check.
pub fn kernel_role(p: &KernelPoint) -> &'static str {
    match p.mask.as_str() {
        "full_document" => "fit (varlen)",
        "causal_document" => "check",
        _ => "fit (dense)",
    }
}

/// Fits (efficiency, µs/item, µs/call) of each pass and kind of call to its bars ([`kernel_role`]),
/// minimising the mean |relative error| of TFLOPS: an exhaustive search on a coarse grid (efficiency
/// 0.40–0.96 step 0.02, item 0–20 µs step 0.5, call 0–300 µs step 10), then on a fine grid (steps
/// 0.002, 0.05 µs, 1 µs) two coarse steps around the coarse optimum. Deterministic.
pub fn fit_kernel(points: &[KernelPoint]) -> Fa3Model {
    let mut m = h100_fa3();
    let per_sm_peak = m.peak_tflops * 1e12 / m.sms as f64;
    let sms = m.sms as f64;
    for (varlen, backward) in [(false, false), (false, true), (true, false), (true, true)] {
        let pass = if backward { Pass::Bwd } else { Pass::Fwd };
        let role = if varlen { "fit (varlen)" } else { "fit (dense)" };
        // Per bar: the parameter-free cost of each draw's call, its FLOPs, and the published TFLOPS.
        let pre: Vec<(Vec<(super::fa3::CallCost, f64)>, f64)> = points
            .iter()
            .filter(|p| p.pass == pass && kernel_role(p) == role)
            .map(|p| (kernel_calls(p).into_iter().map(|(segs, shape, flops)| (m.cost(&segs, &shape), flops)).collect(), p.tflops))
            .collect();
        let err = |p: &Fa3Pass| {
            pre.iter()
                .map(|(calls, published)| {
                    let t = calls.iter().map(|(c, f)| f / c.time_s(p, per_sm_peak, sms) / 1e12).sum::<f64>() / calls.len() as f64;
                    (t / published - 1.0).abs()
                })
                .sum::<f64>()
                / pre.len() as f64
        };
        // (start, step, count) per parameter: efficiency, item µs, call µs.
        let search = |grid: [(f64, f64, usize); 3]| {
            let mut best = (f64::INFINITY, Fa3Pass { efficiency: 0.0, item_us: 0.0, launch_us: 0.0 });
            for ei in 0..grid[0].2 {
                for ii in 0..grid[1].2 {
                    for li in 0..grid[2].2 {
                        let p = Fa3Pass {
                            efficiency: grid[0].0 + ei as f64 * grid[0].1,
                            item_us: grid[1].0 + ii as f64 * grid[1].1,
                            launch_us: grid[2].0 + li as f64 * grid[2].1,
                        };
                        let e = err(&p);
                        if e < best.0 {
                            best = (e, p);
                        }
                    }
                }
            }
            best.1
        };
        // Varlen calls run the same tiles as dense ones: same efficiency, their own fixed costs.
        let eff = if varlen { Some(if backward { m.bwd.efficiency } else { m.fwd.efficiency }) } else { None };
        let e_grid = |coarse: bool| match eff {
            Some(e) => (e, 0.0, 1),
            None if coarse => (0.40, 0.02, 29),
            None => (0.0, 0.0, 0),
        };
        let c = search([e_grid(true), (0.0, 0.5, 41), (0.0, 10.0, 31)]);
        let fine = |v: f64, coarse: f64, step: f64, lo: f64| {
            let start = (v - 2.0 * coarse).max(lo);
            (start, step, ((v + 2.0 * coarse - start) / step).round() as usize + 1)
        };
        let eg = if eff.is_some() { e_grid(true) } else { fine(c.efficiency, 0.02, 0.002, 0.3) };
        let best = search([eg, fine(c.item_us, 0.5, 0.05, 0.0), fine(c.launch_us, 10.0, 1.0, 0.0)]);
        match (varlen, backward) {
            (false, false) => m.fwd = best,
            (false, true) => m.bwd = best,
            (true, false) => m.varlen_fwd = best,
            (true, true) => m.varlen_bwd = best,
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------------
// CP level
// ---------------------------------------------------------------------------------------------------

/// Which model makes a projection: the full one, or one with a part removed (ablation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Variant {
    /// FA3 tiles, per-document layout, autograd backward, glue, NCCL-style all-to-all.
    Full,
    /// One constant efficiency per pass (FA3's on long dense sequences) instead of tiles.
    ConstantEfficiency,
    /// attnbench's own layout (global sharding of the packed sequence, one all-gather call, its own
    /// backward messages) instead of the baselines' per-document one.
    GlobalLayout,
    /// No glue work (merges, copies, accumulation cost nothing).
    NoGlue,
    /// FA3 tiles only: no per-item and per-call costs.
    NoKernelOverheads,
}

impl Variant {
    pub const ALL: [Variant; 5] = [Variant::Full, Variant::ConstantEfficiency, Variant::GlobalLayout, Variant::NoGlue, Variant::NoKernelOverheads];
    pub fn describe(self) -> &'static str {
        match self {
            Variant::Full => "full model",
            Variant::ConstantEfficiency => "one efficiency per pass instead of FA3 tiles",
            Variant::GlobalLayout => "attnbench's layout instead of per-document zigzag",
            Variant::NoGlue => "without glue work",
            Variant::NoKernelOverheads => "FA3 tiles without per-item/per-call costs",
        }
    }
}

/// A case simulated once, ready to be re-timed under other CP parameters: the schedule, the
/// attention seconds per step and rank, and the glue traffic per step and rank.
pub struct Prepared {
    schedule: Schedule,
    compute: Vec<Vec<f64>>,
    /// (bytes, launches) of glue per step and rank.
    glue: Vec<Vec<(f64, f64)>>,
    outer_wait: usize,
    flops: f64,
}

/// The spec of a published point at pack `seed` with `variant`'s implementation.
pub fn spec_of(point: &CpPoint, seed: u64, variant: Variant) -> Option<SimSpec> {
    let c = config(&point.strategy, point.world)?;
    let (pattern, params) = mask_of(&point.mask, seed);
    let kernel = Case::kernel("sliced", &pattern, params, TOKENS_PER_GPU * point.world, HEADS, HEAD_DIM, DType::Bf16, point.pass, DeviceKind::Cuda);
    let options = CpOptions {
        ulysses_degree: (c.ulysses_degree > 0).then_some(c.ulysses_degree),
        inner_ring: (c.inner_ring > 0).then_some(c.inner_ring),
        sharding: None,
    };
    Some(SimSpec {
        case: Case::cp(c.strategy, "sliced", point.world, options, kernel),
        topology: topology(&H100_CP),
        calibrated: false,
        implementation: if variant == Variant::GlobalLayout { Implementation::Attnbench } else { Implementation::Longca },
    })
}

/// Seeds of the packs a point averages: 42, 43, … (`packs` of them) for document masks, 42 otherwise.
pub fn seeds(mask: &str, packs: usize) -> Vec<u64> {
    let n = if mask.ends_with("_document") { packs.max(1) } else { 1 };
    (0..n as u64).map(|i| 42 + i).collect()
}

fn compute_model(variant: Variant, pass: Pass, kernel: &Fa3Model) -> ComputeModel {
    match variant {
        Variant::ConstantEfficiency => {
            // FA3's efficiency on a long dense full call of this pass.
            let p = KernelPoint { mask: "full".into(), pass, seqlen: 32768, tflops: 0.0 };
            let eff = kernel_tflops(kernel, &p) / kernel.peak_tflops;
            let launch = if pass == Pass::Bwd { kernel.varlen_bwd.launch_us } else { kernel.varlen_fwd.launch_us };
            ComputeModel::Roofline(Roofline { efficiency: eff, launch_us: launch, ..glue_roofline(&H100_CP) })
        }
        Variant::NoKernelOverheads => {
            let mut k = *kernel;
            for p in [&mut k.fwd, &mut k.bwd, &mut k.varlen_fwd, &mut k.varlen_bwd] {
                p.item_us = 0.0;
                p.launch_us = 0.0;
            }
            fa3_compute(k, &H100_CP)
        }
        _ => fa3_compute(*kernel, &H100_CP),
    }
}

/// Simulates a point at one pack: plan, attention times (independent of the CP parameters) and glue
/// traffic.
pub fn prepare(point: &CpPoint, seed: u64, variant: Variant, kernel: &Fa3Model) -> Result<Option<Prepared>, SimError> {
    let Some(spec) = spec_of(point, seed, variant) else { return Ok(None) };
    let p = setup(&spec)?;
    let mut timer = PieceTimer::new(compute_model(variant, point.pass, kernel), HEAD_DIM, p.attention);
    let compute = compute_times(&p, spec.implementation, &mut timer)?;
    let glue = p
        .schedule
        .steps
        .iter()
        .map(|st| {
            let mut per = vec![(0.0, 0.0); spec.case.world_size];
            for g in &st.glue {
                let (b, l) = g.op.traffic(&p.layout);
                per[g.rank].0 += b as f64;
                per[g.rank].1 += l as f64;
            }
            per
        })
        .collect();
    let outer_wait = p.engine.outer_prefetch_steps();
    let flops = pass_flops(p.mask.area() as u128 * HEADS.q as u128, HEAD_DIM, 1, point.pass);
    Ok(Some(Prepared { schedule: p.schedule, compute, glue, outer_wait, flops }))
}

/// TFLOPS/GPU of a prepared case under `cp` (no glue for [`Variant::NoGlue`]).
pub fn evaluate(prep: &Prepared, cp: &CpParams, variant: Variant) -> f64 {
    let topo = topology(cp);
    let bw = H100_MEM_TBPS * 1e12 * cp.mem_efficiency;
    let glue: Vec<Vec<f64>> = prep
        .glue
        .iter()
        .map(|per| per.iter().map(|&(b, l)| if variant == Variant::NoGlue { 0.0 } else { b / bw + l * cp.launch_us * 1e-6 }).collect())
        .collect();
    let steps = predict(&topo, &prep.schedule, &prep.compute, &glue, prep.outer_wait);
    let total: f64 = steps.iter().map(|s| s.time_s).sum();
    prep.flops / total / prep.schedule.world as f64 / 1e12
}

/// A published point with its prepared packs.
pub struct PreparedPoint {
    pub point: CpPoint,
    pub config: Config,
    packs: Vec<Prepared>,
}

impl PreparedPoint {
    /// Mean over packs of the projected TFLOPS/GPU (the figures average per-pack TFLOPS).
    pub fn tflops(&self, cp: &CpParams, variant: Variant) -> f64 {
        self.packs.iter().map(|p| evaluate(p, cp, variant)).sum::<f64>() / self.packs.len() as f64
    }
}

/// One (point, pack) preparation: `None` where the strategy has no such case.
type Job = Result<Option<Prepared>, SimError>;

/// Prepares every implemented point passing `keep`, `packs` packs each for document masks. The
/// (point, pack) jobs are independent, so they run on every core (`std::thread::available_parallelism`):
/// with 20 packs this is most of `--compare-published`'s time.
pub fn prepare_points(variant: Variant, packs: usize, kernel: &Fa3Model, keep: &dyn Fn(&CpPoint) -> bool) -> Result<Vec<PreparedPoint>, SimError> {
    let points: Vec<CpPoint> = cp_points().into_iter().filter(|p| IMPLEMENTED.contains(&p.strategy.as_str()) && keep(p)).collect();
    let jobs: Vec<(usize, u64)> = points.iter().enumerate().flat_map(|(i, p)| seeds(&p.mask, packs).into_iter().map(move |s| (i, s))).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, Job)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(i, seed)) = jobs.get(j) else { break mine };
                        mine.push((j, prepare(&points[i], seed, variant, kernel)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    // Back in job order, so the packs of a point keep their seed order and the result is deterministic.
    done.sort_unstable_by_key(|d| d.0);
    let mut out: Vec<PreparedPoint> = points
        .into_iter()
        .map(|point| {
            let config = config(&point.strategy, point.world).expect("implemented");
            PreparedPoint { point, config, packs: Vec::new() }
        })
        .collect();
    for (j, r) in done {
        if let Some(p) = r? {
            out[jobs[j].0].packs.push(p);
        }
    }
    Ok(out)
}

/// Mean |relative error| of `points` under `cp`.
pub fn mean_abs_error(points: &[&PreparedPoint], cp: &CpParams, variant: Variant) -> f64 {
    points.iter().map(|p| (p.tflops(cp, variant) / p.point.tflops - 1.0).abs()).sum::<f64>() / points.len().max(1) as f64
}

/// Fits [`CpParams`] to the calibration points among `points` by coordinate descent over grids
/// (inter-node 10–200 GB/s step 5, memory efficiency 0.2–1.5 step 0.05, launch 0–40 µs step 1),
/// three sweeps from [`H100_CP`], minimising the mean |relative error|. Deterministic.
pub fn fit_cp(points: &[PreparedPoint], variant: Variant) -> (CpParams, f64) {
    let cal: Vec<&PreparedPoint> = points.iter().filter(|p| is_calibration(&p.point)).collect();
    let grids: [Vec<f64>; 3] =
        [(0..=38).map(|i| 10.0 + 5.0 * i as f64).collect(), (0..=26).map(|i| 0.2 + 0.05 * i as f64).collect(), (0..=40).map(|i| i as f64).collect()];
    let set = |c: &mut CpParams, k: usize, v: f64| match k {
        0 => c.inter_gbps = v,
        1 => c.mem_efficiency = v,
        _ => c.launch_us = v,
    };
    let mut best = H100_CP;
    let mut best_err = mean_abs_error(&cal, &best, variant);
    for _ in 0..3 {
        for (k, grid) in grids.iter().enumerate() {
            for &v in grid {
                let mut c = best;
                set(&mut c, k, v);
                let e = mean_abs_error(&cal, &c, variant);
                if e < best_err - 1e-12 {
                    best = c;
                    best_err = e;
                }
            }
        }
    }
    (best, best_err)
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CompRow {
    pub mask: String,
    pub pass: Pass,
    pub strategy: String,
    pub ours: String,
    pub world: usize,
    pub published: f64,
    pub projected: f64,
    /// projected / published − 1.
    pub error: f64,
    pub calibration: bool,
}

/// The comparison of every prepared point under `cp`.
pub fn compare(points: &[PreparedPoint], cp: &CpParams, variant: Variant) -> Vec<CompRow> {
    points
        .iter()
        .map(|p| {
            let projected = p.tflops(cp, variant);
            CompRow {
                mask: p.point.mask.clone(),
                pass: p.point.pass,
                strategy: p.point.strategy.clone(),
                ours: p.config.label(),
                world: p.point.world,
                published: p.point.tflops,
                projected,
                error: projected / p.point.tflops - 1.0,
                calibration: is_calibration(&p.point),
            }
        })
        .collect()
}

/// `full/causal` or `document`.
pub fn mask_group(mask: &str) -> &'static str {
    if mask.ends_with("_document") {
        "document"
    } else {
        "full/causal"
    }
}

/// Mean |error| and count per (calibration?, mask group).
pub type Summary = BTreeMap<(bool, &'static str), (f64, usize)>;

/// One trend: (mask, pass, strategy, published ratio, projected ratio).
pub type Trend = (String, Pass, String, f64, f64);

/// Mean |error| (and count) per (calibration or held-out, mask group).
pub fn summary(rows: &[CompRow]) -> Summary {
    let mut m: Summary = BTreeMap::new();
    for r in rows {
        let e = m.entry((r.calibration, mask_group(&r.mask))).or_default();
        e.0 += r.error.abs();
        e.1 += 1;
    }
    for v in m.values_mut() {
        v.0 /= v.1.max(1) as f64;
    }
    m
}

/// Orderings and trends on the document masks: for each (mask, pass, W) the best strategy published and
/// projected; for each (mask, pass, strategy) the ratio T(W_max)/T(W_min) published and projected.
pub struct Shape {
    pub best: Vec<(String, Pass, usize, String, String)>,
    pub trends: Vec<Trend>,
}

pub fn shape(rows: &[CompRow]) -> Shape {
    let mut groups: BTreeMap<(String, String, usize), Vec<&CompRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.mask.ends_with("_document")) {
        groups.entry((r.mask.clone(), r.pass.to_string(), r.world)).or_default().push(r);
    }
    let best = groups
        .iter()
        .map(|((m, _, w), v)| {
            let arg = |f: &dyn Fn(&CompRow) -> f64| v.iter().max_by(|a, b| f(a).total_cmp(&f(b))).map(|r| r.strategy.clone()).unwrap_or_default();
            let published = arg(&|r| r.published);
            // Projected ties (within TIE) count for the published best: at W = 8 USP and LoongTrain are
            // the same configuration.
            let top = v.iter().map(|r| r.projected).fold(0.0, f64::max);
            let tied: Vec<String> = v.iter().filter(|r| r.projected >= top * (1.0 - TIE)).map(|r| r.strategy.clone()).collect();
            let projected = if tied.contains(&published) { published.clone() } else { tied.join("/") };
            (m.clone(), v[0].pass, *w, published, projected)
        })
        .collect();
    let mut series: BTreeMap<(String, String, String), Vec<&CompRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.mask.ends_with("_document")) {
        series.entry((r.mask.clone(), r.pass.to_string(), r.strategy.clone())).or_default().push(r);
    }
    let trends = series
        .iter()
        .filter_map(|((m, _, s), v)| {
            let lo = v.iter().min_by_key(|r| r.world)?;
            let hi = v.iter().max_by_key(|r| r.world)?;
            (lo.world < hi.world).then(|| (m.clone(), lo.pass, s.clone(), hi.published / lo.published, hi.projected / lo.projected))
        })
        .collect();
    Shape { best, trends }
}

/// Projected values within this fraction of the projected best tie for best.
pub const TIE: f64 = 0.02;

/// Spearman rank correlation of two equally long samples (ties get their mean rank).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let rank = |x: &[f64]| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..x.len()).collect();
        idx.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
        let mut r = vec![0.0; x.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
                j += 1;
            }
            for k in i..=j {
                r[idx[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let (ra, rb) = (rank(a), rank(b));
    let n = a.len() as f64;
    let mean = (n - 1.0) / 2.0;
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - mean) * (y - mean)).sum();
    let va: f64 = ra.iter().map(|x| (x - mean).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mean).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

/// The comparison as markdown: per-point table (calibration points marked), summary, orderings and
/// trends.
pub fn markdown(rows: &[CompRow], cp: &CpParams, kernel: &Fa3Model, packs: usize) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Projected by the attnbench CP model (FA3 tile model, varlen calls: fwd × {:.3} + {:.1} µs/item + {:.0} µs/call, bwd × {:.3} + {:.1} µs/item + {:.0} µs/call; \
         inter-node {:.1} GB/s, glue at {:.2} × {:.2} TB/s + {:.0} µs/launch; implementation `longca`; {} pack(s) per document point).\n\n",
        kernel.varlen_fwd.efficiency,
        kernel.varlen_fwd.item_us,
        kernel.varlen_fwd.launch_us,
        kernel.varlen_bwd.efficiency,
        kernel.varlen_bwd.item_us,
        kernel.varlen_bwd.launch_us,
        cp.inter_gbps,
        cp.mem_efficiency,
        H100_MEM_TBPS,
        cp.launch_us,
        packs
    ));
    s.push_str("| mask | pass | strategy (ours) | W | published | projected | error | set |\n|:--|:--|:--|--:|--:|--:|--:|:--|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} ({}) | {} | {:.0} | {:.0} | {:+.0} % | {} |\n",
            r.mask,
            r.pass,
            r.strategy,
            r.ours,
            r.world,
            r.published,
            r.projected,
            r.error * 100.0,
            if r.calibration { "calibration" } else { "held-out" }
        ));
    }
    s.push_str("\n| set | masks | points | mean abs error |\n|:--|:--|--:|--:|\n");
    for ((cal, group), (e, n)) in summary(rows) {
        s.push_str(&format!("| {} | {} | {} | {:.1} % |\n", if cal { "calibration" } else { "held-out" }, group, n, e * 100.0));
    }
    // Where the held-out error on the document masks sits: per world size and per strategy.
    let held: Vec<&CompRow> = rows.iter().filter(|r| !r.calibration && r.mask.ends_with("_document")).collect();
    if !held.is_empty() {
        let mae = |f: &dyn Fn(&CompRow) -> bool| {
            let v: Vec<f64> = held.iter().filter(|r| f(r)).map(|r| r.error.abs()).collect();
            (v.iter().sum::<f64>() / v.len().max(1) as f64 * 100.0, v.len())
        };
        s.push_str("\nHeld-out document points, mean |error| by world size and by strategy (mean signed error in brackets):\n\n| group | points | mean abs error | mean error |\n|:--|--:|--:|--:|\n");
        let signed = |f: &dyn Fn(&CompRow) -> bool| {
            let v: Vec<f64> = held.iter().filter(|r| f(r)).map(|r| r.error).collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64 * 100.0
        };
        let mut worlds: Vec<usize> = held.iter().map(|r| r.world).collect();
        worlds.sort_unstable();
        worlds.dedup();
        for w in worlds {
            let (e, n) = mae(&|r: &CompRow| r.world == w);
            s.push_str(&format!("| W = {w} | {n} | {e:.1} % | {:+.1} % |\n", signed(&|r: &CompRow| r.world == w)));
        }
        for st in IMPLEMENTED {
            let (e, n) = mae(&|r: &CompRow| r.strategy == st);
            if n > 0 {
                s.push_str(&format!("| {st} | {n} | {e:.1} % | {:+.1} % |\n", signed(&|r: &CompRow| r.strategy == st)));
            }
        }
    }
    let sh = shape(rows);
    let agree = sh.best.iter().filter(|b| b.3 == b.4).count();
    s.push_str(&format!(
        "\nBest strategy on the document masks (published / projected; projected values within {:.0} % of the best tie): {agree} of {} agree.\n\n",
        TIE * 100.0,
        sh.best.len()
    ));
    s.push_str("| mask | pass | W | published best | projected best |\n|:--|:--|--:|:--|:--|\n");
    for (m, p, w, a, b) in &sh.best {
        s.push_str(&format!("| {m} | {p} | {w} | {a} | {b}{} |\n", if a == b { "" } else { " ✗" }));
    }
    let down = sh.trends.iter().filter(|t| (t.3 < 1.0) == (t.4 < 1.0)).count();
    s.push_str(&format!(
        "\nChange with W on the document masks (T at the largest W / T at the smallest): direction agrees for {down} of {} series. \
         Per mask and pass, the strategies ranked by how much they degrade (Spearman ρ between the published and projected ratios; \
         1 = same order) and the strongest degrader:\n\n",
        sh.trends.len()
    ));
    s.push_str("| mask | pass | ρ | strongest degrader published / projected |\n|:--|:--|--:|:--|\n");
    let mut groups: BTreeMap<(String, String), Vec<&Trend>> = BTreeMap::new();
    for t in &sh.trends {
        groups.entry((t.0.clone(), t.1.to_string())).or_default().push(t);
    }
    for ((m, p), v) in &groups {
        let a: Vec<f64> = v.iter().map(|t| t.3).collect();
        let b: Vec<f64> = v.iter().map(|t| t.4).collect();
        let worst = |x: &[f64]| v[x.iter().enumerate().min_by(|i, j| i.1.total_cmp(j.1)).map(|i| i.0).unwrap_or(0)].2.clone();
        s.push_str(&format!("| {m} | {p} | {:.2} | {} / {} |\n", spearman(&a, &b), worst(&a), worst(&b)));
    }
    s.push_str("\n| mask | pass | strategy | published ratio | projected ratio |\n|:--|:--|:--|--:|--:|\n");
    for (m, p, st, a, b) in &sh.trends {
        s.push_str(&format!("| {m} | {p} | {st} | {a:.2} | {b:.2} |\n"));
    }
    s
}

/// The kernel-level table: modelled vs published FA3 TFLOPS for every kernel bar (dense bars are the
/// kernel fit's points, document bars the check).
pub fn kernel_markdown(m: &Fa3Model) -> String {
    let mut s = String::from("| mask | pass | tokens | published | model | error | role |\n|:--|:--|--:|--:|--:|--:|:--|\n");
    let mut errs: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for p in kernel_points() {
        let t = kernel_tflops(m, &p);
        let e = t / p.tflops - 1.0;
        let role = kernel_role(&p);
        let x = errs.entry(role).or_default();
        x.0 += e.abs();
        x.1 += 1;
        s.push_str(&format!("| {} | {} | {} | {:.0} | {:.0} | {:+.0} % | {} |\n", p.mask, p.pass, p.seqlen, p.tflops, t, e * 100.0, role));
    }
    for (role, (e, n)) in errs {
        s.push_str(&format!("\n{role}: mean |error| {:.1} % over {n} bars.", e / n as f64 * 100.0));
    }
    s.push('\n');
    s
}

/// Held-out mean |error| per mask group for every ablation variant, each refitted on the calibration
/// points: (variant, fitted parameters, calibration error, held-out error per group).
/// `full` is the full model's prepared points (the caller has them already; preparing is the slow part).
pub fn ablations(
    full: &[PreparedPoint],
    packs: usize,
    kernel: &Fa3Model,
    keep: &dyn Fn(&CpPoint) -> bool,
) -> Result<Vec<(Variant, CpParams, Summary)>, SimError> {
    let mut out = Vec::new();
    for v in Variant::ALL {
        let prepared;
        let pts = if v == Variant::Full {
            full
        } else {
            prepared = prepare_points(v, packs, kernel, keep)?;
            &prepared
        };
        let (cp, _) = fit_cp(pts, v);
        out.push((v, cp, summary(&compare(pts, &cp, v))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_parse_and_cover_the_figures() {
        let cp = cp_points();
        // 4 masks × 2 passes × 4 worlds × 8 strategies.
        assert_eq!(cp.len(), 256);
        for s in IMPLEMENTED {
            assert_eq!(cp.iter().filter(|p| p.strategy == s).count(), 32, "{s}");
        }
        assert!(cp.iter().all(|p| p.tflops > 0.0 && p.tflops < 989.0));
        let k = kernel_points();
        assert_eq!(k.len(), 48);
        assert_eq!(cp.iter().filter(|p| is_calibration(p) && IMPLEMENTED.contains(&p.strategy.as_str())).count(), 40);
    }

    #[test]
    fn spearman_ranks() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn loongtrain_windows_follow_the_benchmark() {
        assert_eq!([1, 2, 4, 8].map(loongtrain_inner), [1, 2, 2, 4]);
        assert_eq!(config("loongtrain", 64).unwrap(), Config { strategy: "usp", ulysses_degree: 8, inner_ring: 4 });
        assert_eq!(config("usp", 8).unwrap().ulysses_degree, 8);
        assert!(config("magi_attn-native", 8).is_none());
    }

    /// Preparing on several threads gives each point its packs in seed order, exactly as one thread
    /// preparing them one by one would (the comparison must not depend on the core count).
    #[test]
    fn parallel_preparation_matches_one_by_one() {
        let kernel = h100_fa3();
        let keep = |p: &CpPoint| p.mask == "causal_document" && p.world == 8 && p.pass == Pass::Fwd;
        let points = prepare_points(Variant::Full, 3, &kernel, &keep).unwrap();
        assert_eq!(points.len(), IMPLEMENTED.len());
        for pp in &points {
            let serial: Vec<Prepared> = seeds(&pp.point.mask, 3).into_iter().filter_map(|s| prepare(&pp.point, s, Variant::Full, &kernel).unwrap()).collect();
            assert_eq!(pp.packs.len(), 3, "{}", pp.point.strategy);
            for (a, b) in pp.packs.iter().zip(&serial) {
                assert_eq!(evaluate(a, &H100_CP, Variant::Full), evaluate(b, &H100_CP, Variant::Full), "{}", pp.point.strategy);
            }
            // The packs differ from each other (else seed order could not matter).
            assert_ne!(evaluate(&pp.packs[0], &H100_CP, Variant::Full), evaluate(&pp.packs[1], &H100_CP, Variant::Full));
        }
    }

    /// The committed kernel parameters are what the fit gives.
    #[test]
    fn committed_kernel_parameters_are_the_fit() {
        let m = fit_kernel(&kernel_points());
        let c = h100_fa3();
        for (a, b) in [(m.fwd, c.fwd), (m.bwd, c.bwd), (m.varlen_fwd, c.varlen_fwd), (m.varlen_bwd, c.varlen_bwd)] {
            assert!(
                (a.efficiency - b.efficiency).abs() < 1e-9 && (a.item_us - b.item_us).abs() < 1e-9 && (a.launch_us - b.launch_us).abs() < 1e-9,
                "{a:?} vs {b:?}"
            );
        }
    }
}
