//! Calibration of the model against the published figures: the FA3 kernel parameters fitted to the
//! kernel bars, and the CP parameters ([`CpParams`]) fitted ONLY to the forward figures at W = 8 and 16
//! ([`is_calibration`]); every published point prepared once per pack ([`Prepared`]) and re-timed
//! under other parameters, model variants for the ablations.

use serde::Serialize;

use super::comm_model::{longca_topology, CpParams, H100_CP};
use super::compute::{fa3_compute, glue_roofline, ComputeModel, PieceTimer, Roofline};
use super::fa3::{h100_fa3, CallShape, Fa3Model, Fa3Pass, Segment, H100_MEM_TBPS};
use super::predict::predict;
use super::published::{
    config, cp_points, is_calibration, mask_of, seeds, Config, CpPoint, KernelPoint, HEADS, HEAD_DIM, IMPLEMENTED, KERNEL_HEADS, TOKENS_PER_GPU,
};
use super::stats::{summary, CompRow, Summary};
use super::{compute_times, setup, Implementation, SimError, SimSpec};
use crate::case::{Case, CpOptions, DType, DeviceKind};
use crate::cp::schedule::Schedule;
use crate::flops::{pass_flops, Pass};
use crate::mask::doclen;

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
        topology: longca_topology(&H100_CP),
        calibrated: false,
        implementation: if variant == Variant::GlobalLayout { Implementation::Attnbench } else { Implementation::Longca },
    })
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
    let topo = longca_topology(cp);
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

/// One perturbation of the sensitivity table: which fitted quantity moves, by what factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Perturbation {
    /// Inter-node bandwidth × f.
    InterNode(f64),
    /// Glue bandwidth (memory efficiency) × f.
    GlueBandwidth(f64),
    /// Glue µs per launch × f.
    GlueLaunch(f64),
    /// FA3 µs per call and µs per work item (every kind of call) × f.
    KernelFixedCosts(f64),
}

impl Perturbation {
    /// Every quantity at −20 % and +20 %.
    pub fn all() -> Vec<Perturbation> {
        [0.8, 1.2]
            .into_iter()
            .flat_map(|f| [Perturbation::InterNode(f), Perturbation::GlueBandwidth(f), Perturbation::GlueLaunch(f), Perturbation::KernelFixedCosts(f)])
            .collect()
    }
    pub fn describe(self) -> String {
        let (what, f) = match self {
            Perturbation::InterNode(f) => ("inter-node bandwidth", f),
            Perturbation::GlueBandwidth(f) => ("glue bandwidth", f),
            Perturbation::GlueLaunch(f) => ("glue µs per launch", f),
            Perturbation::KernelFixedCosts(f) => ("FA3 µs per call and per work item", f),
        };
        format!("{what} {:+.0} %", (f - 1.0) * 100.0)
    }
}

/// `kernel` with its fixed costs (µs per call, µs per work item) of every kind of call scaled by `f`.
pub fn scale_kernel_fixed_costs(kernel: &Fa3Model, f: f64) -> Fa3Model {
    let mut k = *kernel;
    for p in [&mut k.fwd, &mut k.bwd, &mut k.varlen_fwd, &mut k.varlen_bwd] {
        p.item_us *= f;
        p.launch_us *= f;
    }
    k
}

/// The comparison rows of the full model with one fitted quantity perturbed (not refitted): how far
/// the projection leans on each. The CP quantities re-time the prepared points; the kernel's fixed
/// costs change the attention times, so those points are prepared again (the slow part).
pub fn sensitivity(
    full: &[PreparedPoint],
    packs: usize,
    kernel: &Fa3Model,
    cp: &CpParams,
    keep: &dyn Fn(&CpPoint) -> bool,
) -> Result<Vec<(Perturbation, Vec<CompRow>)>, SimError> {
    let mut out = Vec::new();
    for p in Perturbation::all() {
        let rows = match p {
            Perturbation::InterNode(f) => compare(full, &CpParams { inter_gbps: cp.inter_gbps * f, ..*cp }, Variant::Full),
            Perturbation::GlueBandwidth(f) => compare(full, &CpParams { mem_efficiency: cp.mem_efficiency * f, ..*cp }, Variant::Full),
            Perturbation::GlueLaunch(f) => compare(full, &CpParams { launch_us: cp.launch_us * f, ..*cp }, Variant::Full),
            Perturbation::KernelFixedCosts(f) => {
                let pts = prepare_points(Variant::Full, packs, &scale_kernel_fixed_costs(kernel, f), keep)?;
                compare(&pts, cp, Variant::Full)
            }
        };
        out.push((p, rows));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::published::kernel_points;
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

    /// The sensitivity's kernel perturbation scales exactly the fixed costs, of every kind of call,
    /// and leaves the efficiencies; ±20 % of every quantity is in the table.
    #[test]
    fn perturbations_scale_what_they_name() {
        let k = h100_fa3();
        let s = scale_kernel_fixed_costs(&k, 1.2);
        for (a, b) in [(k.fwd, s.fwd), (k.bwd, s.bwd), (k.varlen_fwd, s.varlen_fwd), (k.varlen_bwd, s.varlen_bwd)] {
            assert_eq!(a.efficiency, b.efficiency);
            assert!((b.item_us - 1.2 * a.item_us).abs() < 1e-12 && (b.launch_us - 1.2 * a.launch_us).abs() < 1e-12);
        }
        let all = Perturbation::all();
        assert_eq!(all.len(), 8);
        assert_eq!(Perturbation::InterNode(0.8).describe(), "inter-node bandwidth -20 %");
        assert_eq!(Perturbation::GlueBandwidth(1.2).describe(), "glue bandwidth +20 %");
    }

    /// Re-timing under a perturbed CP parameter moves the projection the way the parameter should:
    /// a slower inter-node link never speeds a 16-GPU point up, and a slower glue slows a ring point.
    #[test]
    fn sensitivity_moves_projections_in_the_right_direction() {
        let kernel = h100_fa3();
        let keep = |p: &CpPoint| p.mask == "causal_document" && p.world == 16 && p.pass == Pass::Fwd;
        let pts = prepare_points(Variant::Full, 1, &kernel, &keep).unwrap();
        let base = compare(&pts, &H100_CP, Variant::Full);
        let slow_net = compare(&pts, &CpParams { inter_gbps: H100_CP.inter_gbps * 0.8, ..H100_CP }, Variant::Full);
        let slow_glue = compare(&pts, &CpParams { mem_efficiency: H100_CP.mem_efficiency * 0.8, ..H100_CP }, Variant::Full);
        for ((b, n), g) in base.iter().zip(&slow_net).zip(&slow_glue) {
            assert!(n.projected <= b.projected + 1e-9, "{}: {} > {}", b.strategy, n.projected, b.projected);
            assert!(g.projected <= b.projected + 1e-9, "{}", b.strategy);
        }
        let ring = |rows: &[CompRow]| rows.iter().find(|r| r.strategy == "ring_p2p").unwrap().projected;
        assert!(ring(&slow_glue) < ring(&base));
    }
}
