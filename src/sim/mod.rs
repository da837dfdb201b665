//! Projection of CP strategies to many GPUs from one device: **virtual ranks** execute (or model, see
//! [`compute`]) exactly the per-rank attention pieces of a strategy's [`Schedule`] — the same
//! `block_mask(mask, piece.q, piece.k)` sub-masks and tensor shapes the real executor
//! ([`crate::cp::exec`]) hands to `sliced_forward` / `sliced_backward` — and an α–β communication
//! model ([`comm_model`]) costs the schedule's messages; [`predict`] combines both into a timeline.
//! The result is a CSV row of kind `simulated`, timing mode `model`. docs/SIMULATION.md has the model,
//! its assumptions and its measured error.

pub mod calibrate;
pub mod comm_model;
pub mod compute;
pub mod fa3;
pub mod fit;
pub mod predict;
pub mod project;
pub mod published;
pub mod report;
pub mod segments;
pub mod stats;

use serde::Serialize;

use crate::attn::KernelError;
use crate::case::{Case, CaseKind, Sharding};
use crate::cp::schedule::{CpLayout, Glue, GlueOp, Message, Schedule, Step};
use crate::cp::setup::CpSetup;
use crate::cp::shard::{block_mask, imbalance};
use crate::flops::{pass_flops, Pass};
use crate::mask::{build_pattern, Params};
use crate::results::{Row, Status};
use comm_model::Topology;
use compute::{ComputeModel, PieceShape, PieceTimer};
use fa3::CallShape;
use predict::StepTime;
use segments::{piece_calls, Docs, Placement};

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Bad input (unknown strategy, bad degrees, bad mask); names the flag. Exit 2.
    #[error("{0}")]
    Bad(String),
    #[error("kernel: {0}")]
    Backend(#[from] KernelError),
}

/// Whose context-parallel implementation the virtual ranks follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Implementation {
    /// attnbench's own engines: exactly their schedule and sharding.
    #[default]
    Attnbench,
    /// The baselines behind the CP figures LongCA-bench's authors published (MagiAttention
    /// `exps/dist_attn/baselines`, Transformer Engine style), on the same strategy's schedule:
    /// - every **document** is zigzag-sharded over the ranks (`thd` layout: a rank holds chunks r and
    ///   2W−1−r of each document), see [`segments::Placement::PerDocument`];
    /// - the all-gather strategy makes one FA3 call per query half;
    /// - a backward pass is an autograd backward after a forward: the head-sharded q, K, V, out stay
    ///   saved, so its all-to-alls move only dout and the gradients, gradients travel in the input
    ///   dtype, and the ring's dK/dV travel with K/V (one buffer, overlapped with the step);
    /// - the memory-bound work around the attention calls is theirs ([`longca_glue`]).
    ///
    /// Needs a document mask (every slice a full or causal diagonal block, all of one kind: full,
    /// causal, full_document, causal_document, …).
    Longca,
}

impl Implementation {
    pub fn name(self) -> &'static str {
        match self {
            Implementation::Attnbench => "attnbench",
            Implementation::Longca => "longca",
        }
    }
}

impl std::str::FromStr for Implementation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "attnbench" => Ok(Implementation::Attnbench),
            "longca" => Ok(Implementation::Longca),
            _ => Err(format!("unknown implementation `{s}` (expected attnbench or longca)")),
        }
    }
}

/// One simulated case: what it computes (a CP case; its `world_size` virtual ranks), over which
/// cluster model, following whose implementation.
#[derive(Debug, Clone)]
pub struct SimSpec {
    pub case: Case,
    pub topology: Topology,
    /// True when the topology's links were fitted from `attnbench comm` output.
    pub calibrated: bool,
    pub implementation: Implementation,
}

/// Everything predicted for one case.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub strategy: String,
    pub world_size: usize,
    pub topology: Topology,
    pub calibrated: bool,
    pub compute_model: String,
    pub steps: Vec<StepTime>,
    /// Per rank: attention compute seconds summed over steps.
    pub rank_compute_s: Vec<f64>,
    /// Per rank: glue seconds (merges, accumulation, copies) summed over steps.
    pub rank_glue_s: Vec<f64>,
    /// max/mean of attended area × heads per rank (the schedule's work; analytic).
    pub imbalance: f64,
    /// max/mean of per-rank compute seconds.
    pub compute_imbalance: f64,
    /// Predicted time of one pass, seconds (sum of step times).
    pub total_s: f64,
    /// Sum over steps of the critical rank's compute-bound (attention + glue) share; the rest is
    /// waiting for comm.
    pub critical_compute_s: f64,
    pub flops: f64,
    pub tflops_per_gpu: f64,
    /// Time of the whole problem on one device under the same compute model, seconds, and how it was
    /// obtained (`measured` / `sum-of-pieces` / `roofline`).
    pub single_s: f64,
    pub single_how: String,
    pub scaling_eff: f64,
    /// Max over ranks of bytes sent in one pass.
    pub bytes_sent: u64,
    pub pieces_requested: usize,
    pub pieces_executed: usize,
    pub mask_area: u64,
    pub density: f64,
    pub note: String,
}

