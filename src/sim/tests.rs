//! Checks that the virtual ranks compute exactly what the real strategies compute, that imbalance is
//! the analytic one, and that a measured simulation is self-consistent.

use super::compute::{ComputeModel, Roofline};
use super::*;
use crate::attn::sliced::SLICED;
use crate::case::{DType, HeadLayout};
use crate::cp::engine::ring_walk::RingDegrees;
use crate::cp::registry::STRATEGIES;
use crate::cp::schedule::CpLayout;
use crate::cp::setup::fixtures::cp_case;
use crate::cp::strategies::usp::default_ulysses;
use crate::sim::comm_model::preset;
use crate::sim::published;

fn spec(strategy: &str, pattern: &str, params: &[(&str, &str)], seqlen: usize, world: usize, pass: Pass) -> SimSpec {
    SimSpec {
        case: cp_case(strategy, pattern, params, seqlen, world, HeadLayout { q: 8, kv: 2 }, pass),
        topology: preset("h100").unwrap(),
        calibrated: false,
        implementation: Implementation::Attnbench,
    }
}

/// The ring degrees a ring-engine strategy resolves to with default options (what the engine runs).
fn ring_degrees(name: &str, world: usize, layout: &CpLayout) -> RingDegrees {
    let (u, inner) = match name {
        "ulysses" => (world, 1),
        "usp" => {
            let u = default_ulysses(world, layout);
            (u, world / u)
        }
        "double-ring" => (1, crate::cp::strategies::double_ring::default_inner(world)),
        _ => (1, world),
    };
    RingDegrees::new(world, u, inner, layout).unwrap()
}

fn roofline() -> ComputeModel {
    ComputeModel::Roofline(Roofline { peak_tflops: 989.0, efficiency: 0.6, launch_us: 10.0, mem_tbps: 3.35, mem_efficiency: 0.8, device: "H100" })
}

