//! The all-gather engine (Llama 3 style): every rank all-gathers the whole K and V (all-gather of the
//! shards, rank order), computes its own queries against all keys in one call of the case's kernel,
//! and in backward reduce-scatters the dK/dV contributions back to their owners. No overlap: the
//! gather completes before compute (cheap when KV heads are few — GQA — which is why Llama 3 chose it).

use std::ops::Range;

use tch::Tensor;

use super::{Engine, Problem};
use crate::attn::acc_kind;
use crate::cp::comm::Comm;
use crate::cp::schedule::{CpLayout, Glue, GlueOp, Message, Piece, Schedule, Step};
use crate::cp::shard::{block_mask, Shard};
use crate::cp::CpError;
use crate::flops::Pass;
use crate::mask::Mask;

/// The all-gather engine (no degrees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllGatherEngine;

impl Engine for AllGatherEngine {
    fn note(&self, _layout: &CpLayout) -> String {
        String::new()
    }
    fn forward(&self, comm: &dyn Comm, p: &Problem, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor), CpError> {
        let kv = gather_kv(comm, p, k, v)?;
        let bm = block_mask(p.mask, p.shard.ranges(comm.rank()), &all_ranges(p.shard));
        Ok(p.attention.forward(q, &kv.get(0), &kv.get(1), &bm, p.scale)?)
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
        let kv = gather_kv(comm, p, k, v)?;
        let bm = block_mask(p.mask, p.shard.ranges(comm.rank()), &all_ranges(p.shard));
        let (dq, dk, dv) = p.attention.backward(q, &kv.get(0), &kv.get(1), out, lse, dout, &bm, p.scale)?;
        let acc = acc_kind(q.kind());
        let dkv = Tensor::stack(&[dk.to_kind(acc), dv.to_kind(acc)], 0);
        let mut off = 0;
        let parts: Vec<Tensor> = (0..comm.size())
            .map(|r| {
                let len = p.shard.len(r) as i64;
                let t = dkv.narrow(3, off, len).contiguous();
                off += len;
                t
            })
            .collect();
        let mine = comm.reduce_scatter_v(&parts)?;
        Ok((dq, mine.get(0).to_kind(k.kind()), mine.get(1).to_kind(v.kind())))
    }
    fn schedule(&self, name: &str, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Schedule {
        schedule_allgather(name, shard, mask, layout)
    }
    fn piece_heads_kv(&self, layout: &CpLayout) -> usize {
        layout.heads_kv
    }
    fn outer_prefetch_steps(&self) -> usize {
        0
    }
}

fn all_ranges(shard: &Shard) -> Vec<Range<usize>> {
    (0..shard.world()).flat_map(|r| shard.ranges(r).to_vec()).collect()
}

fn gather_kv(comm: &dyn Comm, p: &Problem, k: &Tensor, v: &Tensor) -> Result<Tensor, CpError> {
    let kv = Tensor::stack(&[k, v], 0);
    let like: Vec<Tensor> = (0..comm.size())
        .map(|r| {
            let mut s = kv.size();
            s[3] = p.shard.len(r) as i64;
            Tensor::empty(s.as_slice(), (kv.kind(), kv.device()))
        })
        .collect();
    Ok(Tensor::cat(&comm.all_gather_v(&kv, &like)?, 3))
}

fn schedule_allgather(name: &str, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Schedule {
    let world = shard.world();
    let (b, d) = (layout.batch as u64, layout.head_dim as u64);
    let kv_tok = |eb: usize| 2 * b * layout.heads_kv as u64 * d * eb as u64;
    let all = all_ranges(shard);
    // Glue (see `Glue`), mirroring `gather_kv` and `backward`: elements of a rank's K+V and of all K+V.
    let kv_elems = |r: usize| 2 * b * layout.heads_kv as u64 * d * shard.len(r) as u64;
    let all_kv = 2 * b * layout.heads_kv as u64 * d * shard.seqlen as u64;
    let copy = |rank: usize, elems: u64, elem_bytes: usize| Glue { rank, op: GlueOp::Copy { elems, elem_bytes } };
    let gather = |label: &str| Step {
        label: label.into(),
        compute: vec![],
        messages: (0..world)
            .flat_map(|r| (0..world).filter(move |&j| j != r).map(move |j| (r, j)))
            .map(|(r, j)| Message { src: r, dst: j, bytes: kv_tok(layout.elem_bytes) * shard.len(r) as u64, what: "kv-allgather".into(), overlapped: false })
            .collect(),
        // stack(k, v) before the gather, cat of the gathered blocks after it.
        glue: (0..world).flat_map(|r| [copy(r, kv_elems(r), layout.elem_bytes), copy(r, all_kv, layout.elem_bytes)]).collect(),
    };
    let compute = |factor: f64| -> Vec<Piece> {
        (0..world)
            .filter_map(|r| {
                let area = block_mask(mask, shard.ranges(r), &all).area();
                (area > 0).then(|| Piece {
                    rank: r,
                    q: shard.ranges(r).to_vec(),
                    k: all.clone(),
                    heads_q: layout.heads_q,
                    area,
                    flops: 4.0 * area as f64 * layout.heads_q as f64 * d as f64 * b as f64 * factor,
                })
            })
            .collect()
    };
    let mut steps = Vec::new();
    if layout.pass != Pass::Bwd {
        steps.push(gather("fwd all-gather kv"));
        steps.push(Step { label: "fwd compute".into(), compute: compute(1.0), messages: vec![], glue: vec![] });
    }
    if layout.pass.includes_backward() {
        steps.push(gather("bwd all-gather kv"));
        steps.push(Step { label: "bwd compute".into(), compute: compute(2.5), messages: vec![], glue: vec![] });
        steps.push(Step {
            label: "bwd reduce-scatter dkv".into(),
            compute: vec![],
            messages: (0..world)
                .flat_map(|r| (0..world).filter(move |&j| j != r).map(move |j| (r, j)))
                .map(|(r, j)| Message {
                    src: r,
                    dst: j,
                    bytes: kv_tok(layout.acc_bytes()) * shard.len(j) as u64,
                    what: "dkv-reduce-scatter".into(),
                    overlapped: false,
                })
                .collect(),
            // dK, dV cast up and stacked, split into contiguous parts; the rank's sum cast back.
            glue: (0..world)
                .flat_map(|r| {
                    [
                        Glue { rank: r, op: GlueOp::Cast { elems: all_kv } },
                        copy(r, all_kv, layout.acc_bytes()),
                        copy(r, all_kv, layout.acc_bytes()),
                        Glue { rank: r, op: GlueOp::Cast { elems: kv_elems(r) } },
                    ]
                })
                .collect(),
        });
    }
    Schedule { strategy: name.to_string(), world, steps }
}