impl SimReport {
    /// Folds further draws of a random mask (`others`, seeds after this report's) into this report:
    /// TFLOPS/GPU and scaling efficiency become the means of the draws' values (as the published
    /// figures average packs), time, FLOPs and the single-device time the means; the other fields stay
    /// this (the first) draw's, and the note says which is which. All ratios are averaged here, in one
    /// place, so no column beside the mean throughput is left from one draw.
    pub fn mean_over_draws(&mut self, others: &[SimReport], seeds: std::ops::RangeInclusive<u64>) {
        let n = (others.len() + 1) as f64;
        let mean = |first: f64, f: fn(&SimReport) -> f64| others.iter().fold(first, |acc, r| acc + f(r)) / n;
        self.tflops_per_gpu = mean(self.tflops_per_gpu, |r| r.tflops_per_gpu);
        self.scaling_eff = mean(self.scaling_eff, |r| r.scaling_eff);
        self.total_s = mean(self.total_s, |r| r.total_s);
        self.flops = mean(self.flops, |r| r.flops);
        self.single_s = mean(self.single_s, |r| r.single_s);
        self.note.push_str(&format!(
            "; mean over {} mask draws (seeds {}..={}): TFLOPS/GPU and scaling efficiency are the means of the draws' values, time and FLOPs the means; \
             imbalance, bytes and mask area are the first draw's",
            others.len() + 1,
            seeds.start(),
            seeds.end()
        ));
    }
}

/// The mask, shard, layout, engine and schedule of a spec — the same [`CpSetup::new`] the real
/// ranks start from; for [`Implementation::Longca`], see [`setup_longca`].
pub fn setup(spec: &SimSpec) -> Result<CpSetup, SimError> {
    match spec.implementation {
        Implementation::Attnbench => CpSetup::new(&spec.case).map_err(SimError::Bad),
        Implementation::Longca => setup_longca(spec),
    }
}

/// True when the schedule is the all-gather engine's (its collectives are named `*allgather`, the
/// convention [`predict`] costs them by).
fn is_allgather(s: &Schedule) -> bool {
    s.steps.iter().flat_map(|st| &st.messages).any(|m| m.what.contains("allgather"))
}

/// How a set-up case's pieces map onto documents, and whether the all-gather's call is split per
/// query half. Under the LongCA layout the pieces' ranges are zigzag chunks of a 2W grid (rank r holds
/// chunks r and 2W−1−r; a ring member holds its ranks' chunks), and every document is cut the same way.
pub fn placement(p: &CpSetup, implementation: Implementation) -> (Placement, bool) {
    match implementation {
        Implementation::Attnbench => (Placement::Global, false),
        Implementation::Longca => (Placement::PerDocument { chunks: 2 * p.schedule.world, seqlen: p.shard.seqlen }, is_allgather(&p.schedule)),
    }
}

/// The set-up of [`Implementation::Longca`]: the strategy set up (zigzag sharding) on one document
/// spanning the sequence — full or causal like the mask's documents — which gives the steps, messages
/// and token counts of the per-document layout (every rank holds the same number of tokens either
/// way); the pieces' areas and FLOPs are then those of the real documents ([`segments::piece_calls`]),
/// the glue is the baselines' ([`longca_glue`]) and backward messages follow the autograd backward
/// ([`autograd_backward`]); `usp` with an inner ring is Ulysses × a double ring (LoongTrain) as
/// on the real ranks. The returned set-up's `mask` is the real mask.
pub fn setup_longca(spec: &SimSpec) -> Result<CpSetup, SimError> {
    let c = &spec.case;
    let hm = build_pattern(&c.pattern, c.seqlen, &c.params).map_err(|e| SimError::Bad(format!("--mask {}: {e}", c.pattern)))?;
    if !hm.is_shared() {
        return Err(SimError::Bad(format!("--mask {}: per-head masks are not supported by CP strategies yet", c.pattern)));
    }
    let mask = hm.groups.into_iter().next().expect("one group");
    let docs = Docs::of(&mask);
    let causal = docs.as_ref().and_then(|x| x.uniform_kind()).ok_or_else(|| {
        SimError::Bad(format!("--impl longca: --mask {} is not documents of one kind (full or causal diagonal blocks); use --impl attnbench", c.pattern))
    })?;
    let docs = docs.expect("checked above");
    let mut surrogate = Case { pattern: if causal { "causal" } else { "full" }.into(), params: Params::new(), ..c.clone() };
    surrogate.cp.sharding = Some(Sharding::Zigzag);
    // `usp` with an inner ring is LoongTrain in the strategy itself (`cp::strategies::usp`).
    let mut p = CpSetup::new(&surrogate).map_err(SimError::Bad)?;
    let (place, split) = placement(&p, Implementation::Longca);
    let per_area = 4.0 * c.head_dim as f64 * c.batch as f64;
    // Per step and piece, the (query, key) valid tokens of each of the piece's varlen calls.
    let mut valid: Vec<Vec<Vec<(u64, u64)>>> = Vec::with_capacity(p.schedule.steps.len());
    for step in &mut p.schedule.steps {
        let factor = if step.label.starts_with("bwd") { 2.5 } else { 1.0 };
        let mut step_valid = Vec::with_capacity(step.compute.len());
        for piece in &mut step.compute {
            let calls = piece_calls(&docs, place, &piece.q, &piece.k, split);
            let area: u64 = calls.iter().flatten().map(|s| s.area).sum();
            piece.area = area;
            piece.flops = per_area * area as f64 * piece.heads_q as f64 * factor;
            step_valid.push(calls.iter().map(|c| valid_tokens(c)).collect());
        }
        valid.push(step_valid);
    }
    longca_glue(&mut p, causal, &valid);
    autograd_backward(&mut p.schedule, &p.layout);
    if p.options.inner_ring.is_some() {
        double_ring_backward(&mut p.schedule);
    }
    p.mask = mask;
    Ok(p)
}

