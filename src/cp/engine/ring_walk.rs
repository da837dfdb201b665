//! The ring engine's degrees and its walk: what each ring member does at every step of a pass (which
//! KV block it computes against, which blocks and accumulators it exchanges with whom). Pure data, no
//! tensors: the engine's driver ([`super::ring`]) runs it and the schedule ([`super::ring_schedule`])
//! is written from it, so the two cannot drift apart.

use std::ops::Range;

use crate::cp::schedule::CpLayout;
use crate::cp::shard::Shard;
use crate::cp::CpError;

/// Degrees of the head × (inner × outer) ring decomposition. `ulysses · ring` = world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingDegrees {
    pub ulysses: usize,
    pub ring: usize,
    pub inner: usize,
}

/// One point-to-point exchange of a ring member: send a block to `send_to`, receive one from
/// `recv_from`; `incoming` is the member whose block (its shape) arrives. Members, not global ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    pub send_to: usize,
    pub recv_from: usize,
    pub incoming: usize,
}

/// What a ring member does at one step of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingStep {
    pub outer_round: usize,
    pub inner_step: usize,
    /// The member whose KV block this member's queries attend at this step.
    pub origin: usize,
    /// First step of a round (not the last round): the round's block goes to the outer neighbour,
    /// the next round's block is prefetched from the other one; waited at the end of the round.
    pub outer_prefetch: Option<Exchange>,
    /// Not the last step of a round: the held block goes to the inner neighbour, the next arrives;
    /// posted before the compute, waited after it.
    pub inner_pass: Option<Exchange>,
    /// Backward with an inner ring: after the compute the dK/dV accumulator follows its block.
    pub acc_pass: Option<Exchange>,
    /// Backward, last step of a round after the first: the round block's accumulator goes to its
    /// owner (`send_to`); this member's own accumulator arrives from the member that held its block.
    pub acc_return: Option<Exchange>,
    /// Last step of the round.
    pub round_end: bool,
}

impl RingDegrees {
    /// Validates the degrees against the world and head layout; errors name the flag to change.
    pub fn new(world: usize, ulysses: usize, inner: usize, layout: &CpLayout) -> Result<RingDegrees, CpError> {
        if ulysses == 0 || !world.is_multiple_of(ulysses) {
            return Err(CpError::Config(format!("--ulysses-degree {ulysses} must divide the world size {world}")));
        }
        let ring = world / ulysses;
        if inner == 0 || !ring.is_multiple_of(inner) {
            return Err(CpError::Config(format!("--inner-ring {inner} must divide the ring degree {ring} (world {world} / ulysses degree {ulysses})")));
        }
        if !layout.heads_q.is_multiple_of(ulysses) {
            return Err(CpError::Config(format!(
                "Ulysses degree {ulysses} must divide the query heads ({}); change --heads or --ulysses-degree",
                layout.heads_q
            )));
        }
        Ok(RingDegrees { ulysses, ring, inner })
    }

    pub fn outer(&self) -> usize {
        self.ring / self.inner
    }

    pub fn world(&self) -> usize {
        self.ulysses * self.ring
    }

    /// How many times each KV head is repeated before the all-to-all: 1 when U divides Hkv, else the
    /// smallest factor r of Hq/Hkv with U | Hkv·r (at most Hq/Hkv: full MHA expansion).
    pub fn kv_repeat(&self, layout: &CpLayout) -> usize {
        let group = layout.heads_q / layout.heads_kv;
        (1..=group).find(|r| group.is_multiple_of(*r) && (layout.heads_kv * r).is_multiple_of(self.ulysses)).unwrap_or(group)
    }

    /// Ring member whose KV block member `m` holds at outer round `to`, inner step `ti`.
    pub fn origin(&self, m: usize, to: usize, ti: usize) -> usize {
        let (i_n, o_n) = (self.inner, self.outer());
        let (o, i) = (m / i_n, m % i_n);
        ((o + o_n - to % o_n) % o_n) * i_n + (i + i_n - ti % i_n) % i_n
    }

    fn inner_next(&self, m: usize) -> usize {
        (m / self.inner) * self.inner + (m % self.inner + 1) % self.inner
    }
    fn inner_prev(&self, m: usize) -> usize {
        (m / self.inner) * self.inner + (m % self.inner + self.inner - 1) % self.inner
    }
    fn outer_next(&self, m: usize) -> usize {
        ((m / self.inner + 1) % self.outer()) * self.inner + m % self.inner
    }
    fn outer_prev(&self, m: usize) -> usize {
        ((m / self.inner + self.outer() - 1) % self.outer()) * self.inner + m % self.inner
    }
    /// The member whose round-`to` block is `m`'s own block.
    fn round_holder_of_mine(&self, m: usize, to: usize) -> usize {
        ((m / self.inner + to) % self.outer()) * self.inner + m % self.inner
    }

    /// Global rank of ring member `member`, Ulysses index `uly`.
    pub fn global(&self, member: usize, uly: usize) -> usize {
        member * self.ulysses + uly
    }

    /// Token ranges of ring member `m` (the ranges of its Ulysses group, in rank order).
    pub fn member_ranges(&self, shard: &Shard, m: usize) -> Vec<Range<usize>> {
        (0..self.ulysses).flat_map(|j| shard.ranges(self.global(m, j)).to_vec()).collect()
    }

    /// Every step of one pass of ring member `m`, in order (see the module doc). The forward ignores
    /// the accumulator moves.
    pub fn walk(&self, m: usize, backward: bool) -> Vec<RingStep> {
        let mut steps = Vec::with_capacity(self.ring);
        for to in 0..self.outer() {
            for ti in 0..self.inner {
                let round_end = ti + 1 == self.inner;
                let outer_prefetch = (ti == 0 && to + 1 < self.outer()).then(|| Exchange {
                    send_to: self.outer_next(m),
                    recv_from: self.outer_prev(m),
                    incoming: self.origin(m, to + 1, 0),
                });
                let inner_pass =
                    (!round_end).then(|| Exchange { send_to: self.inner_next(m), recv_from: self.inner_prev(m), incoming: self.origin(m, to, ti + 1) });
                let acc_pass = (backward && self.inner > 1).then(|| Exchange {
                    send_to: self.inner_next(m),
                    recv_from: self.inner_prev(m),
                    incoming: self.origin(m, to, (ti + 1) % self.inner),
                });
                let acc_return = (backward && round_end && to > 0).then(|| Exchange {
                    send_to: self.origin(m, to, 0),
                    recv_from: self.round_holder_of_mine(m, to),
                    incoming: m,
                });
                steps.push(RingStep {
                    outer_round: to,
                    inner_step: ti,
                    origin: self.origin(m, to, ti),
                    outer_prefetch,
                    inner_pass,
                    acc_pass,
                    acc_return,
                    round_end,
                });
            }
        }
        steps
    }
}
