//! The ring engine: Ulysses head-parallel all-to-all of degree U inside groups of consecutive ranks,
//! then ring attention of degree R = W/U across the groups, the ring itself split LoongTrain-style
//! into an inner ring of I members and an outer ring of O = R/I:
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
//! One walk ([`RingDegrees::walk`]) says what ring member m does at every step: per outer round `to`
//! and inner step `ti` it computes its queries against the KV block of member
//! `origin = ((o − to) mod O)·I + (i − ti) mod I`. The next inner block is posted (non-blocking
//! send/recv) *before* the compute and waited after it; the next outer block is prefetched at the
//! start of each round and waited at its end — communication overlaps compute. In the backward the
//! dK/dV accumulator of a block travels with it around the inner ring (after compute; one more move at
//! the end of the round brings it home) and is then sent straight to the block's owner. The forward
//! and the backward run the walk through one driver ([`drive`]); the schedule
//! ([`super::ring_schedule`]) is written from the same walk.

use std::ops::Range;

use tch::{Kind, Tensor};

use super::ring_walk::{Exchange, RingDegrees, RingStep};
use super::{Engine, Problem};
use crate::attn::acc_kind;
use crate::attn::merge::RunningMerge;
use crate::cp::comm::{Comm, Pending, SubComm};
use crate::cp::schedule::{CpLayout, Schedule};
use crate::cp::shard::{block_mask, total_len, Shard};
use crate::cp::CpError;
use crate::mask::Mask;

/// The ring engine at resolved degrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingEngine(pub RingDegrees);

impl Engine for RingEngine {
    fn note(&self, layout: &CpLayout) -> String {
        let p = &self.0;
        let mut n = format!("ulysses={} ring={} inner={} outer={}", p.ulysses, p.ring, p.inner, p.outer());
        let r = p.kv_repeat(layout);
        if r > 1 {
            n.push_str(&format!(
                "; kv heads repeated {r}× ({}→{}) because ulysses degree {} does not divide {} kv heads",
                layout.heads_kv,
                layout.heads_kv * r,
                p.ulysses,
                layout.heads_kv
            ));
        }
        n
    }

    fn forward(&self, comm: &dyn Comm, p: &Problem, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor), CpError> {
        let g = Groups::new(comm, p, &self.0);
        let (k, v) = repeat_kv(k, v, self.0.kv_repeat(&p.layout));
        let qh = g.to_heads(q)?;
        let kvh = Tensor::stack(&[g.to_heads(&k)?, g.to_heads(&v)?], 0);
        let s = qh.size();
        let mut work =
            ForwardWork { q: &qh, p, members: &g.members, me: g.ring.rank(), result: RunningMerge::new(s[0], s[1], s[2], s[3], qh.kind(), qh.device())? };
        drive(&g, &kvh, false, &mut work)?;
        let (o, l) = work.result.finish(qh.kind())?;
        Ok((g.to_seq(&o)?, g.to_seq(&l)?))
    }

    fn backward(
        &self,
        comm: &dyn Comm,
        p: &Problem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor), CpError> {
        let g = Groups::new(comm, p, &self.0);
        let rep = self.0.kv_repeat(&p.layout);
        let (kr, vr) = repeat_kv(k, v, rep);
        let qh = g.to_heads(q)?;
        let kvh = Tensor::stack(&[g.to_heads(&kr)?, g.to_heads(&vr)?], 0);
        let (oh, doh, lh) = (g.to_heads(out)?, g.to_heads(dout)?, g.to_heads(lse)?);
        let acc = acc_kind(qh.kind());
        let mut work = BackwardWork {
            q: &qh,
            out: &oh,
            lse: &lh,
            dout: &doh,
            p,
            g: &g,
            dq: Tensor::zeros(qh.size().as_slice(), (acc, qh.device())),
            my_dkv: Tensor::zeros(kvh.size().as_slice(), (acc, qh.device())),
            dacc: None,
            returns: Vec::new(),
        };
        drive(&g, &kvh, true, &mut work)?;
        let (dq, my_dkv) = work.finish()?;
        let dq = g.to_seq(&dq)?.to_kind(q.kind());
        let (mut dk, mut dv) = (g.to_seq(&my_dkv.get(0))?, g.to_seq(&my_dkv.get(1))?);
        if rep > 1 {
            let s = dk.size();
            let shape = [s[0], s[1] / rep as i64, rep as i64, s[2], s[3]];
            dk = dk.reshape(shape).sum_dim_intlist(&[2i64][..], false, dk.kind());
            dv = dv.reshape(shape).sum_dim_intlist(&[2i64][..], false, dv.kind());
        }
        Ok((dq, dk.to_kind(k.kind()), dv.to_kind(v.kind())))
    }