const MASKS: [(&str, &[(&str, &str)]); 4] =
    [("full", &[]), ("causal", &[]), ("causal_document", &[("doc_lens", "30,9,25")]), ("sliding_window", &[("window_left", "9"), ("window_right", "4")])];

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
                    let p = setup(&sp).unwrap();
                    let mut timer = PieceTimer::new(roofline(), sp.case.head_dim, &SLICED);
                    compute_times(&p, Implementation::Attnbench, &mut timer).unwrap();
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
/// m's queries against the block of `origin(m, to, ti)`, in the same order (the ring driver's walk).
#[test]
fn ring_pieces_follow_the_executor_rotation() {
    for (name, world, inner) in [("ring-p2p", 4usize, 4usize), ("double-ring", 4, 2), ("ring-p2p-zigzag", 3, 3)] {
        let mut sp = spec(name, "full", &[], 48, world, Pass::Fwd);
        sp.case.cp.inner_ring = (name == "double-ring").then_some(inner);
        let p = setup(&sp).unwrap();
        let up = RingDegrees::new(world, 1, inner, &p.layout).unwrap();
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
        sp.case.strategy = "ring-p2p-zigzag".into();
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
    sp.case.cp.ulysses_degree = Some(3);
    assert!(matches!(simulate(&sp, roofline()), Err(SimError::Bad(m)) if m.contains("--ulysses-degree")));
}

/// Glue entries follow the pieces: one forward merge per forward piece (over the member's rows), two
/// accumulations per backward piece; the all-gather strategy merges nothing; relayout copies appear
/// only when there is an all-to-all.
#[test]
fn glue_follows_the_pieces() {
    use crate::cp::schedule::GlueOp;
    for def in STRATEGIES {
        for world in [2usize, 4] {
            let sp = spec(def.name, "causal", &[], 64, world, Pass::Fwdbwd);
            let p = setup(&sp).unwrap();
            for step in &p.schedule.steps {
                let bwd = step.label.starts_with("bwd");
                for r in 0..world {
                    let pieces: Vec<_> = step.compute.iter().filter(|pc| pc.rank == r).collect();
                    let merges: Vec<_> = step.glue.iter().filter(|g| g.rank == r && matches!(g.op, GlueOp::Merge { .. })).collect();
                    let accs = step.glue.iter().filter(|g| g.rank == r && matches!(g.op, GlueOp::Accumulate { .. })).count();
                    let all_gather = def.name == "ring-allgather";
                    match () {
                        _ if all_gather => assert!(merges.is_empty() && accs == 0),
                        _ if bwd => assert_eq!((merges.len(), accs), (0, 2 * pieces.len()), "{} {}", def.name, step.label),
                        _ => {
                            assert_eq!(merges.len(), pieces.len(), "{} {}", def.name, step.label);
                            for (g, pc) in merges.iter().zip(&pieces) {
                                let rows: usize = pc.q.iter().map(|q| q.len()).sum();
                                assert_eq!(g.op, GlueOp::Merge { batch: 1, heads: pc.heads_q, rows, head_dim: 16 });
                            }
                        }
                    }
                }
            }
            let copies = |label: &str| {
                p.schedule
                    .steps
                    .iter()
                    .filter(|s| s.label.starts_with(label))
                    .flat_map(|s| &s.glue)
                    .filter(|g| g.rank == 0 && matches!(g.op, GlueOp::Copy { .. }))
                    .count()
            };
            match def.name {
                // Only the stack of K and V per pass (no relayout, no repeat), and in backward the
                // stack of each piece's dK, dV.
                "ring-p2p" | "ring-p2p-zigzag" | "double-ring" => {
                    let bwd_pieces = p.schedule.steps.iter().filter(|s| s.label.starts_with("bwd")).flat_map(|s| &s.compute).filter(|pc| pc.rank == 0).count();
                    assert_eq!((copies("fwd"), copies("bwd")), (1, 1 + bwd_pieces), "{}", def.name)
                }
                // Stack + cat per all-gather; the reduce-scatter adds the dK/dV stack and split.
                "ring-allgather" => assert_eq!((copies("fwd"), copies("bwd")), (2, 4)),
                // With an all-to-all (Ulysses; USP once U > 1): q and K,V relayouts (two copies each)
                // plus the stack, then out and lse back (two each); a repeat of K,V when U > Hkv.
                _ => {
                    let up = ring_degrees(def.name, world, &p.layout);
                    let want = if up.ulysses > 1 { 4 + 1 + 4 + usize::from(up.kv_repeat(&p.layout) > 1) } else { 1 };
                    assert_eq!(copies("fwd"), want, "{} W={world}", def.name);
                }
            }
        }
    }
}

/// Traffic of the glue operations: the bf16 merge moves 4·4 + 2 = 18 bytes per output element plus
/// 15·4 per LSE value, the f32 merge 4·4 + 4 = 20; casts are free when no dtype changes.
#[test]
fn glue_traffic_counts_the_tensor_operations() {
    use crate::cp::schedule::GlueOp;
    let layout = |e: usize| CpLayout { batch: 1, heads_q: 8, heads_kv: 2, head_dim: 64, elem_bytes: e, pass: Pass::Fwd };
    let m = GlueOp::Merge { batch: 2, heads: 8, rows: 100, head_dim: 64 };
    let (n, l) = (2 * 8 * 100 * 64u64, 2 * 8 * 100u64);
    assert_eq!(m.traffic(&layout(2)), (18 * n + 60 * l, 9));
    assert_eq!(m.traffic(&layout(4)), (20 * n + 60 * l, 9));
    assert_eq!(GlueOp::Cast { elems: 10 }.traffic(&layout(4)), (0, 0));
    assert_eq!(GlueOp::Cast { elems: 10 }.traffic(&layout(2)), (60, 1));
    assert_eq!(GlueOp::Accumulate { elems: 10 }.traffic(&layout(2)), (60 + 120, 2));
    assert_eq!(GlueOp::Copy { elems: 10, elem_bytes: 4 }.traffic(&layout(2)), (80, 1));
}

/// The roofline glue of a ring-p2p rank at 8K tokens per GPU (bf16, 64:8 heads, D = 128, 8 ranks) is
/// its 8 merges, the final cast and one K,V stack at 0.8 × 3.35 TB/s plus their launches, and it
/// lands on the critical path (same stream as attention) although ring P2P hides all its
/// communication; Ulysses and the all-gather ring, which make one call, carry less glue.
#[test]
fn ring_glue_is_on_the_critical_path_at_8k_tokens_per_gpu() {
    let mut sp = spec("ring-p2p", "full", &[], 8192 * 8, 8, Pass::Fwd);
    sp.case.heads = HeadLayout { q: 64, kv: 8 };
    sp.case.head_dim = 128;
    sp.case.dtype = DType::Bf16;
    let rep = simulate(&sp, roofline()).unwrap();
    let (n, l) = (64 * 8192 * 128u64, 64 * 8192u64);
    let bw = 3.35e12 * 0.8;
    let want = 8.0 * ((18 * n + 60 * l) as f64 / bw + 9.0 * 10e-6) + ((6 * n) as f64 / bw + 10e-6) + ((2 * 8 * 8192 * 128 * 2 * 2) as f64 / bw + 10e-6);
    assert!((rep.rank_glue_s[3] - want).abs() < 1e-12, "{} vs {want}", rep.rank_glue_s[3]);
    let attention = rep.rank_compute_s[3];
    assert!((rep.total_s - (attention + want)).abs() < 1e-9, "{} vs {}", rep.total_s, attention + want);
    for other in ["ulysses", "ring-allgather"] {
        sp.case.strategy = other.into();
        let o = simulate(&sp, roofline()).unwrap();
        assert!(o.rank_glue_s[3] < want, "{other}: {o:?}");
    }
}

fn longca(strategy: &str, pattern: &str, params: &[(&str, &str)], seqlen: usize, world: usize, pass: Pass) -> SimSpec {
    let mut sp = spec(strategy, pattern, params, seqlen, world, pass);
    sp.implementation = Implementation::Longca;
    sp
}

/// Elements of a LongCA glue entry, which is always a copy (`longca_glue` costs every kernel as copies).
fn copy_elems(g: &Glue) -> u64 {
    match g.op {
        GlueOp::Copy { elems, .. } => elems,
        ref other => panic!("{other:?}"),
    }
}

/// The LongCA layout: every strategy's pieces, mapped onto the real documents, cover the mask exactly
/// once per query head and pass, and every rank does the same work (per-document zigzag balances
/// full and causal documents alike, up to chunk rounding).
#[test]
fn longca_pieces_cover_the_documents_and_balance_them() {
    let docs = [("doc_lens", "40,9,100,3,40")];
    for (name, u, inner) in
        [("ring-p2p-zigzag", None, None), ("ring-allgather", None, None), ("ulysses", None, None), ("usp", Some(2), None), ("usp", Some(2), Some(2))]
    {
        for pattern in ["full_document", "causal_document", "causal", "full"] {
            for pass in [Pass::Fwd, Pass::Fwdbwd] {
                let mut sp = longca(name, pattern, if pattern.ends_with("document") { &docs } else { &[] }, 192, 8, pass);
                sp.case.cp.ulysses_degree = u;
                sp.case.cp.inner_ring = inner;
                let p = setup(&sp).unwrap();
                let passes = if pass == Pass::Fwdbwd { 2 } else { 1 };
                let work: u64 = p.schedule.work().iter().sum();
                assert_eq!(work, p.mask.area() * 8 * passes, "{name} U={u:?} I={inner:?} {pattern} {pass}");
                if inner.is_some() {
                    assert!(p.engine.note(&p.layout).starts_with("ulysses=2 ring=4 inner=2 outer=2"), "{}", p.engine.note(&p.layout));
                }
                let f = ComputeModel::Fa3(compute::Fa3Compute {
                    kernel: published::h100_fa3(),
                    glue: match roofline() {
                        ComputeModel::Roofline(r) => r,
                        _ => unreachable!(),
                    },
                });
                let rep = simulate_with(&sp, &p, f).unwrap();
                assert!(rep.tflops_per_gpu > 0.0 && rep.note.contains("implementation longca") && rep.note.contains("per-document"));
            }
        }
    }
    // Per-document zigzag balances a causal document mask that contiguous sharding does not.
    let p = setup(&longca("ring-p2p-zigzag", "causal_document", &docs, 192, 4, Pass::Fwd)).unwrap();
    assert!(imbalance(&p.schedule.work()) < 1.1, "{:?}", p.schedule.work());
    let q = setup(&spec("ring-p2p", "causal_document", &docs, 192, 4, Pass::Fwd)).unwrap();
    assert!(imbalance(&q.schedule.work()) > 1.3, "{:?}", q.schedule.work());
}

/// The autograd backward: no forward tensors re-sent, gradients in the input dtype, ring dK/dV
/// overlapped; the forward is untouched.
#[test]
fn longca_backward_messages_follow_autograd() {
    let mut sp = longca("usp", "causal", &[], 128, 4, Pass::Fwdbwd);
    sp.case.cp.ulysses_degree = Some(2);
    sp.case.dtype = DType::Bf16;
    let ours = setup(&SimSpec { implementation: Implementation::Attnbench, ..sp.clone() }).unwrap();
    let theirs = setup(&sp).unwrap();
    let whats = |p: &CpSetup, bwd: bool| -> Vec<String> {
        let mut v: Vec<String> =
            p.schedule.steps.iter().filter(|s| s.label.starts_with("bwd") == bwd).flat_map(|s| s.messages.iter().map(|m| m.what.clone())).collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(whats(&ours, false), whats(&theirs, false));
    let tb = whats(&theirs, true);
    assert!(!tb.iter().any(|w| ["a2a-q", "a2a-kv", "a2a-out", "a2a-lse"].contains(&w.as_str())), "{tb:?}");
    assert!(tb.contains(&"a2a-dout".to_string()) && tb.contains(&"a2a-dq".to_string()));
    let bytes = |p: &CpSetup, what: &str| p.schedule.steps.iter().flat_map(|s| &s.messages).filter(|m| m.what == what).map(|m| m.bytes).sum::<u64>();
    // f32 accumulators (ours) vs bf16 gradients (autograd).
    assert_eq!(bytes(&ours, "a2a-dq"), 2 * bytes(&theirs, "a2a-dq"));
    assert_eq!(bytes(&ours, "dkv"), 2 * bytes(&theirs, "dkv"));
    assert!(theirs.schedule.steps.iter().flat_map(|s| &s.messages).filter(|m| m.what == "dkv").all(|m| m.overlapped));
}

/// The baselines' glue per strategy at 4 GPUs: Ulysses (`FA3UlysessAttnFunc`: one FA3 call, output and
/// gradients returned as they are) carries the all-to-all relayouts and the call's own unpad/pad, but
/// none of a ring's copies; USP with the same Ulysses degree and a ring of one runs `FA3RingAttnFunc`
/// and adds exactly the ring's: forward the K/V concatenation (one K/V copy), the zero-filled output
/// (one q copy) and its correction (an add: two q copies); backward the K/V copy into the first
/// buffer (one K/V copy), the dq update (two q copies), the dK/dV concatenation (one) and update
/// (two).
#[test]
fn longca_ulysses_has_no_ring_glue() {
    let glue = |strategy: &str, pass: Pass| {
        let mut sp = longca(strategy, "causal", &[], 128, 4, pass);
        if strategy == "usp" {
            sp.case.cp.ulysses_degree = Some(4);
        }
        sp.case.heads = HeadLayout { q: 8, kv: 4 };
        let p = setup(&sp).unwrap();
        let mut elems: Vec<u64> = p.schedule.steps.iter().flat_map(|s| &s.glue).filter(|g| g.rank == 0).map(copy_elems).collect();
        elems.sort();
        elems
    };
    // Rank 0 after the all-to-all: 2 query heads and 1 KV head over all 128 tokens, D = 16.
    let (q, kv) = (2 * 128 * 16u64, 128 * 16u64);
    let extra = |a: Vec<u64>, b: Vec<u64>| {
        let mut rest = b;
        for x in a {
            let i = rest.iter().position(|&y| y == x).expect("USP's glue contains Ulysses'");
            rest.remove(i);
        }
        rest
    };
    assert_eq!(extra(glue("ulysses", Pass::Fwd), glue("usp", Pass::Fwd)), vec![q, q, q, 2 * kv]);
    assert_eq!(extra(glue("ulysses", Pass::Bwd), glue("usp", Pass::Bwd)), vec![q, q, 2 * kv, 2 * kv, 2 * kv, 2 * kv]);
}

/// The ring forward corrects its output after the ring loop (`thd_out_correction` over every step's
/// output once all transfers are done), so the correction is one step after the last ring step, with
/// the zero-filled output (one q copy) and an add (two q copies) per ring piece of the rank, and
/// nothing to hide behind; Ulysses has none.
#[test]
fn longca_ring_output_correction_follows_the_loop() {
    let p = setup(&longca("ring-p2p-zigzag", "full", &[], 128, 4, Pass::Fwd)).unwrap();
    let labels: Vec<&str> = p.schedule.steps.iter().map(|s| s.label.as_str()).collect();
    let at = labels.iter().position(|l| *l == "fwd out correction").expect("a correction step");
    assert_eq!(at, labels.iter().rposition(|l| l.starts_with("fwd ring ")).unwrap() + 1, "{labels:?}");
    let step = &p.schedule.steps[at];
    assert!(step.compute.is_empty() && step.messages.is_empty());
    for r in 0..4 {
        let pieces: Vec<u64> = p
            .schedule
            .steps
            .iter()
            .flat_map(|s| &s.compute)
            .filter(|pc| pc.rank == r)
            .map(|pc| pc.heads_q as u64 * 16 * pc.q.iter().map(|q| q.len() as u64).sum::<u64>())
            .collect();
        let mut want: Vec<u64> = pieces.iter().flat_map(|&e| [e, e]).chain([pieces[0]]).collect();
        let mut got: Vec<u64> = step.glue.iter().filter(|g| g.rank == r).map(copy_elems).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "rank {r}");
    }
    let u = setup(&longca("ulysses", "full", &[], 128, 4, Pass::Fwd)).unwrap();
    assert!(u.schedule.steps.iter().all(|s| s.label != "fwd out correction"));
}

/// Each FA3 call gathers only the tokens it reads (`generate_valid_cu_seqlens`; the causal
/// all-gather's keys stop at its query chunk's end, `generate_cu_seqlens_kv_ag_causal`): rank 0 of 4
/// holds chunks 0 and 7 of 8 (16 tokens each of 128), so its two causal calls gather 16 and 128 keys
/// of K and of V, the full ones 128 each; and a causal ring step that uses half of q or of K/V copies
/// that half out first (`thd_read_half_tensor`).
#[test]
fn longca_calls_gather_only_the_tokens_they_read() {
    use crate::cp::schedule::GlueOp;
    let kv_gathers = |pattern: &str| {
        let mut sp = longca("ring-allgather", pattern, &[], 128, 4, Pass::Fwd);
        sp.case.heads = HeadLayout { q: 8, kv: 4 };
        let p = setup(&sp).unwrap();
        let compute = p.schedule.steps.iter().find(|s| !s.compute.is_empty()).unwrap();
        let per_token = 4 * 16;
        let mut sizes: Vec<u64> = compute
            .glue
            .iter()
            .filter(|g| g.rank == 0)
            .filter_map(|g| match g.op {
                GlueOp::Copy { elems, .. } => Some(elems / per_token),
                _ => None,
            })
            .collect();
        sizes.sort();
        sizes
    };
    // In units of one token's K (4 heads × D = 16). Per call: K and V gathered (the keys it reads);
    // the query half (16 tokens × 8 heads = 32 units) read, gathered, zero-filled, scattered and
    // collected; the LSE made and collected as 16 bf16 per token and head (4 units each).
    let with = |keys: [u64; 2]| {
        let mut v: Vec<u64> = keys.iter().flat_map(|&k| [k, k, 4, 4, 32, 32, 32, 32, 32]).collect();
        v.sort();
        v
    };
    assert_eq!(kv_gathers("causal"), with([16, 128]));
    assert_eq!(kv_gathers("full"), with([128, 128]));
    // Ring P2P, causal, 4 ranks of 32 tokens, 8 query and 2 KV heads, D = 16: rank 1's step 1
    // (origin 0) reads the first half of the K/V it received (one copy of K and V, 16 tokens) and
    // gathers those 16 keys; step 2 (origin 3) reads the second half of q (16 tokens), gathers it,
    // zero-fills and scatters the half-size output; a full mask reads no halves.
    let step_glue = |pattern: &str, label: &str| {
        let mut sp = longca("ring-p2p-zigzag", pattern, &[], 128, 4, Pass::Fwd);
        sp.case.heads = HeadLayout { q: 8, kv: 2 };
        let p = setup(&sp).unwrap();
        let mut v: Vec<u64> = p.schedule.steps.iter().filter(|s| s.label == label).flat_map(|s| &s.glue).filter(|g| g.rank == 1).map(copy_elems).collect();
        v.sort();
        v
    };
    let (q_tok, kv_tok) = (8 * 16u64, 2 * 16u64);
    let sorted = |mut v: Vec<u64>| {
        v.sort();
        v
    };
    assert_eq!(step_glue("causal", "fwd ring 0.1"), sorted(vec![32 * q_tok, 16 * kv_tok, 16 * kv_tok, 32 * q_tok, 32 * q_tok, 2 * 16 * kv_tok]));
    assert_eq!(step_glue("causal", "fwd ring 0.2"), sorted(vec![16 * q_tok, 32 * kv_tok, 32 * kv_tok, 16 * q_tok, 16 * q_tok, 16 * q_tok]));
    assert_eq!(step_glue("full", "fwd ring 0.2"), sorted(vec![32 * q_tok, 32 * kv_tok, 32 * kv_tok, 32 * q_tok, 32 * q_tok]));
}

/// The single ring's backward sends K/V and dK/dV in one buffer and waits for it before updating
/// dK/dV (`FA3RingAttnFunc.backward`: "wait until dKV is received", then `torch.cat` and
/// `bwd_dkv_update`), so every ring step is followed by a step of that work alone — nothing to hide
/// behind; the double ring (LoongTrain) moves dK/dV on groups of its own and has none.
#[test]
fn longca_ring_backward_updates_dkv_after_the_transfer() {
    let p = setup(&longca("ring-p2p-zigzag", "full", &[], 128, 4, Pass::Bwd)).unwrap();
    let labels: Vec<&str> = p.schedule.steps.iter().map(|s| s.label.as_str()).collect();
    let rings: Vec<usize> = labels.iter().enumerate().filter(|(_, l)| ring_position(l, "bwd").is_some()).map(|(k, _)| k).collect();
    assert_eq!(rings.len(), 4, "{labels:?}");
    let kv = 2 * p.engine.piece_heads_kv(&p.layout) as u64 * 16 * 32;
    for k in rings {
        let next = &p.schedule.steps[k + 1];
        assert_eq!(next.label, format!("{} dkv update", labels[k]));
        assert!(next.compute.is_empty() && next.messages.is_empty());
        for r in 0..4 {
            let copies: Vec<u64> = next.glue.iter().filter(|g| g.rank == r).map(copy_elems).collect();
            // `torch.cat` (one copy) and the update (an add: two).
            assert_eq!(copies, vec![kv; 3], "{} rank {r}", next.label);
        }
    }
    let mut sp = longca("usp", "full", &[], 128, 8, Pass::Bwd);
    sp.case.cp.ulysses_degree = Some(2);
    sp.case.cp.inner_ring = Some(2);
    assert!(setup(&sp).unwrap().schedule.steps.iter().all(|s| !s.label.ends_with("dkv update")));
}

/// The double ring copies each window's K/V into its inner buffer at the window's first step (plus
/// the concatenation at the very first step); with 12 inner steps the labels run to `0.11`, and a step
/// such as `0.10` is not a window's start.
#[test]
fn longca_double_ring_copies_kv_once_per_window() {
    use crate::cp::schedule::GlueOp;
    let mut sp = longca("double-ring", "full", &[], 192, 24, Pass::Fwd);
    sp.case.cp.inner_ring = Some(12);
    let p = setup(&sp).unwrap();
    assert!(p.schedule.steps.iter().any(|s| s.label == "fwd ring 0.10"));
    let kv = p
        .schedule
        .steps
        .iter()
        .flat_map(|s| &s.compute)
        .find(|pc| pc.rank == 0)
        .map(|pc| 2 * p.engine.piece_heads_kv(&p.layout) as u64 * 16 * pc.k.iter().map(|k| k.len() as u64).sum::<u64>())
        .unwrap();
    let kv_copies = |label: &str| {
        p.schedule
            .steps
            .iter()
            .filter(|s| s.label == label)
            .flat_map(|s| &s.glue)
            .filter(|g| g.rank == 0 && g.op == GlueOp::Copy { elems: kv, elem_bytes: p.layout.elem_bytes })
            .count()
    };
    assert_eq!((kv_copies("fwd ring 0.0"), kv_copies("fwd ring 1.0"), kv_copies("fwd ring 0.10"), kv_copies("fwd ring 0.1")), (2, 1, 0, 0));
}

#[test]
fn longca_needs_documents_of_one_kind() {
    let sp = longca("ring-p2p-zigzag", "sliding_window", &[("window_left", "9"), ("window_right", "4")], 64, 4, Pass::Fwd);
    assert!(matches!(setup(&sp), Err(SimError::Bad(m)) if m.contains("--impl longca")));
}

/// LoongTrain's backward (their double ring): each window's last dK/dV hop is exposed, the hop to the
/// next window hides behind its first step, the last window's outer hop stays exposed; a single ring
/// (plain USP) has none of these, and the forward is untouched.
#[test]
fn longca_double_ring_backward_exposes_each_windows_last_hop() {
    let mut sp = longca("usp", "causal", &[], 256, 8, Pass::Fwdbwd);
    sp.case.cp.ulysses_degree = Some(2);
    let plain = setup(&sp).unwrap();
    sp.case.cp.inner_ring = Some(2);
    let loong = setup(&sp).unwrap();
    let at = |p: &CpSetup, what: &str| -> Vec<(String, bool, u64)> {
        p.schedule.steps.iter().flat_map(|s| s.messages.iter().filter(|m| m.what == what).map(|m| (s.label.clone(), m.overlapped, m.bytes))).collect()
    };
    for what in ["dkv-window-end", "dkv-outer"] {
        assert!(at(&plain, what).is_empty(), "{what}");
    }
    // Ring of 4 = 2 windows × 2 inner steps; 8 ranks each send one of every kind at its step.
    let ends = at(&loong, "dkv-window-end");
    assert_eq!(ends.len(), 2 * 8);
    assert!(ends.iter().all(|(l, ov, _)| (l == "bwd ring 0.1" || l == "bwd ring 1.1") && !ov), "{ends:?}");
    let dkv = at(&loong, "dkv");
    assert!(ends.iter().all(|e| dkv.iter().any(|d| d.0 == e.0 && d.2 == e.2)), "as large as the window's dK/dV hop");
    let outer = at(&loong, "dkv-outer");
    let ret = at(&loong, "dkv-return");
    assert_eq!(outer.len(), ret.len());
    assert!(outer.iter().all(|(l, ov, b)| l == "bwd ring 1.0" && *ov && ret.iter().any(|r| r.2 == *b)), "{outer:?}");
    assert!(ret.iter().all(|(_, ov, _)| !ov));
    let fwd = |p: &CpSetup| p.schedule.steps.iter().filter(|s| s.label.starts_with("fwd")).map(|s| s.messages.len()).collect::<Vec<_>>();
    let mut sp0 = sp.clone();
    sp0.case.pass = Pass::Fwd;
    assert_eq!(fwd(&loong), fwd(&setup(&sp0).unwrap()));
}