/// (outer round, inner step) of a ring step labelled `<pass> ring <outer>.<inner>` (the ring engine's
/// labels, `cp::engine::ring_schedule`); `None` for any other step or pass.
fn ring_position(label: &str, pass: &str) -> Option<(usize, usize)> {
    let (o, i) = label.strip_prefix(pass)?.strip_prefix(" ring ")?.split_once('.')?;
    Some((o.parse().ok()?, i.parse().ok()?))
}

fn tokens(r: &[std::ops::Range<usize>]) -> u64 {
    r.iter().map(|x| x.len() as u64).sum()
}

/// (query, key) tokens one varlen call reads: the sums of its segments' lengths. The baselines build
/// each call's unpad indices from the per-step `cu_seqlens` with empty documents dropped
/// (`generate_runtime_meta_per_step` / `generate_valid_cu_seqlens` in `utils_cp.py`), and the causal
/// all-gather's keys stop at the query chunk's end (`generate_cu_seqlens_kv_ag_causal` in
/// `ring_attn.py`), so a call gathers these tokens, not the whole padded tensors it is handed.
pub fn valid_tokens(call: &[fa3::Segment]) -> (u64, u64) {
    call.iter().fold((0, 0), |(q, k), s| (q + s.lq as u64, k + s.lk as u64))
}

