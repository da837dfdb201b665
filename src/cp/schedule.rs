//! A strategy's schedule as plain data: for each step, which (query tokens × key tokens) pieces each
//! rank computes and which messages (bytes, from whom to whom) are in flight. Produced by a pure
//! `schedule(world, shard, mask, layout)` per strategy and consumed by the simulator (virtual ranks +
//! α–β model) and by tests that compare it with what the real run sent.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::flops::Pass;

/// The shape of a CP problem as a schedule needs it (no tensors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpLayout {
    pub batch: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    /// Bytes per element of q, k, v, out (2 bf16/fp16, 4 fp32, 8 fp64).
    pub elem_bytes: usize,
    pub pass: Pass,
}

impl CpLayout {
    /// Bytes of the LSE per element: f32, f64 for f64 inputs (the attention core's convention).
    pub fn lse_bytes(&self) -> usize {
        if self.elem_bytes == 8 {
            8
        } else {
            4
        }
    }
    /// Bytes per element of gradient accumulators travelling between ranks (f32, f64 for f64).
    pub fn acc_bytes(&self) -> usize {
        self.elem_bytes.max(4)
    }
}

/// One block of attention a rank computes in a step: its query tokens against a key set, over
/// `heads_q` query heads. `area` is the attended pairs per head (exact, from the mask).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Piece {
    pub rank: usize,
    pub q: Vec<Range<usize>>,
    pub k: Vec<Range<usize>>,
    pub heads_q: usize,
    pub area: u64,
    /// FLOPs of this piece for the step's pass (4·area·heads·D·B, × 2.5 in backward steps).
    pub flops: f64,
}

/// A point-to-point message (collectives are written as their messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub src: usize,
    pub dst: usize,
    pub bytes: u64,
    /// What moves: `kv`, `dkv`, `a2a-qkv`, …
    pub what: String,
    /// True when the strategy posts it before the step's compute and waits after it (overlap).
    pub overlapped: bool,
}

/// Memory-bound work a rank runs on its compute stream around the attention calls: the LSE merge of
/// a partial output into the running one, gradient accumulation, and the copies of re-layouts,
/// stacks and concatenations. It runs on the same stream as the attention kernels, so it never hides
/// behind them (it does hide behind in-flight messages, like attention does). Every entry mirrors
/// tensor operations the real engine (`usp.rs`, `ring_allgather.rs`) runs; what is left out is
/// written down in docs/SIMULATION.md (zero fills of accumulators, LSE-sized re-layouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Glue {
    pub rank: usize,
    pub op: GlueOp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GlueOp {
    /// `RunningMerge::add(part_out, part_lse)` on out `[batch, heads, rows, head_dim]`.
    Merge { batch: usize, heads: usize, rows: usize, head_dim: usize },
    /// `acc += part.to_kind(acc)` over `elems` elements (dq and dK/dV accumulation).
    Accumulate { elems: u64 },
    /// One copy of `elems` elements of `elem_bytes` each (`contiguous`, `stack`, `cat`, `repeat`).
    Copy { elems: u64, elem_bytes: usize },
    /// A cast of `elems` elements between the input dtype and the accumulation dtype (free when they
    /// are the same).
    Cast { elems: u64 },
}

impl GlueOp {
    /// HBM bytes read plus written by the tensor operations of this entry, and the number of kernels
    /// they launch, for inputs of `layout.elem_bytes` accumulated in `layout.acc_bytes()`.
    ///
    /// Merge (`RunningMerge::add`) of N = B·H·rows·D output elements and L = B·H·rows LSE values,
    /// partial of e bytes into a running result of a bytes: `mul_` (2a·N) and `addcmul_` reading the
    /// partial ((2a + e)·N), plus ~15a·L for logaddexp, the −inf guard and the two weights: 18 bytes
    /// per output element for bf16, 20 for f32.
    pub fn traffic(&self, layout: &CpLayout) -> (u64, usize) {
        let (e, a) = (layout.elem_bytes as u64, layout.acc_bytes() as u64);
        let cast = e != a;
        match *self {
            GlueOp::Merge { batch, heads, rows, head_dim } => {
                let l = (batch * heads * rows) as u64;
                let n = l * head_dim as u64;
                ((4 * a + e) * n + 15 * a * l, 9)
            }
            GlueOp::Accumulate { elems } => (if cast { (e + a) * elems } else { 0 } + 3 * a * elems, if cast { 2 } else { 1 }),
            GlueOp::Copy { elems, elem_bytes } => (2 * elem_bytes as u64 * elems, 1),
            GlueOp::Cast { elems } => {
                if cast {
                    ((e + a) * elems, 1)
                } else {
                    (0, 0)
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// `fwd ring 2`, `bwd a2a`, …
    pub label: String,
    pub compute: Vec<Piece>,
    pub messages: Vec<Message>,
    /// Memory-bound work around the attention calls (merges, accumulation, copies).
    #[serde(default)]
    pub glue: Vec<Glue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub strategy: String,
    pub world: usize,
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Bytes each rank sends over the whole schedule.
    pub fn bytes_sent(&self) -> Vec<u64> {
        let mut v = vec![0u64; self.world];
        for s in &self.steps {
            for m in &s.messages {
                v[m.src] += m.bytes;
            }
        }
        v
    }

    /// Attended area (pairs × query heads) each rank computes: the per-rank work of the schedule.
    pub fn work(&self) -> Vec<u64> {
        let mut v = vec![0u64; self.world];
        for s in &self.steps {
            for p in &s.compute {
                v[p.rank] += p.area * p.heads_q as u64;
            }
        }
        v
    }

    /// FLOPs each rank computes.
    pub fn flops(&self) -> Vec<f64> {
        let mut v = vec![0f64; self.world];
        for s in &self.steps {
            for p in &s.compute {
                v[p.rank] += p.flops;
            }
        }
        v
    }
}
