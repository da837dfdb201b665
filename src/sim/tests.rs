//! Checks that the virtual ranks compute exactly what the real strategies compute, that imbalance is
//! the analytic one, and that a measured simulation is self-consistent.

use super::compute::{ComputeModel, Roofline};
use super::*;
use crate::cp::registry::STRATEGIES;
use crate::cp::usp::UspPlan;
use crate::sim::comm_model::preset;

fn spec(strategy: &str, pattern: &str, params: &[(&str, &str)], seqlen: usize, world: usize, pass: Pass) -> SimSpec {
    let mut p = Params::new();
    for (k, v) in params {
        p = p.set(k, v);
    }
    SimSpec {
        strategy: strategy.into(),
        pattern: pattern.into(),
        params: p,
        seqlen,
        batch: 1,
        heads: HeadLayout { q: 8, kv: 2 },
        head_dim: 16,
        dtype: DType::Fp32,
        pass,
        device: DeviceKind::Cpu,
        world,
        ulysses_degree: 0,
        inner_ring: 0,
        sharding: None,
        topology: preset("h100").unwrap(),
        calibrated: false,
    }
}

fn roofline() -> ComputeModel {
    ComputeModel::Roofline(Roofline { peak_tflops: 989.0, efficiency: 0.6, launch_us: 10.0, device: "H100" })
}

const MASKS: [(&str, &[(&str, &str)]); 4] = [("full", &[]), ("causal", &[]), ("causal_document", &[("doc_lens", "30,9,25")]), ("sliding_window", &[("window_left", "9"), ("window_right", "4")])];

/// Over every strategy, world 2–4 and four masks: the pieces the virtual ranks executed cover the mask
/// exactly once per query head and pass (Σ area·heads = mask area × Hq), each rank's work equals the
/// schedule's, and for the query-sharded strategies each rank's work equals shard.rs's area of its rows.
#[test]
fn virtual_ranks_compute_exactly_the_strategy_work() {
    for def in STRATEGIES {
        for world in [2usize, 4] {
            for (m, params) in MASKS {
                for pass in [Pass::Fwd, Pass::Fwdbwd] {
                    let sp = spec(def.name, m, params, 64, world, pass);
                    let p = plan(&sp).unwrap();
                    let mut timer = PieceTimer::new(roofline(), sp.head_dim);
                    compute_times(&p, &mut timer).unwrap();
                    let passes = if pass == Pass::Fwdbwd { 2 } else { 1 };
                    let total: u64 = timer.trace.iter().map(|&(_, a, h, _)| a * h as u64).sum();
                    assert_eq!(total, p.mask.area() * 8 * passes, "{} W={world} {m} {pass}", def.name);
                    let bwd: u64 = timer.trace.iter().filter(|t| t.3).map(|&(_, a, h, _)| a * h as u64).sum();
                    assert_eq!(bwd, if pass == Pass::Fwdbwd { p.mask.area() * 8 } else { 0 });
                    let mut per_rank = vec![0u64; world];
                    for &(r, a, h, b) in &timer.trace {
                        if !b {
                            per_rank[r] += a * h as u64;
                        }
                    }
                    let sched: Vec<u64> = p.schedule.work().iter().map(|w| w / passes).collect();
                    assert_eq!(per_rank, sched, "{} W={world} {m}", def.name);
                    if ["ring-p2p", "ring-p2p-zigzag", "ring-allgather", "double-ring"].contains(&def.name) {
                        let shard_areas: Vec<u64> = p.shard.areas(&p.mask).iter().map(|a| a * 8).collect();
                        assert_eq!(per_rank, shard_areas, "{} W={world} {m}", def.name);
                    }
                }
            }
        }
    }
}

