//! USP (unified sequence parallelism): Ulysses head-parallel all-to-all of degree U inside groups of
//! consecutive ranks, then ring attention of degree R = W/U across the groups — and the engine every
//! ring-type strategy runs on. With the ring itself split LoongTrain-style into an inner ring of I
//! members and an outer ring of O = R/I (double ring), the cases are:
//!
//! | strategy                  | U | R | I |
//! |---------------------------|---|---|---|
//! | `ring-p2p` (`-zigzag`)    | 1 | W | W |
//! | `ulysses`                 | W | 1 | 1 |
//! | `usp`                     | U | W/U | W/U |
//! | `double-ring`             | 1 | W | I |
//!
//! Rank layout: rank = ring_member·U + ulysses_index (a Ulysses group is U consecutive ranks, so it
//! stays inside a node). Ring member m holds the tokens of all ranks of its Ulysses group.
//!
//! Forward, per outer round `to` and inner step `ti`, ring member (o, i) computes its queries against
//! the KV block of member `origin = ((o − to) mod O)·I + (i − ti) mod I` with the sliced backend and
//! merges by LSE. The next inner block is posted (non-blocking send/recv) *before* the current compute
//! and waited after it; the next outer block is prefetched at the start of each round and waited at
//! its end — communication overlaps compute. Backward moves KV the same way; the dK/dV accumulator of a
//! block travels with it around the inner ring (after compute, one more move at the end of the round
//! brings it home) and is then sent straight to the block's owner.

use std::ops::Range;

use tch::{Kind, Tensor};

use super::comm::{Comm, SubComm};
use super::schedule::{CpLayout, Glue, GlueOp, Message, Piece, Schedule, Step};
use super::shard::{block_mask, total_len, Shard};
use super::{acc_kind, CpError, Problem};
use crate::attn::merge::RunningMerge;
use crate::attn::sliced::{sliced_backward, sliced_forward};
use crate::mask::Mask;

/// Degrees of the head × (inner × outer) ring decomposition. `ulysses · ring` = world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UspPlan {
    pub ulysses: usize,
    pub ring: usize,
    pub inner: usize,
}

impl UspPlan {
    /// Validates the degrees against the world and head layout; errors name the flag to change.
    pub fn new(world: usize, ulysses: usize, inner: usize, layout: &CpLayout) -> Result<UspPlan, CpError> {
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
        Ok(UspPlan { ulysses, ring, inner })
    }

    pub fn outer(&self) -> usize {
        self.ring / self.inner
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
    /// Owner of the block member `m` holds at the start of round `to`.
    fn round_owner(&self, m: usize, to: usize) -> usize {
        self.origin(m, to, 0)
    }
    /// The member whose round-`to` block is `m`'s own block.
    fn round_holder_of_mine(&self, m: usize, to: usize) -> usize {
        ((m / self.inner + to) % self.outer()) * self.inner + m % self.inner
    }

    fn global(&self, member: usize, uly: usize) -> usize {
        member * self.ulysses + uly
    }

    /// Token ranges of ring member `m` (the ranges of its Ulysses group, in rank order).
    pub fn member_ranges(&self, shard: &Shard, m: usize) -> Vec<Range<usize>> {
        (0..self.ulysses).flat_map(|j| shard.ranges(self.global(m, j)).to_vec()).collect()
    }
}

/// Runs the forward pass on this rank: local q `[B, Hq, S_r, D]`, k/v `[B, Hkv, S_r, D]` (the rank's
/// shard, ranges concatenated) → (out `[B, Hq, S_r, D]`, lse `[B, Hq, S_r]`).
pub fn forward(comm: &dyn Comm, p: &Problem, plan: &UspPlan, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor), CpError> {
    let g = Groups::new(comm, p, plan);
    let (k, v) = repeat_kv(k, v, plan.kv_repeat(&p.layout));
    let qh = g.to_heads(q)?;
    let kvh = Tensor::stack(&[g.to_heads(&k)?, g.to_heads(&v)?], 0);
    let (o, l) = rotate_forward(&g, p.mask, p.scale, &qh, &kvh)?;
    Ok((g.to_seq(&o)?, g.to_seq(&l)?))
}

/// Backward on this rank given the FINAL out/lse of its rows and dout (all seq-sharded like q).
/// Returns (dq, dk, dv) of the rank's shard.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    comm: &dyn Comm,
    p: &Problem,
    plan: &UspPlan,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
) -> Result<(Tensor, Tensor, Tensor), CpError> {
    let g = Groups::new(comm, p, plan);
    let rep = plan.kv_repeat(&p.layout);
    let (kr, vr) = repeat_kv(k, v, rep);
    let qh = g.to_heads(q)?;
    let kvh = Tensor::stack(&[g.to_heads(&kr)?, g.to_heads(&vr)?], 0);
    let oh = g.to_heads(out)?;
    let doh = g.to_heads(dout)?;
    let lh = g.to_heads(lse)?;
    let (dq, dkv) = rotate_backward(&g, p.mask, p.scale, &qh, &kvh, &oh, &lh, &doh)?;
    let dq = g.to_seq(&dq)?.to_kind(q.kind());
    let (mut dk, mut dv) = (g.to_seq(&dkv.get(0))?, g.to_seq(&dkv.get(1))?);
    if rep > 1 {
        let s = dk.size();
        let shape = [s[0], s[1] / rep as i64, rep as i64, s[2], s[3]];
        dk = dk.reshape(shape).sum_dim_intlist(&[2i64][..], false, dk.kind());
        dv = dv.reshape(shape).sum_dim_intlist(&[2i64][..], false, dv.kind());
    }
    Ok((dq, dk.to_kind(k.kind()), dv.to_kind(v.kind())))
}