/// Replaces a set-up's glue (attnbench's merges, relayouts, stacks) with the memory-bound work of the
/// LongCA baselines (`exps/dist_attn/baselines/{utils_cp,ring_attn,ulysess,usp,loongtrain}.py` at
/// 09fc31b2), per rank and kernel by kernel — copies (gathers, scatters, `contiguous`, `cat`, the
/// `thd_*` half reads and copies), zero fills and in-place adds of q-sized and K/V-sized tensors, each
/// costed as copies of what it writes (a fill as one, an add as two):
/// - around every FA3 call ([`varlen_call_glue`]): the inputs gathered into the unpadded varlen layout
///   (the call's valid tokens, [`valid_tokens`]), the outputs scattered back into zero-filled padded
///   tensors;
/// - ring steps (`FA3RingAttnFunc`, `FA3DoubleRingAttnFunc`; USP's ring of one at 8 GPUs included):
///   in forward the K/V concatenation into the first send buffer (first step; the double ring also
///   copies the window's K/V into its inner buffer at each window's first step) and, under a causal
///   mask, the half reads of q or K/V (`thd_read_half_tensor`) of the steps that use half; after the
///   ring loop, when all transfers are done, the zero-filled output and each step's output
///   correction (`thd_out_correction`, an add of the step's q-sized output) — a step of its own
///   (`fwd out correction`) that no communication hides. In backward: the copy of K/V into the first
///   buffer, the half reads of q, out and dout or of K/V, the dq update (an add), the dK/dV
///   concatenation (a copy) and update (an add). Ulysses (`FA3UlysessAttnFunc`) has no ring: it calls
///   FA3 once and returns its output and gradients as they come, so none of these;
/// - all-to-alls: the `rearrange(...).contiguous()` before and after the all-to-all of q, K and V
///   (2 copies each; in backward dq, dK, dV), one after the output's (in backward one for dout), and
///   in backward the gradient sum of the K/V repeat when W > Hkv (the repeat itself runs before the
///   timed call);
/// - all-gather (`FA3RingAGAttnFunc`): the zigzag → contiguous reorder of the gathered K and V (a
///   `torch.gather` each); per call the query half read and the output and LSE collected (the LSE as
///   a 16-wide bf16 tensor); in backward the full-size dK/dV zero fill, per call the q and dout half
///   reads, the dq collection and the full-size dK/dV adds, and the reorder of dK/dV before the
///   reduce-scatter.
///
/// `causal`: the documents are causal. `valid[step][piece]` lists the piece's varlen calls' (query,
/// key) valid tokens (one entry per call: two for the all-gather's query halves, one otherwise).
pub fn longca_glue(p: &mut CpSetup, causal: bool, valid: &[Vec<Vec<(u64, u64)>>]) {
    let l = p.layout;
    let (b, d, e) = (l.batch as u64, l.head_dim as u64, l.elem_bytes);
    let hkv_u = p.engine.piece_heads_kv(&l) as u64;
    // Ulysses degree from the pieces (a piece has Hq/U query heads); K/V heads after the repeat.
    let u = p.schedule.steps.iter().flat_map(|s| &s.compute).next().map(|pc| (l.heads_q / pc.heads_q.max(1)) as u64).unwrap_or(1);
    let kv_heads_rep = hkv_u * u;
    let seq = p.shard.seqlen as u64;
    // Every kernel is costed as copies of the tensor it writes (one fitted glue bandwidth serves
    // them all): a gather, scatter, `cat`, half read or zero fill as one, an in-place add or
    // correction (`add_`, `thd_grad_correction`, `thd_out_correction`: reads the running tensor too)
    // as two.
    let copy = |rank, elems: u64, n: usize| (0..n).map(move |_| Glue { rank, op: GlueOp::Copy { elems, elem_bytes: e } });
    let fill = copy;
    let add = move |rank, elems: u64, n: usize| copy(rank, elems, 2 * n);
    let world = p.schedule.world;
    let allgather = is_allgather(&p.schedule);
    let ring = p.schedule.strategy != "ulysses";
    // Steps of `FA3RingAttnFunc` / `FA3DoubleRingAttnFunc` (the all-gather has no ring steps).
    let ring_step = ring && !allgather;
    let double_ring = p.options.inner_ring.is_some();
    let repeated = kv_heads_rep > l.heads_kv as u64;
    // Per rank, the most query and key tokens one of its pieces holds: the tokens of a ring member
    // (a Ulysses group's under USP).
    let mut held = vec![(0u64, 0u64); world];
    for piece in p.schedule.steps.iter().flat_map(|s| &s.compute) {
        let h = &mut held[piece.rank];
        *h = (h.0.max(tokens(&piece.q)), h.1.max(tokens(&piece.k)));
    }
    // A causal ring step against an earlier origin uses the first half of the K/V it holds, against a
    // later one the second half of q (`FA3RingAttnFunc`: `i <= cp_rank` / else); zigzag chunks are
    // numbered in ring order, so the first ranges' starts tell which.
    let first = |r: &[std::ops::Range<usize>]| r.first().map_or(0, |x| x.start);
    let mut corrections = Vec::new();
    // Per single-ring backward step (by index), the dK/dV work that waits for the step's transfer.
    let mut after_wait: Vec<(usize, Vec<Glue>)> = Vec::new();
    for (k, step) in p.schedule.steps.iter_mut().enumerate() {
        let bwd = step.label.starts_with("bwd");
        let mut glue = Vec::new();
        let mut waiting = Vec::new();
        for r in 0..world {
            let toks = p.shard.len(r) as u64;
            let q_r = b * l.heads_q as u64 * d * toks;
            let kv_r = b * kv_heads_rep * d * toks;
            let full_kv = b * l.heads_kv as u64 * d * seq;
            match step.label.as_str() {
                // Ulysses' K/V repeat (W > Hkv) runs before the timed call (`run_dist_attn` in
                // run_benchmark.py), so only the backward pays for it (the gradient's sum).
                "fwd a2a q,kv" => {
                    glue.extend(copy(r, q_r, 2));
                    glue.extend(copy(r, kv_r, 4));
                }
                "bwd a2a dq,dkv" => {
                    glue.extend(copy(r, q_r, 2));
                    glue.extend(copy(r, kv_r, 4 + if repeated { 2 } else { 0 }));
                }
                // `_varlen_all2all_after_attn`: the all-to-all takes the attention output as it is and
                // one rearrange follows (in backward, one copy makes dout contiguous for it).
                "fwd a2a out,lse" | "bwd a2a q,kv,out,dout,lse" => glue.extend(copy(r, q_r, 1)),
                // `gather_with_reorder_before_attn` of K and V; `reorder_before_reduce_scatter` of
                // dK and dV (`reduce_scatter_along_first_dim` then takes them as they are).
                "fwd all-gather kv" | "bwd all-gather kv" | "bwd reduce-scatter dkv" => glue.extend(copy(r, full_kv, 2)),
                _ => {}
            }
        }
        for (piece, calls) in step.compute.iter().zip(&valid[k]) {
            let n = calls.len().max(1) as u64;
            let (held_q, held_k) = held[piece.rank];
            // Under a causal mask a ring step may use half of q (then of out and dout too in
            // backward) or half of the K/V it holds; `thd_read_half_tensor` copies that half out,
            // and the call and the updates work on it.
            let half_q = ring_step && causal && first(&piece.k) > first(&piece.q);
            let half_kv = ring_step && causal && first(&piece.k) < first(&piece.q);
            let q_e = b * piece.heads_q as u64 * d * tokens(&piece.q) / n / if half_q { 2 } else { 1 };
            let kv_e = b * hkv_u * d * tokens(&piece.k) / if half_kv { 2 } else { 1 };
            for &(vq, vk) in calls {
                let sizes = CallSizes { q: q_e, q_valid: b * piece.heads_q as u64 * d * vq, kv: kv_e, kv_valid: b * hkv_u * d * vk };
                glue.extend(varlen_call_glue(piece.rank, sizes, e, bwd));
                if allgather && !bwd {
                    // Query half read, output collected; the LSE expanded to 16 bf16 per (token,
                    // head), then collected.
                    glue.extend(copy(piece.rank, q_e, 2));
                    glue.extend(copy(piece.rank, q_e / 8, 2));
                } else if allgather {
                    // q and dout half reads, dq collected, `dk.add_` and `dv.add_` over the gathered
                    // length.
                    glue.extend(copy(piece.rank, q_e, 3));
                    glue.extend(add(piece.rank, kv_e, 2));
                }
            }
            if allgather && bwd {
                // `torch.zeros` of the gathered-length dK and dV.
                glue.extend(fill(piece.rank, kv_e, 2));
            }
            if !ring_step {
                continue;
            }
            let rank_kv = b * hkv_u * d * held_k;
            if half_q {
                glue.extend(copy(piece.rank, q_e, if bwd { 3 } else { 1 }));
            }
            if half_kv {
                glue.extend(copy(piece.rank, 2 * kv_e, 1));
            }
            if bwd {
                if ring_position(&step.label, "bwd") == Some((0, 0)) {
                    // `p2p_comm_buffers[0][0].copy_(kv)`.
                    glue.extend(copy(piece.rank, 2 * rank_kv, 1));
                }
                // dq update (`thd_grad_correction`); dK/dV `torch.cat` and update. The single ring
                // sends K/V and the dK/dV it carries in one buffer and waits for that transfer
                // before the dK/dV update ("wait until dKV is received"), so those two follow the
                // step's communication instead of hiding behind it; the double ring moves dK/dV on
                // process groups of their own ([`double_ring_backward`]).
                glue.extend(add(piece.rank, q_e, 1));
                let dkv = if double_ring { &mut glue } else { &mut waiting };
                dkv.extend(copy(piece.rank, 2 * kv_e, 1));
                dkv.extend(add(piece.rank, 2 * kv_e, 1));
            } else {
                let at = ring_position(&step.label, "fwd");
                if at == Some((0, 0)) {
                    // `torch.cat((k.unsqueeze(0), v.unsqueeze(0)))`: the rank's own K/V (step 0's keys).
                    glue.extend(copy(piece.rank, 2 * rank_kv, 1));
                    // `out = torch.zeros_like(q)` before the corrections.
                    corrections.extend(fill(piece.rank, b * piece.heads_q as u64 * d * held_q, 1));
                }
                if double_ring && matches!(at, Some((_, 0))) {
                    // `intra_p2p_comm_buffers[0].copy_(local_kv)` at the window's start.
                    glue.extend(copy(piece.rank, 2 * rank_kv, 1));
                }
                // `thd_out_correction`: the step's output rescaled into the running one.
                corrections.extend(add(piece.rank, q_e, 1));
            }
        }
        step.glue = glue;
        if !waiting.is_empty() {
            after_wait.push((k, waiting));
        }
    }
    for (k, glue) in after_wait.into_iter().rev() {
        let label = format!("{} dkv update", p.schedule.steps[k].label);
        p.schedule.steps.insert(k + 1, Step { label, compute: Vec::new(), messages: Vec::new(), glue });
    }
    if let Some(last) = p.schedule.steps.iter().rposition(|s| s.label.starts_with("fwd ring ")).filter(|_| !corrections.is_empty()) {
        p.schedule.steps.insert(last + 1, Step { label: "fwd out correction".into(), compute: Vec::new(), messages: Vec::new(), glue: corrections });
    }
}