/// The pieces of a ring-type rank are exactly the blocks the real executor's rotation computes: member
/// m's queries against the block of `origin(m, to, ti)`, in the same order (see usp::rotate_forward).
#[test]
fn ring_pieces_follow_the_executor_rotation() {
    for (name, world, inner) in [("ring-p2p", 4usize, 0usize), ("double-ring", 4, 2), ("ring-p2p-zigzag", 3, 0)] {
        let mut sp = spec(name, "full", &[], 48, world, Pass::Fwd);
        sp.inner_ring = inner;
        let p = plan(&sp).unwrap();
        let Engine::Usp(up) = p.engine else { panic!("usp engine") };
        let up: UspPlan = up;
        let mut i = 0;
        for to in 0..up.outer() {
            for ti in 0..up.inner {
                let step = &p.schedule.steps[i];
                for r in 0..world {
                    let piece = step.compute.iter().find(|pc| pc.rank == r).unwrap();
                    assert_eq!(piece.q, up.member_ranges(&p.shard, r));
                    assert_eq!(piece.k, up.member_ranges(&p.shard, up.origin(r, to, ti)), "{name} r={r} to={to} ti={ti}");
                }
                i += 1;
            }
        }
        assert_eq!(i, p.schedule.steps.len());
    }
}

#[test]
fn imbalance_is_analytic_for_causal_contiguous_and_zigzag() {
    for (s, w) in [(1024usize, 4usize), (4096, 8), (96, 2)] {
        let c = (s / w) as f64;
        let wf = w as f64;
        let want = (2.0 * c * wf - c + 1.0) / (wf * c + 1.0);
        let mut sp = spec("ring-p2p", "causal", &[], s, w, Pass::Fwd);
        let a = simulate(&sp, roofline()).unwrap();
        assert!((a.imbalance - want).abs() < 1e-12, "S={s} W={w}: {} vs {want}", a.imbalance);
        sp.strategy = "ring-p2p-zigzag".into();
        let z = simulate(&sp, roofline()).unwrap();
        assert_eq!(z.imbalance, 1.0);
        // The roofline compute time follows the work: the contiguous ring's busiest rank does more.
        assert!(a.compute_imbalance > z.compute_imbalance);
    }
}

#[test]
fn measured_simulation_is_self_consistent() {
    let sp = spec("ring-p2p-zigzag", "causal", &[], 64, 4, Pass::Fwdbwd);
    let rep = simulate(&sp, ComputeModel::Measured { device: tch::Device::Cpu, dtype: DType::Fp32, warmup: 0, repeats: 1 }).unwrap();
    assert_eq!(rep.steps.len(), 8);
    assert!(rep.total_s > 0.0);
    let sum: f64 = rep.steps.iter().map(|s| s.time_s).sum();
    assert!((sum - rep.total_s).abs() < 1e-15);
    // Each step is at least its slowest rank's compute.
    for s in &rep.steps {
        assert!(s.time_s >= s.compute_s.iter().copied().fold(0.0, f64::max));
    }
    // Zigzag causal: rank pieces at the same ring step have the same sub-masks up to symmetry, so far
    // fewer pieces are executed than requested.
    assert!(rep.pieces_executed < rep.pieces_requested, "{} of {}", rep.pieces_executed, rep.pieces_requested);
    assert!((rep.tflops_per_gpu - rep.flops / rep.total_s / 4.0 / 1e12).abs() < 1e-9);
    assert_eq!(rep.single_how, "measured");
    let row = to_row(&sp, &rep, "t", "cpu");
    assert_eq!((row.kind, row.timing_mode.as_str(), row.status), (CaseKind::Simulated, "model", Status::Ok));
    assert!(row.note.contains("uncalibrated") && row.note.contains("h100"));
}

#[test]
fn bad_input_names_the_flag() {
    let sp = spec("nope", "causal", &[], 64, 4, Pass::Fwd);
    assert!(matches!(simulate(&sp, roofline()), Err(SimError::Bad(m)) if m.contains("--strategy")));
    let mut sp = spec("usp", "causal", &[], 64, 4, Pass::Fwd);
    sp.ulysses_degree = 3;
    assert!(matches!(simulate(&sp, roofline()), Err(SimError::Bad(m)) if m.contains("--ulysses-degree")));
}
