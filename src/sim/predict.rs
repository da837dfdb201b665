//! The timeline of a schedule on N virtual ranks: per step, each rank's compute (from the piece
//! timer), its communication (from the α–β model), and the step's time.
//!
//! Rules (docs/SIMULATION.md):
//! - a rank's step time is `max(compute + glue, overlapped comm) + blocking comm`; messages the
//!   schedule marks `overlapped` are posted before the step's compute and waited after it; glue work
//!   (merges, accumulation, copies) shares the compute stream with the attention calls;
//! - a `kv-outer` message (double ring's prefetch of the next outer round) is posted at the round's
//!   first step and waited at its last, so it hides behind the whole round (`outer_wait_after` steps);
//! - steps synchronise on the slowest rank (a ring step waits for the neighbour's message, which waits
//!   for the neighbour's compute), so a step's time is the max over ranks; the total is the sum;
//! - point-to-point messages of one rank in one step share its links: per direction and link class
//!   (intra/inter) their times add up, and the busiest of those is the rank's communication time;
//! - collectives written as messages are costed as NCCL's algorithms: `a2a-*` as pairwise
//!   all-to-alls inside each group (one collective per `what`), `*allgather` as a ring all-gather,
//!   `*reduce-scatter` as a ring reduce-scatter, every member waiting for the collective.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::comm_model::Topology;
use crate::cp::schedule::{Message, Schedule};

/// One step as predicted.
#[derive(Debug, Clone, Serialize)]
pub struct StepTime {
    pub label: String,
    /// Per rank, seconds.
    pub compute_s: Vec<f64>,
    pub glue_s: Vec<f64>,
    pub comm_overlapped_s: Vec<f64>,
    pub comm_blocking_s: Vec<f64>,
    /// The step's time (slowest rank), seconds.
    pub time_s: f64,
    /// The rank that sets the step's time, and whether it was waiting for `compute` or `comm`.
    pub critical_rank: usize,
    pub bound: &'static str,
}

/// How a message is costed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    AllToAll,
    AllGather,
    ReduceScatter,
    P2p,
}

fn class(what: &str) -> Class {
    if what.starts_with("a2a") {
        Class::AllToAll
    } else if what.contains("allgather") {
        Class::AllGather
    } else if what.contains("reduce-scatter") {
        Class::ReduceScatter
    } else {
        Class::P2p
    }
}

/// Connected groups of ranks among the messages (the members of each collective instance).
fn groups(msgs: &[&Message]) -> Vec<Vec<usize>> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    fn find(p: &mut HashMap<usize, usize>, x: usize) -> usize {
        let px = *p.entry(x).or_insert(x);
        if px == x {
            return x;
        }
        let r = find(p, px);
        p.insert(x, r);
        r
    }
    for m in msgs {
        let (a, b) = (find(&mut parent, m.src), find(&mut parent, m.dst));
        if a != b {
            parent.insert(a.max(b), a.min(b));
        }
    }
    let keys: Vec<usize> = parent.keys().copied().collect();
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for k in keys {
        let r = find(&mut parent, k);
        by_root.entry(r).or_default().push(k);
    }
    by_root
        .into_values()
        .map(|mut v| {
            v.sort_unstable();
            v
        })
        .collect()
}