/// Elements one varlen call moves: the padded tensors it is handed (`q`, and one of K or V: `kv`) and
/// the valid tokens' share of them it gathers and scatters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallSizes {
    pub q: u64,
    pub q_valid: u64,
    pub kv: u64,
    pub kv_valid: u64,
}

/// The memory-bound work around each FA3 call of the LongCA baselines (`_fa3_varlen_forward` /
/// `_fa3_varlen_backward` in `exps/dist_attn/baselines/utils_cp.py`): the valid tokens gathered into
/// the unpadded varlen layout (`fa_varlen_thd_unpad`: q, K, V; in backward also out and dout) and the
/// outputs scattered back into zero-filled padded tensors (`fa_varlen_thd_pad`: out; dq, dK, dV), one
/// kernel each. The LSE's own pad and unpad (4 bytes per token and head against 256 for q) are left
/// out.
pub fn varlen_call_glue(rank: usize, s: CallSizes, elem_bytes: usize, backward: bool) -> Vec<Glue> {
    let copy = |elems| Glue { rank, op: GlueOp::Copy { elems, elem_bytes } };
    let fill = copy;
    // Inputs: q (and out, dout in backward), K, V; outputs: out or dq (and dK, dV in backward).
    let (q_in, kv_out) = if backward { (3, 2) } else { (1, 0) };
    let mut v = Vec::new();
    v.extend((0..q_in).map(|_| copy(s.q_valid)));
    v.extend((0..2).map(|_| copy(s.kv_valid)));
    v.extend([fill(s.q), copy(s.q_valid)]);
    v.extend((0..kv_out).flat_map(|_| [fill(s.kv), copy(s.kv_valid)]));
    v
}