    fn schedule(&self, name: &str, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Schedule {
        super::ring_schedule::schedule(name, &self.0, shard, mask, layout)
    }

    fn piece_heads_kv(&self, layout: &CpLayout) -> usize {
        layout.heads_kv * self.0.kv_repeat(layout) / self.0.ulysses
    }

    fn outer_prefetch_steps(&self) -> usize {
        self.0.inner - 1
    }
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
    degrees: RingDegrees,
    uly: SubComm<'a>,
    ring: SubComm<'a>,
    /// Sequence length of each member of my Ulysses group (the all-to-all split).
    uly_lens: Vec<i64>,
    members: Vec<Vec<Range<usize>>>,
}

impl<'a> Groups<'a> {
    fn new(comm: &'a dyn Comm, p: &Problem, d: &RingDegrees) -> Groups<'a> {
        let me = comm.rank();
        let (m, u) = (me / d.ulysses, me % d.ulysses);
        let uly = SubComm::from_members(comm, (0..d.ulysses).map(|j| d.global(m, j)).collect(), u);
        let ring = SubComm::from_members(comm, (0..d.ring).map(|r| d.global(r, u)).collect(), m);
        let uly_lens = (0..d.ulysses).map(|j| p.shard.len(d.global(m, j)) as i64).collect();
        let members = (0..d.ring).map(|r| d.member_ranges(p.shard, r)).collect();
        Groups { degrees: *d, uly, ring, uly_lens, members }
    }

    /// Sequence-sharded `[B, H, S_r, …]` → head-sharded `[B, H/U, S_group, …]` (all-to-all in the group).
    fn to_heads(&self, x: &Tensor) -> Result<Tensor, CpError> {
        let u = self.degrees.ulysses as i64;
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
        if self.degrees.ulysses == 1 {
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
        let like: Vec<Tensor> = (0..self.degrees.ulysses)
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

    /// Posts `x`: sends `t` to `x.send_to`, receives a block shaped for member `x.incoming` (in `kind`).
    fn exchange(&self, t: &Tensor, x: &Exchange, kind: Kind) -> Result<Box<dyn Pending + '_>, CpError> {
        let like = self.block_like(t, x.incoming, kind);
        Ok(self.ring.start_sendrecv(t, x.send_to, &like, x.recv_from)?)
    }
}

/// What the driver does with the block held at a step: the forward merges a partial result, the
/// backward accumulates gradients (and moves its accumulator with the block).
trait RingWork {
    fn compute(&mut self, step: &RingStep, held: &Tensor) -> Result<(), CpError>;
    /// After the compute (and before waiting for the next block).
    fn after_compute(&mut self, _step: &RingStep) -> Result<(), CpError> {
        Ok(())
    }
}

/// The one ring driver: walks member `m`'s steps, posting the outer prefetch and the inner pass as the
/// walk says, computing on the held block, and waiting for the next blocks.
fn drive(g: &Groups, kv_own: &Tensor, backward: bool, work: &mut dyn RingWork) -> Result<(), CpError> {
    let m = g.ring.rank();
    let mut round_kv = kv_own.shallow_clone();
    let mut held = kv_own.shallow_clone();
    let mut outer: Option<Box<dyn Pending + '_>> = None;
    for step in g.degrees.walk(m, backward) {
        if step.inner_step == 0 {
            held = round_kv.shallow_clone();
        }
        if let Some(x) = &step.outer_prefetch {
            outer = Some(g.exchange(&round_kv, x, round_kv.kind())?);
        }
        let inner = match &step.inner_pass {
            Some(x) => Some(g.exchange(&held, x, held.kind())?),
            None => None,
        };
        work.compute(&step, &held)?;
        work.after_compute(&step)?;
        if let Some(p) = inner {
            held = p.wait()?.pop().expect("one block");
        }
        if step.round_end {
            if let Some(p) = outer.take() {
                round_kv = p.wait()?.pop().expect("one block");
            }
        }
    }
    Ok(())
}

struct ForwardWork<'a> {
    q: &'a Tensor,
    p: &'a Problem<'a>,
    members: &'a [Vec<Range<usize>>],
    me: usize,
    result: RunningMerge,
}

impl RingWork for ForwardWork<'_> {
    fn compute(&mut self, step: &RingStep, held: &Tensor) -> Result<(), CpError> {
        let bm = block_mask(self.p.mask, &self.members[self.me], &self.members[step.origin]);
        if bm.area() > 0 {
            let (po, pl) = self.p.attention.forward(self.q, &held.get(0), &held.get(1), &bm, self.p.scale)?;
            self.result.add(&po, &pl)?;
        }
        Ok(())
    }
}

struct BackwardWork<'a> {
    q: &'a Tensor,
    out: &'a Tensor,
    lse: &'a Tensor,
    dout: &'a Tensor,
    p: &'a Problem<'a>,
    g: &'a Groups<'a>,
    dq: Tensor,
    /// dK/dV of this member's own block, accumulated in round 0 and from the returns.
    my_dkv: Tensor,
    /// The dK/dV accumulator travelling with the block of the current step.
    dacc: Option<Tensor>,
    returns: Vec<Box<dyn Pending + 'a>>,
}