fn repeat_kv(k: &Tensor, v: &Tensor, rep: usize) -> (Tensor, Tensor) {
    if rep == 1 {
        (k.shallow_clone(), v.shallow_clone())
    } else {
        (k.repeat_interleave_self_int(rep as i64, 1, None), v.repeat_interleave_self_int(rep as i64, 1, None))
    }
}

/// The two communicators of a rank and the token ranges of every ring member.
struct Groups<'a> {
    plan: UspPlan,
    uly: SubComm<'a>,
    ring: SubComm<'a>,
    /// Sequence length of each member of my Ulysses group (the all-to-all split).
    uly_lens: Vec<i64>,
    members: Vec<Vec<Range<usize>>>,
}

impl<'a> Groups<'a> {
    fn new(comm: &'a dyn Comm, p: &Problem, plan: &UspPlan) -> Groups<'a> {
        let me = comm.rank();
        let (m, u) = (me / plan.ulysses, me % plan.ulysses);
        let uly = SubComm::from_members(comm, (0..plan.ulysses).map(|j| plan.global(m, j)).collect(), u);
        let ring = SubComm::from_members(comm, (0..plan.ring).map(|r| plan.global(r, u)).collect(), m);
        let uly_lens = (0..plan.ulysses).map(|j| p.shard.len(plan.global(m, j)) as i64).collect();
        let members = (0..plan.ring).map(|r| plan.member_ranges(p.shard, r)).collect();
        Groups { plan: *plan, uly, ring, uly_lens, members }
    }

    /// Sequence-sharded `[B, H, S_r, …]` → head-sharded `[B, H/U, S_group, …]` (all-to-all in the group).
    fn to_heads(&self, x: &Tensor) -> Result<Tensor, CpError> {
        let u = self.plan.ulysses as i64;
        if u == 1 {
            return Ok(x.shallow_clone());
        }
        let h = x.size()[1] / u;
        let sends: Vec<Tensor> = (0..u).map(|j| x.narrow(1, j * h, h).contiguous()).collect();
        let like: Vec<Tensor> = self
            .uly_lens
            .iter()
            .map(|&len| {
                let mut s = x.size();
                s[1] = h;
                s[2] = len;
                Tensor::empty(s.as_slice(), (x.kind(), x.device()))
            })
            .collect();
        Ok(Tensor::cat(&self.uly.all_to_all(&sends, &like)?, 2))
    }

    /// Head-sharded `[B, H/U, S_group, …]` → sequence-sharded `[B, H, S_r, …]`.
    fn to_seq(&self, x: &Tensor) -> Result<Tensor, CpError> {
        if self.plan.ulysses == 1 {
            return Ok(x.shallow_clone());
        }
        let mut off = 0;
        let sends: Vec<Tensor> = self
            .uly_lens
            .iter()
            .map(|&len| {
                let t = x.narrow(2, off, len).contiguous();
                off += len;
                t
            })
            .collect();
        let mine = self.uly_lens[self.uly.rank()];
        let like: Vec<Tensor> = (0..self.plan.ulysses)
            .map(|_| {
                let mut s = x.size();
                s[2] = mine;
                Tensor::empty(s.as_slice(), (x.kind(), x.device()))
            })
            .collect();
        Ok(Tensor::cat(&self.uly.all_to_all(&sends, &like)?, 1))
    }

    /// An empty `[2, B, H, len(member), D]` block shaped like `kv` for member `m`.
    fn block_like(&self, kv: &Tensor, m: usize, kind: Kind) -> Tensor {
        let mut s = kv.size();
        s[3] = total_len(&self.members[m]) as i64;
        Tensor::empty(s.as_slice(), (kind, kv.device()))
    }
}

fn rotate_forward(g: &Groups, mask: &Mask, scale: f64, q: &Tensor, kv_own: &Tensor) -> Result<(Tensor, Tensor), CpError> {
    let plan = &g.plan;
    let m = g.ring.rank();
    let myq = &g.members[m];
    let s = q.size();
    let mut result = RunningMerge::new(s[0], s[1], s[2], s[3], q.kind(), q.device())?;
    let mut round_kv = kv_own.shallow_clone();
    for to in 0..plan.outer() {
        let outer = if to + 1 < plan.outer() {
            let like = g.block_like(&round_kv, plan.round_owner(m, to + 1), round_kv.kind());
            Some(g.ring.start_sendrecv(&round_kv, plan.outer_next(m), &like, plan.outer_prev(m))?)
        } else {
            None
        };
        let mut held = round_kv.shallow_clone();
        for ti in 0..plan.inner {
            let inner = if ti + 1 < plan.inner {
                let like = g.block_like(&held, plan.origin(m, to, ti + 1), held.kind());
                Some(g.ring.start_sendrecv(&held, plan.inner_next(m), &like, plan.inner_prev(m))?)
            } else {
                None
            };
            let bm = block_mask(mask, myq, &g.members[plan.origin(m, to, ti)]);
            if bm.area() > 0 {
                let (po, pl) = sliced_forward(q, &held.get(0), &held.get(1), &bm, scale)?;
                result.add(&po, &pl)?;
            }
            if let Some(p) = inner {
                held = p.wait()?.pop().expect("one block");
            }
        }
        if let Some(p) = outer {
            round_kv = p.wait()?.pop().expect("one block");
        }
    }
    Ok(result.finish(q.kind())?)
}

#[allow(clippy::too_many_arguments)]
fn rotate_backward(
    g: &Groups,
    mask: &Mask,
    scale: f64,
    q: &Tensor,
    kv_own: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
) -> Result<(Tensor, Tensor), CpError> {
    let plan = &g.plan;
    let m = g.ring.rank();
    let myq = &g.members[m];
    let acc = acc_kind(q.kind());
    let mut dq = Tensor::zeros(q.size().as_slice(), (acc, q.device()));
    let mut my_dkv = Tensor::zeros(kv_own.size().as_slice(), (acc, q.device()));
    let mut returns = Vec::new();
    let mut round_kv = kv_own.shallow_clone();
    for to in 0..plan.outer() {
        let outer = if to + 1 < plan.outer() {
            let like = g.block_like(&round_kv, plan.round_owner(m, to + 1), round_kv.kind());
            Some(g.ring.start_sendrecv(&round_kv, plan.outer_next(m), &like, plan.outer_prev(m))?)
        } else {
            None
        };
        let mut held = round_kv.shallow_clone();
        let mut dacc = g.block_like(&held, plan.origin(m, to, 0), acc).zero_();
        for ti in 0..plan.inner {
            let inner = if ti + 1 < plan.inner {
                let like = g.block_like(&held, plan.origin(m, to, ti + 1), held.kind());
                Some(g.ring.start_sendrecv(&held, plan.inner_next(m), &like, plan.inner_prev(m))?)
            } else {
                None
            };
            let bm = block_mask(mask, myq, &g.members[plan.origin(m, to, ti)]);
            if bm.area() > 0 {
                let (pdq, pdk, pdv) = sliced_backward(q, &held.get(0), &held.get(1), out, lse, dout, &bm, scale)?;
                dq += pdq.to_kind(acc);
                dacc += Tensor::stack(&[pdk.to_kind(acc), pdv.to_kind(acc)], 0);
            }
            // The accumulator follows its block; the move after the last step brings it home.
            if plan.inner > 1 {
                let like = g.block_like(&dacc, plan.origin(m, to, (ti + 1) % plan.inner), acc);
                dacc = g.ring.start_sendrecv(&dacc, plan.inner_next(m), &like, plan.inner_prev(m))?.wait()?.pop().expect("one block");
            }
            if let Some(p) = inner {
                held = p.wait()?.pop().expect("one block");
            }
        }
        if to == 0 {
            my_dkv += dacc;
        } else {
            // Round block of `to` belongs to round_owner; mine was held by round_holder_of_mine.
            let like = my_dkv.empty_like();
            returns.push(g.ring.start_group(vec![(dacc, plan.round_owner(m, to))], vec![(like, plan.round_holder_of_mine(m, to))])?);
        }
        if let Some(p) = outer {
            round_kv = p.wait()?.pop().expect("one block");
        }
    }
    for r in returns {
        let got = r.wait()?.pop().expect("one block");
        my_dkv += got;
    }
    Ok((dq, my_dkv))
}

/// The schedule of plan `plan` (pure; see [`Schedule`]). Messages carry global ranks.
pub fn schedule_plan(name: &str, plan: &UspPlan, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Schedule {
    let world = plan.ulysses * plan.ring;
    let (b, d, e) = (layout.batch as u64, layout.head_dim as u64, layout.elem_bytes as u64);
    let rep = plan.kv_repeat(layout) as u64;
    let u = plan.ulysses as u64;
    let hq_u = layout.heads_q as u64 / u;
    let hkv_u = layout.heads_kv as u64 * rep / u;
    let members: Vec<Vec<Range<usize>>> = (0..plan.ring).map(|r| plan.member_ranges(shard, r)).collect();
    let mlen = |m: usize| total_len(&members[m]) as u64;
    let kv_bytes = |m: usize, eb: u64| 2 * b * hkv_u * mlen(m) * d * eb;
    let fwd_flops = |area: u64| 4.0 * area as f64 * hq_u as f64 * d as f64 * b as f64;
    let mut steps = Vec::new();

    // All-to-all messages: for every rank, to every other member j of its group, `per_token` bytes per
    // token of the *sender's* (seq→heads) or *receiver's* (heads→seq) shard.
    let a2a = |label: &str, parts: &[(&str, u64)], to_heads: bool| -> Step {
        let mut messages = Vec::new();
        for r in 0..world {
            let (m, uj) = (r / plan.ulysses, r % plan.ulysses);
            for j in 0..plan.ulysses {
                if j == uj {
                    continue;
                }
                let dst = plan.global(m, j);
                let tokens = if to_heads { shard.len(r) } else { shard.len(dst) } as u64;
                for (what, per_token) in parts {
                    messages.push(Message { src: r, dst, bytes: per_token * tokens, what: what.to_string(), overlapped: false });
                }
            }
        }
        Step { label: label.to_string(), compute: vec![], messages, glue: vec![] }
    };
    let q_tok = b * hq_u * d * e;
    let kv_tok = 2 * b * hkv_u * d * e;
    let lse_tok = b * hq_u * layout.lse_bytes() as u64;

    // Glue work (see `Glue`), per rank, mirroring `forward`/`backward` above. Element counts per rank:
    // its q-sized tensors, its (repeated) K or V, its LSE; all keep their count through the all-to-all.
    let q_elems = |r: usize| b * layout.heads_q as u64 * shard.len(r) as u64 * d;
    let kv_elems = |r: usize| b * layout.heads_kv as u64 * rep * shard.len(r) as u64 * d;
    let lse_elems = |r: usize| b * layout.heads_q as u64 * shard.len(r) as u64;
    let acc = layout.acc_bytes();
    let copy = |rank: usize, elems: u64, elem_bytes: usize| Glue { rank, op: GlueOp::Copy { elems, elem_bytes } };
    // `to_heads`/`to_seq`: the per-peer `contiguous` slices plus the `cat` of what arrived (U > 1 only).
    let relayout = |g: &mut Vec<Glue>, rank: usize, elems: u64, elem_bytes: usize| {
        if plan.ulysses > 1 {
            g.push(copy(rank, elems, elem_bytes));
            g.push(copy(rank, elems, elem_bytes));
        }
    };
    // Before the rotation: repeat K/V, move q (and out, dout, lse in backward) and K/V to heads, stack K,V.
    let prologue = |bwd: bool| -> Vec<Glue> {
        let mut g = Vec::new();
        for r in 0..world {
            if rep > 1 {
                g.push(copy(r, 2 * kv_elems(r), layout.elem_bytes));
            }
            let q_like = if bwd { 3 } else { 1 };
            for _ in 0..q_like {
                relayout(&mut g, r, q_elems(r), layout.elem_bytes);
            }
            if bwd {
                relayout(&mut g, r, lse_elems(r), layout.lse_bytes());
            }
            relayout(&mut g, r, 2 * kv_elems(r), layout.elem_bytes);
            g.push(copy(r, 2 * kv_elems(r), layout.elem_bytes));
        }
        g
    };
    // After the rotation: back to sequence sharding (and in backward the casts to the input dtypes).
    let epilogue = |bwd: bool| -> Vec<Glue> {
        let mut g = Vec::new();
        for r in 0..world {
            if bwd {
                relayout(&mut g, r, q_elems(r), acc);
                relayout(&mut g, r, 2 * kv_elems(r), acc);
                if rep > 1 {
                    // Summing the repeated heads back: reads every repeated element, writes 1/rep of them.
                    g.push(copy(r, kv_elems(r) + kv_elems(r) / rep, acc));
                }
                g.push(Glue { rank: r, op: GlueOp::Cast { elems: q_elems(r) + 2 * kv_elems(r) / rep } });
            } else {
                // RunningMerge::finish: the running output, head-sharded, cast to the input dtype.
                let m = r / plan.ulysses;
                g.push(Glue { rank: r, op: GlueOp::Cast { elems: b * hq_u * mlen(m) * d } });
                relayout(&mut g, r, q_elems(r), layout.elem_bytes);
                relayout(&mut g, r, lse_elems(r), layout.lse_bytes());
            }
        }
        g
    };

    let ring_steps = |bwd: bool, steps: &mut Vec<Step>| {
        let tag = if bwd { "bwd" } else { "fwd" };
        for to in 0..plan.outer() {
            for ti in 0..plan.inner {
                let mut compute = Vec::new();
                let mut messages = Vec::new();
                let mut glue = Vec::new();
                for r in 0..world {
                    let (m, uj) = (r / plan.ulysses, r % plan.ulysses);
                    let g = |mm: usize| plan.global(mm, uj);
                    let origin = plan.origin(m, to, ti);
                    let area = block_mask(mask, &members[m], &members[origin]).area();
                    if area > 0 {
                        let f = fwd_flops(area) * if bwd { 2.5 } else { 1.0 };
                        compute.push(Piece { rank: r, q: members[m].clone(), k: members[origin].clone(), heads_q: hq_u as usize, area, flops: f });
                        if bwd {
                            // dq += pdq.to_kind(acc); dacc += stack(pdk.to_kind(acc), pdv.to_kind(acc)).
                            let dkv = 2 * b * hkv_u * mlen(origin) * d;
                            glue.push(Glue { rank: r, op: GlueOp::Accumulate { elems: b * hq_u * mlen(m) * d } });
                            glue.push(Glue { rank: r, op: GlueOp::Accumulate { elems: dkv } });
                            glue.push(copy(r, dkv, acc));
                        } else {
                            glue.push(Glue {
                                rank: r,
                                op: GlueOp::Merge { batch: layout.batch, heads: hq_u as usize, rows: mlen(m) as usize, head_dim: layout.head_dim },
                            });
                        }
                    }
                    if ti == 0 && to + 1 < plan.outer() {
                        let bytes = kv_bytes(plan.round_owner(m, to), e);
                        messages.push(Message { src: r, dst: g(plan.outer_next(m)), bytes, what: "kv-outer".into(), overlapped: true });
                    }
                    if ti + 1 < plan.inner {
                        messages.push(Message { src: r, dst: g(plan.inner_next(m)), bytes: kv_bytes(origin, e), what: "kv".into(), overlapped: true });
                    }
                    if bwd && plan.inner > 1 {
                        messages.push(Message {
                            src: r,
                            dst: g(plan.inner_next(m)),
                            bytes: kv_bytes(origin, layout.acc_bytes() as u64),
                            what: "dkv".into(),
                            overlapped: false,
                        });
                    }
                    if bwd && ti + 1 == plan.inner && to > 0 {
                        let owner = plan.round_owner(m, to);
                        messages.push(Message {
                            src: r,
                            dst: g(owner),
                            bytes: kv_bytes(owner, layout.acc_bytes() as u64),
                            what: "dkv-return".into(),
                            overlapped: false,
                        });
                    }
                }
                steps.push(Step { label: format!("{tag} ring {to}.{ti}"), compute, messages, glue });
            }
        }
    };

    // With U = 1 there is no all-to-all step: the prologue joins the first ring step and the epilogue
    // the last one.
    let pass = |bwd: bool, steps: &mut Vec<Step>| {
        let tag = if bwd { "bwd" } else { "fwd" };
        let first = steps.len();
        if plan.ulysses > 1 {
            if bwd {
                steps.push(a2a(
                    "bwd a2a q,kv,out,dout,lse",
                    &[("a2a-q", q_tok), ("a2a-kv", kv_tok), ("a2a-out", q_tok), ("a2a-dout", q_tok), ("a2a-lse", lse_tok)],
                    true,
                ));
            } else {
                steps.push(a2a("fwd a2a q,kv", &[("a2a-q", q_tok), ("a2a-kv", kv_tok)], true));
            }
        }
        ring_steps(bwd, steps);
        if plan.ulysses > 1 {
            if bwd {
                let acc = layout.acc_bytes() as u64;
                steps.push(a2a("bwd a2a dq,dkv", &[("a2a-dq", b * hq_u * d * acc), ("a2a-dkv", 2 * b * hkv_u * d * acc)], false));
            } else {
                steps.push(a2a("fwd a2a out,lse", &[("a2a-out", q_tok), ("a2a-lse", lse_tok)], false));
            }
        }
        debug_assert!(steps[first].label.starts_with(tag));
        steps[first].glue.extend(prologue(bwd));
        steps.last_mut().expect("a pass has steps").glue.extend(epilogue(bwd));
    };

    if layout.pass != crate::flops::Pass::Bwd {
        pass(false, &mut steps);
    }
    if layout.pass.includes_backward() {
        pass(true, &mut steps);
    }
    Schedule { strategy: name.to_string(), world, steps }
}

use super::registry::{Engine, StrategyDef};
use super::shard::Sharding;

pub const STRATEGY: StrategyDef = StrategyDef {
    name: "usp",
    summary: "Ulysses all-to-all (degree --ulysses-degree U) × ring across groups (W/U); zigzag",
    default_sharding: Sharding::Zigzag,
    plan,
};

/// Default Ulysses degree: the largest divisor of `world` that divides the KV heads and is at most
/// √world-ish balanced (prefers 2-D); falls back to 1 (pure ring).
pub fn default_ulysses(world: usize, layout: &CpLayout) -> usize {
    (1..=world)
        .filter(|u| world.is_multiple_of(*u) && layout.heads_q.is_multiple_of(*u) && layout.heads_kv.is_multiple_of(*u) && u * u <= world)
        .max()
        .unwrap_or(1)
}

pub fn plan(world: usize, layout: &CpLayout) -> Result<Engine, CpError> {
    let u = if layout.ulysses_degree == 0 { default_ulysses(world, layout) } else { layout.ulysses_degree };
    let ring = world / u.max(1);
    Ok(Engine::Usp(UspPlan::new(world, u, ring.max(1), layout)?))
}

/// Pure schedule of this strategy.
pub fn schedule(world: usize, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Result<Schedule, CpError> {
    let Engine::Usp(p) = plan(world, layout)? else { unreachable!() };
    Ok(schedule_plan(STRATEGY.name, &p, shard, mask, layout))
}