/// Backward messages of an autograd backward that follows its forward (see
/// [`Implementation::Longca`]): the all-to-alls of q, K/V, out and LSE are dropped (the forward saved
/// the head-sharded tensors), gradients move in the input dtype, and ring dK/dV messages are
/// overlapped like the K/V they travel with.
pub fn autograd_backward(s: &mut Schedule, layout: &CpLayout) {
    let scale = |b: u64| b * layout.elem_bytes as u64 / layout.acc_bytes() as u64;
    for step in s.steps.iter_mut().filter(|st| st.label.starts_with("bwd")) {
        step.messages.retain(|m| !matches!(m.what.as_str(), "a2a-q" | "a2a-kv" | "a2a-out" | "a2a-lse"));
        for m in &mut step.messages {
            match m.what.as_str() {
                "dkv" => {
                    m.bytes = scale(m.bytes);
                    m.overlapped = true;
                }
                "a2a-dq" | "a2a-dkv" | "dkv-return" | "dkv-reduce-scatter" => m.bytes = scale(m.bytes),
                _ => {}
            }
        }
    }
}

/// The dK/dV traffic of the baselines' double ring (LoongTrain; `FA3DoubleRingAttnFunc.backward` in
/// `exps/dist_attn/baselines/loongtrain.py` at 09fc31b2), which differs from the single ring's (dK/dV
/// travel with K/V, every hop hidden behind the next step): dK/dV move on process groups of their own,
/// and a window's last inner hop is posted after the window's last step and waited at once (exposed,
/// one per window, also when the whole ring is one window); the hop to the next window is waited after
/// that window's first step (hidden behind it); the last window's outer hop is exposed (the engine's
/// `dkv-return`). Steps are labelled `bwd ring <outer round>.<inner step>`.
pub fn double_ring_backward(s: &mut Schedule) {
    let rounds: Vec<(usize, (usize, usize))> = s.steps.iter().enumerate().filter_map(|(k, st)| ring_position(&st.label, "bwd").map(|p| (k, p))).collect();
    let Some(inner) = rounds.iter().map(|(_, (_, i))| i + 1).max() else { return };
    let returns: Vec<Message> = s.steps.iter().flat_map(|st| &st.messages).filter(|m| m.what == "dkv-return").cloned().collect();
    for &(k, (o, i)) in &rounds {
        let step = &mut s.steps[k];
        if inner > 1 && i == inner - 1 {
            let exposed: Vec<Message> =
                step.messages.iter().filter(|m| m.what == "dkv").map(|m| Message { what: "dkv-window-end".into(), overlapped: false, ..m.clone() }).collect();
            step.messages.extend(exposed);
        }
        if o > 0 && i == 0 {
            step.messages.extend(returns.iter().map(|m| Message { what: "dkv-outer".into(), overlapped: true, ..m.clone() }));
        }
    }
}

/// Per step and rank: compute seconds of the rank's pieces (a rank may have several pieces in a step).
/// The FA3 model costs each piece's varlen calls from its document segments ([`segments`]); the other
/// models time the piece's sub-mask (measured or roofline).
pub fn compute_times(p: &CpSetup, implementation: Implementation, timer: &mut PieceTimer) -> Result<Vec<Vec<f64>>, SimError> {
    let hkv = p.engine.piece_heads_kv(&p.layout);
    let world = p.schedule.world;
    let docs = Docs::of(&p.mask);
    let (place, split) = placement(p, implementation);
    if implementation == Implementation::Longca && matches!(timer.model, ComputeModel::Measured { .. }) {
        return Err(SimError::Bad("--impl longca: pieces are costed by a model (--compute-model fa3 or roofline), not executed".into()));
    }
    let mut out = Vec::with_capacity(p.schedule.steps.len());
    for step in &p.schedule.steps {
        let backward = step.label.starts_with("bwd");
        let mut per = vec![0.0; world];
        for piece in &step.compute {
            let calls = || docs.as_ref().map(|d| piece_calls(d, place, &piece.q, &piece.k, split));
            let model = timer.model.clone();
            let t = match (&model, implementation) {
                (ComputeModel::Fa3(f), _) if docs.is_some() => {
                    let shape = CallShape { heads_q: piece.heads_q, heads_kv: hkv, head_dim: p.layout.head_dim, backward, varlen: true };
                    let t = calls().unwrap_or_default().iter().map(|c| f.kernel.call_s(&c.repeat(p.layout.batch.max(1)), &shape)).sum();
                    timer.record(piece.rank, piece.area, piece.heads_q, backward);
                    t
                }
                (ComputeModel::Roofline(r), Implementation::Longca) => {
                    timer.record(piece.rank, piece.area, piece.heads_q, backward);
                    r.piece_s(piece.flops, calls().map(|c| c.len()).unwrap_or(1).max(1))
                }
                _ => {
                    let sub = block_mask(&p.mask, &piece.q, &piece.k);
                    let shape = PieceShape {
                        rank: piece.rank,
                        q: &piece.q,
                        k: &piece.k,
                        batch: p.layout.batch,
                        heads_q: piece.heads_q,
                        heads_kv: hkv,
                        head_dim: p.layout.head_dim,
                        backward,
                        flops: piece.flops,
                    };
                    timer.time_s(&shape, &sub)?
                }
            };
            per[piece.rank] += t;
        }
        out.push(per);
    }
    Ok(out)
}

