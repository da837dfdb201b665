//! The ring engine's schedule as data (see [`crate::cp::schedule`]): written from the same walk the
//! engine's driver runs ([`RingDegrees::walk`]), plus the all-to-all steps and the glue work around
//! them, so the simulator's virtual ranks see exactly what the real ranks do. A test compares its
//! bytes and merges with what real ranks send and run.

use std::ops::Range;

use crate::cp::engine::ring_walk::{RingDegrees, RingStep};
use crate::cp::schedule::{CpLayout, Glue, GlueOp, Message, Piece, Schedule, Step};
use crate::cp::shard::{block_mask, total_len, Shard};
use crate::mask::Mask;

/// The schedule of the ring engine at `degrees` (pure; see [`Schedule`]): the all-to-all steps
/// and one step per walk step ([`RingDegrees::walk`], the walk the engine's driver runs). Messages
/// carry global ranks.
pub fn schedule(name: &str, degrees: &RingDegrees, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Schedule {
    let world = degrees.ulysses * degrees.ring;
    let (b, d, e) = (layout.batch as u64, layout.head_dim as u64, layout.elem_bytes as u64);
    let rep = degrees.kv_repeat(layout) as u64;
    let u = degrees.ulysses as u64;
    let hq_u = layout.heads_q as u64 / u;
    let hkv_u = layout.heads_kv as u64 * rep / u;
    let members: Vec<Vec<Range<usize>>> = (0..degrees.ring).map(|r| degrees.member_ranges(shard, r)).collect();
    let mlen = |m: usize| total_len(&members[m]) as u64;
    let kv_bytes = |m: usize, eb: u64| 2 * b * hkv_u * mlen(m) * d * eb;
    let fwd_flops = |area: u64| 4.0 * area as f64 * hq_u as f64 * d as f64 * b as f64;
    let mut steps = Vec::new();

    // All-to-all messages: for every rank, to every other member j of its group, `per_token` bytes per
    // token of the *sender's* (seq→heads) or *receiver's* (heads→seq) shard.
    let a2a = |label: &str, parts: &[(&str, u64)], to_heads: bool| -> Step {
        let mut messages = Vec::new();
        for r in 0..world {
            let (m, uj) = (r / degrees.ulysses, r % degrees.ulysses);
            for j in 0..degrees.ulysses {
                if j == uj {
                    continue;
                }
                let dst = degrees.global(m, j);
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
        if degrees.ulysses > 1 {
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
                let m = r / degrees.ulysses;
                g.push(Glue { rank: r, op: GlueOp::Cast { elems: b * hq_u * mlen(m) * d } });
                relayout(&mut g, r, q_elems(r), layout.elem_bytes);
                relayout(&mut g, r, lse_elems(r), layout.lse_bytes());
            }
        }
        g
    };

    let ring_steps = |bwd: bool, steps: &mut Vec<Step>| {
        let tag = if bwd { "bwd" } else { "fwd" };
        let walks: Vec<Vec<RingStep>> = (0..degrees.ring).map(|m| degrees.walk(m, bwd)).collect();
        for (s, first) in walks[0].iter().enumerate() {
            let (mut compute, mut messages, mut glue) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..world {
                let (m, uj) = (r / degrees.ulysses, r % degrees.ulysses);
                let g = |mm: usize| degrees.global(mm, uj);
                let step = &walks[m][s];
                let origin = step.origin;
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
                // The walk's exchanges; the block sent is the one held at this step (`origin`).
                let acc_bytes = layout.acc_bytes() as u64;
                if let Some(x) = &step.outer_prefetch {
                    messages.push(Message { src: r, dst: g(x.send_to), bytes: kv_bytes(origin, e), what: "kv-outer".into(), overlapped: true });
                }
                if let Some(x) = &step.inner_pass {
                    messages.push(Message { src: r, dst: g(x.send_to), bytes: kv_bytes(origin, e), what: "kv".into(), overlapped: true });
                }
                if let Some(x) = &step.acc_pass {
                    messages.push(Message { src: r, dst: g(x.send_to), bytes: kv_bytes(origin, acc_bytes), what: "dkv".into(), overlapped: false });
                }
                if let Some(x) = &step.acc_return {
                    messages.push(Message { src: r, dst: g(x.send_to), bytes: kv_bytes(x.send_to, acc_bytes), what: "dkv-return".into(), overlapped: false });
                }
            }
            steps.push(Step { label: format!("{tag} ring {}.{}", first.outer_round, first.inner_step), compute, messages, glue });
        }
    };

    // With U = 1 there is no all-to-all step: the prologue joins the first ring step and the epilogue
    // the last one.
    let pass = |bwd: bool, steps: &mut Vec<Step>| {
        let tag = if bwd { "bwd" } else { "fwd" };
        let first = steps.len();
        if degrees.ulysses > 1 {
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
        if degrees.ulysses > 1 {
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