/// Communication seconds of each rank in one step: (overlapped, blocking, deferred `kv-outer`).
pub fn step_comm(topo: &Topology, world: usize, messages: &[Message]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut ov = vec![0.0; world];
    let mut bl = vec![0.0; world];
    let mut deferred = vec![0.0; world];
    // Collectives: per `what` (one collective each), per group of ranks.
    let mut by_what: BTreeMap<&str, Vec<&Message>> = BTreeMap::new();
    for m in messages.iter().filter(|m| class(&m.what) != Class::P2p) {
        by_what.entry(m.what.as_str()).or_default().push(m);
    }
    for (what, msgs) in by_what {
        for g in groups(&msgs) {
            let n = g.len();
            let in_g = |r: usize| g.binary_search(&r).is_ok();
            let mine: Vec<&&Message> = msgs.iter().filter(|m| in_g(m.src)).collect();
            let cost = match class(what) {
                Class::AllToAll => {
                    // alltoall_s takes the bytes a rank holds (1/n of it stays home).
                    let out = g.iter().map(|&r| mine.iter().filter(|m| m.src == r).map(|m| m.bytes as f64).sum::<f64>()).fold(0.0, f64::max);
                    topo.alltoall_s(&g, out * n as f64 / (n - 1).max(1) as f64)
                }
                Class::AllGather => topo.allgather_s(&g, mine.iter().map(|m| m.bytes as f64).fold(0.0, f64::max)),
                Class::ReduceScatter => topo.reduce_scatter_s(&g, mine.iter().map(|m| m.bytes as f64).fold(0.0, f64::max)),
                Class::P2p => unreachable!(),
            };
            let overlapped = mine.iter().all(|m| m.overlapped);
            for &r in &g {
                if overlapped {
                    ov[r] += cost;
                } else {
                    bl[r] += cost;
                }
            }
        }
    }
    // Point-to-point: per rank, per (direction, link class, overlap kind), times add up.
    let mut lanes: HashMap<(usize, bool, bool, u8), f64> = HashMap::new();
    for m in messages.iter().filter(|m| class(&m.what) == Class::P2p) {
        let link = topo.link(m.src, m.dst);
        let t = link.time_s(m.bytes as f64);
        let inter = topo.node_of(m.src) != topo.node_of(m.dst);
        let kind = if m.what == "kv-outer" {
            2u8
        } else if m.overlapped {
            1
        } else {
            0
        };
        *lanes.entry((m.src, true, inter, kind)).or_default() += t;
        *lanes.entry((m.dst, false, inter, kind)).or_default() += t;
    }
    for ((r, _, _, kind), t) in lanes {
        let slot = match kind {
            2 => &mut deferred[r],
            1 => &mut ov[r],
            _ => &mut bl[r],
        };
        *slot = slot.max(t);
    }
    (ov, bl, deferred)
}