/// One line naming the compute model and its parameters (goes into notes and meta.json).
pub fn model_name(m: &ComputeModel) -> String {
    match m {
        ComputeModel::Measured { device, .. } => format!("measured on {}", if device.is_cuda() { "cuda" } else { "cpu" }),
        ComputeModel::Roofline(r) => format!(
            "roofline {} {:.0} TFLOPS × {:.2} + {:.0} µs/launch, glue at {:.2} TB/s × {:.2}",
            r.device, r.peak_tflops, r.efficiency, r.launch_us, r.mem_tbps, r.mem_efficiency
        ),
        ComputeModel::Fa3(f) => format!(
            "fa3 tiles on {} ({} SMs, {:.0} TFLOPS; varlen fwd × {:.3} + {:.1} µs/item + {:.0} µs/call, varlen bwd × {:.3} + {:.1} µs/item + {:.0} µs/call), glue at {:.2} TB/s × {:.2} + {:.1} µs/launch",
            f.glue.device,
            f.kernel.sms,
            f.kernel.peak_tflops,
            f.kernel.varlen_fwd.efficiency,
            f.kernel.varlen_fwd.item_us,
            f.kernel.varlen_fwd.launch_us,
            f.kernel.varlen_bwd.efficiency,
            f.kernel.varlen_bwd.item_us,
            f.kernel.varlen_bwd.launch_us,
            f.glue.mem_tbps,
            f.glue.mem_efficiency,
            f.glue.launch_us
        ),
    }
}

/// Largest problem (attended pairs × heads × batch, relative to the largest piece) the measured model
/// still executes as a whole for the single-device baseline; beyond it the baseline is the sum of the
/// per-piece times (what one device would spend on the same pieces).
pub const SINGLE_MAX_PIECES: f64 = 64.0;

/// Per step and rank: seconds of the rank's glue work (merges, accumulation, copies; see `Glue`).
pub fn glue_times(p: &CpSetup, timer: &mut PieceTimer) -> Result<Vec<Vec<f64>>, SimError> {
    let world = p.schedule.world;
    let mut out = Vec::with_capacity(p.schedule.steps.len());
    for step in &p.schedule.steps {
        let mut per = vec![0.0; world];
        for g in &step.glue {
            per[g.rank] += timer.glue_s(&g.op, &p.layout)?;
        }
        out.push(per);
    }
    Ok(out)
}

/// Runs the simulation of `spec` with `model`.
pub fn simulate(spec: &SimSpec, model: ComputeModel) -> Result<SimReport, SimError> {
    simulate_with(spec, &setup(spec)?, model)
}