impl BackwardWork<'_> {
    fn finish(self) -> Result<(Tensor, Tensor), CpError> {
        let mut my_dkv = self.my_dkv;
        for r in self.returns {
            my_dkv += r.wait()?.pop().expect("one block");
        }
        Ok((self.dq, my_dkv))
    }
}

impl RingWork for BackwardWork<'_> {
    fn compute(&mut self, step: &RingStep, held: &Tensor) -> Result<(), CpError> {
        let acc = acc_kind(self.q.kind());
        let m = self.g.ring.rank();
        if step.inner_step == 0 {
            self.dacc = Some(self.g.block_like(held, step.origin, acc).zero_());
        }
        let bm = block_mask(self.p.mask, &self.g.members[m], &self.g.members[step.origin]);
        if bm.area() > 0 {
            let (pdq, pdk, pdv) = self.p.attention.backward(self.q, &held.get(0), &held.get(1), self.out, self.lse, self.dout, &bm, self.p.scale)?;
            self.dq += pdq.to_kind(acc);
            let dacc = self.dacc.as_mut().expect("set at the round's first step");
            *dacc += Tensor::stack(&[pdk.to_kind(acc), pdv.to_kind(acc)], 0);
        }
        Ok(())
    }

    fn after_compute(&mut self, step: &RingStep) -> Result<(), CpError> {
        let acc = acc_kind(self.q.kind());
        let g = self.g;
        // The accumulator follows its block; the move after the last step brings it home.
        if let Some(x) = &step.acc_pass {
            let dacc = self.dacc.take().expect("set at the round's first step");
            self.dacc = Some(g.exchange(&dacc, x, acc)?.wait()?.pop().expect("one block"));
        }
        if step.round_end {
            let dacc = self.dacc.take().expect("set at the round's first step");
            match &step.acc_return {
                None => self.my_dkv += dacc,
                Some(x) => {
                    // The round block's accumulator goes to its owner; mine comes from its holder.
                    let like = self.my_dkv.empty_like();
                    self.returns.push(g.ring.start_group(vec![(dacc, x.send_to)], vec![(like, x.recv_from)])?);
                }
            }
        }
        Ok(())
    }
}