/// Predicts every step. `compute_s[step][rank]` and `glue_s[step][rank]` come from the piece timer;
/// `outer_wait_after` is the number of steps after the posting step at which a `kv-outer` message is
/// waited (inner ring size − 1).
pub fn predict(topo: &Topology, schedule: &Schedule, compute_s: &[Vec<f64>], glue_s: &[Vec<f64>], outer_wait_after: usize) -> Vec<StepTime> {
    let world = schedule.world;
    let mut out: Vec<StepTime> = Vec::with_capacity(schedule.steps.len());
    // (due step, rank, absolute time the message lands)
    let mut pending: Vec<(usize, usize, f64)> = Vec::new();
    let mut clock = 0.0f64;
    for (si, step) in schedule.steps.iter().enumerate() {
        let (ov, bl, deferred) = step_comm(topo, world, &step.messages);
        for (r, &t) in deferred.iter().enumerate() {
            if t > 0.0 {
                pending.push((si + outer_wait_after, r, clock + t));
            }
        }
        let c: Vec<f64> = compute_s[si].iter().zip(&glue_s[si]).map(|(a, g)| a + g).collect();
        let mut best = (0.0f64, 0usize, "compute");
        for r in 0..world {
            let mut t = c[r].max(ov[r]) + bl[r];
            let mut bound = if c[r] >= ov[r] && c[r] >= bl[r] { "compute" } else { "comm" };
            for &(due, pr, lands) in &pending {
                if due == si && pr == r && lands - clock > t {
                    t = lands - clock;
                    bound = "comm";
                }
            }
            if t > best.0 || r == 0 {
                best = (t, r, bound);
            }
        }
        pending.retain(|&(due, _, _)| due > si);
        clock += best.0;
        out.push(StepTime {
            label: step.label.clone(),
            compute_s: compute_s[si].clone(),
            glue_s: glue_s[si].clone(),
            comm_overlapped_s: ov,
            comm_blocking_s: bl,
            time_s: best.0,
            critical_rank: best.1,
            bound: best.2,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cp::schedule::Step;
    use crate::sim::comm_model::preset;

    fn msg(src: usize, dst: usize, bytes: u64, what: &str, overlapped: bool) -> Message {
        Message { src, dst, bytes, what: what.into(), overlapped }
    }

    #[test]
    fn overlapped_ring_step_is_max_of_compute_and_comm() {
        let t = preset("h100").unwrap();
        let m: Vec<Message> = (0..4).map(|r| msg(r, (r + 1) % 4, 450_000_000, "kv", true)).collect();
        let s = Schedule { strategy: "x".into(), world: 4, steps: vec![Step { label: "fwd ring 0.0".into(), compute: vec![], messages: m, glue: vec![] }] };
        let comm = t.intra.time_s(450e6);
        // Compute shorter than comm: the step waits for the message.
        let p = predict(&t, &s, &[vec![0.5e-3; 4]], &[vec![0.0; 4]], 0);
        assert!((p[0].time_s - comm).abs() < 1e-12 && p[0].bound == "comm");
        // Compute longer: communication is hidden.
        let p = predict(&t, &s, &[vec![0.1, 0.1, 0.2, 0.1]], &[vec![0.0; 4]], 0);
        assert_eq!((p[0].time_s, p[0].critical_rank, p[0].bound), (0.2, 2, "compute"));
        // Glue runs on the compute stream: it adds to the rank's compute, and still hides the message.
        let p = predict(&t, &s, &[vec![0.1, 0.1, 0.2, 0.1]], &[vec![0.0, 0.15, 0.0, 0.0]], 0);
        assert_eq!((p[0].time_s, p[0].critical_rank, p[0].bound), (0.25, 1, "compute"));
        let p = predict(&t, &s, &[vec![0.2e-3; 4]], &[vec![0.2e-3; 4]], 0);
        assert!((p[0].time_s - comm).abs() < 1e-12 && p[0].bound == "comm", "{p:?}");
    }

    #[test]
    fn blocking_messages_add_and_collectives_use_the_model() {
        let t = preset("h100").unwrap();
        let m: Vec<Message> = (0..4).flat_map(|r| (0..4).filter(move |&j| j != r).map(move |j| msg(r, j, 1_000_000, "kv-allgather", false))).collect();
        let (ov, bl, _) = step_comm(&t, 4, &m);
        let want = t.allgather_s(&[0, 1, 2, 3], 1e6);
        assert!(ov.iter().all(|&x| x == 0.0));
        assert!(bl.iter().all(|&x| (x - want).abs() < 1e-15), "{bl:?} vs {want}");
        // Two all-to-all groups of 2 ({0,1}, {2,3}), 1 MB to the peer ⇒ a 2 MB all-to-all per group.
        let m = vec![
            msg(0, 1, 1_000_000, "a2a-q", false),
            msg(1, 0, 1_000_000, "a2a-q", false),
            msg(2, 3, 1_000_000, "a2a-q", false),
            msg(3, 2, 1_000_000, "a2a-q", false),
        ];
        let (_, bl, _) = step_comm(&t, 4, &m);
        assert!((bl[3] - t.alltoall_s(&[2, 3], 2e6)).abs() < 1e-15);
        assert!((bl[3] - t.intra.time_s(1e6)).abs() < 1e-15);
    }

    #[test]
    fn outer_prefetch_hides_behind_the_round() {
        let t = preset("h100").unwrap();
        // 16 ranks, 2 nodes: an inter-node 50 MB prefetch (1 ms) posted at step 0, waited at step 1.
        let outer: Vec<Message> = (0..16).map(|r| msg(r, (r + 8) % 16, 50_000_000, "kv-outer", true)).collect();
        let s = Schedule {
            strategy: "double-ring".into(),
            world: 16,
            steps: vec![
                Step { label: "a".into(), compute: vec![], messages: outer, glue: vec![] },
                Step { label: "b".into(), compute: vec![], messages: vec![], glue: vec![] },
            ],
        };
        let c = vec![vec![0.3e-3; 16], vec![0.3e-3; 16]];
        let p = predict(&t, &s, &c, &[vec![0.0; 16], vec![0.0; 16]], 1);
        assert!((p[0].time_s - 0.3e-3).abs() < 1e-12);
        assert!((p[0].time_s + p[1].time_s - t.inter.time_s(50e6)).abs() < 1e-12, "{p:?}");
        assert_eq!(p[1].bound, "comm");
    }
}