/// [`simulate`] of a spec already set up with [`setup`] (for callers that also show the schedule).
pub fn simulate_with(spec: &SimSpec, p: &CpSetup, model: ComputeModel) -> Result<SimReport, SimError> {
    let c = &spec.case;
    let mut timer = PieceTimer::new(model, c.head_dim, p.attention);
    let compute = compute_times(p, spec.implementation, &mut timer)?;
    let glue = glue_times(p, &mut timer)?;
    let outer_wait = p.engine.outer_prefetch_steps();
    let steps = predict::predict(&spec.topology, &p.schedule, &compute, &glue, outer_wait);
    let world = c.world_size;
    let rank_compute_s: Vec<f64> = (0..world).map(|r| compute.iter().map(|s| s[r]).sum()).collect();
    let rank_glue_s: Vec<f64> = (0..world).map(|r| glue.iter().map(|s| s[r]).sum()).collect();
    let total_s: f64 = steps.iter().map(|s| s.time_s).sum();
    let critical_compute_s: f64 = steps.iter().filter(|s| s.bound == "compute").map(|s| s.time_s).sum();
    let area = p.mask.area();
    let flops = pass_flops(area as u128 * c.heads.q as u128, c.head_dim, c.batch, c.pass);
    let mean_c = rank_compute_s.iter().sum::<f64>() / world as f64;
    let max_c = rank_compute_s.iter().copied().fold(0.0, f64::max);

    // Single-device baseline of the whole problem under the same compute model.
    let sum_pieces: f64 = rank_compute_s.iter().sum();
    let largest_piece = p.schedule.steps.iter().flat_map(|s| s.compute.iter()).map(|pc| pc.area as f64 * pc.heads_q as f64).fold(1.0, f64::max);
    let whole_work = area as f64 * c.heads.q as f64;
    let (single_s, single_how) = match (&timer.model, Docs::of(&p.mask)) {
        (ComputeModel::Fa3(f), Some(docs)) => {
            let whole = docs.whole().repeat(c.batch.max(1));
            let shape = |backward| CallShape { heads_q: c.heads.q, heads_kv: c.heads.kv, head_dim: c.head_dim, backward, varlen: true };
            let mut s = 0.0;
            if c.pass != Pass::Bwd {
                s += f.kernel.call_s(&whole, &shape(false));
            }
            if c.pass.includes_backward() {
                s += f.kernel.call_s(&whole, &shape(true));
            }
            (s, "fa3 model")
        }
        (ComputeModel::Roofline(_) | ComputeModel::Fa3(_), _) => {
            let mut s = 0.0;
            if c.pass != Pass::Bwd {
                s += timer.whole_problem_s(&p.mask, c.batch, c.heads.q, c.heads.kv, c.head_dim, false, flops / c.pass.factor())?;
            }
            if c.pass.includes_backward() {
                s += timer.whole_problem_s(&p.mask, c.batch, c.heads.q, c.heads.kv, c.head_dim, true, flops / c.pass.factor() * 2.5)?;
            }
            (s, "roofline")
        }
        (ComputeModel::Measured { .. }, _) if whole_work <= SINGLE_MAX_PIECES * largest_piece => {
            let f1 = flops / c.pass.factor();
            let mut s = 0.0;
            if c.pass != Pass::Bwd {
                s += timer.whole_problem_s(&p.mask, c.batch, c.heads.q, c.heads.kv, c.head_dim, false, f1)?;
            }
            if c.pass.includes_backward() {
                s += timer.whole_problem_s(&p.mask, c.batch, c.heads.q, c.heads.kv, c.head_dim, true, f1 * 2.5)?;
            }
            (s, "measured")
        }
        (ComputeModel::Measured { .. }, _) => (sum_pieces, "sum-of-pieces"),
    };
    let bytes_sent = p.schedule.bytes_sent().into_iter().max().unwrap_or(0);
    let imb = imbalance(&p.schedule.work());
    let compute_model = model_name(&timer.model);
    let note = format!(
        "projected: implementation {}; topology {}{}; compute {}; {} of {} pieces executed (identical pieces reused); glue {:.1}% of the critical rank's compute; single-device baseline {}; {}; sharding={}",
        spec.implementation.name(),
        spec.topology.name,
        if spec.calibrated {
            " (calibrated from attnbench comm)"
        } else if spec.topology.name == "h100-longca" {
            " (h100 with the inter-node bandwidth fitted to LongCA-bench's published CP figures)"
        } else {
            " (uncalibrated preset)"
        },
        compute_model,
        timer.executed,
        timer.requested,
        glue_share(&rank_compute_s, &rank_glue_s) * 100.0,
        single_how,
        p.engine.note(&p.layout),
        if spec.implementation == Implementation::Longca { "per-document zigzag".to_string() } else { p.shard.kind.to_string() }
    );
    Ok(SimReport {
        strategy: c.strategy.clone(),
        world_size: world,
        topology: spec.topology.clone(),
        calibrated: spec.calibrated,
        compute_model,
        steps,
        rank_compute_s,
        rank_glue_s,
        imbalance: imb,
        compute_imbalance: if mean_c > 0.0 { max_c / mean_c } else { 1.0 },
        total_s,
        critical_compute_s,
        flops,
        tflops_per_gpu: if total_s > 0.0 { flops / total_s / world as f64 / 1e12 } else { 0.0 },
        single_s,
        single_how: single_how.to_string(),
        scaling_eff: if total_s > 0.0 { single_s / (world as f64 * total_s) } else { 0.0 },
        bytes_sent,
        pieces_requested: timer.requested,
        pieces_executed: timer.executed,
        mask_area: area,
        density: p.mask.density(),
        note,
    })
}

/// Glue seconds over glue + attention seconds of the busiest rank.
pub fn glue_share(compute: &[f64], glue: &[f64]) -> f64 {
    let busiest = (0..compute.len()).max_by(|&a, &b| (compute[a] + glue[a]).total_cmp(&(compute[b] + glue[b])));
    busiest.map(|r| if compute[r] + glue[r] > 0.0 { glue[r] / (compute[r] + glue[r]) } else { 0.0 }).unwrap_or(0.0)
}

/// The CSV row of a simulated case: kind `simulated`, timing mode `model`, times from the prediction.
pub fn to_row(spec: &SimSpec, rep: &SimReport, run_id: &str, device_name: &str) -> Row {
    let case = Case { kind: CaseKind::Simulated, ..spec.case.clone() };
    let mut row = Row::for_case(run_id, &case, device_name);
    row.strategy_params = crate::cp::setup::strategy_params(&case);
    row.status = Status::Ok;
    row.mask_area = rep.mask_area as f64;
    row.density = rep.density;
    row.flops = rep.flops;
    let ms = rep.total_s * 1e3;
    row.ms_median = Some(ms);
    row.ms_p20 = Some(ms);
    row.ms_p80 = Some(ms);
    row.cv = Some(0.0);
    row.tflops = Some(rep.tflops_per_gpu * spec.case.world_size as f64);
    row.tflops_per_gpu = Some(rep.tflops_per_gpu);
    row.mfu = crate::flops::mfu(rep.tflops_per_gpu, device_name, spec.case.dtype.name());
    row.timing_mode = "model".into();
    row.imbalance = Some(rep.imbalance);
    row.bytes_sent = Some(rep.bytes_sent);
    row.bandwidth_gbps = Some(rep.bytes_sent as f64 / rep.total_s.max(1e-30) / 1e9);
    row.scaling_eff = Some(rep.scaling_eff);
    row.note = rep.note.clone();
    row
}

#[cfg(test)]
mod tests;
