//! Exact attention over an arbitrary range mask, slice by slice (the FFA / MagiAttention idea with
//! stock kernels): the mask's slices are put into *groups* — one slice kind per group, pairwise
//! disjoint query ranges — and each group is one kernel launch; groups are merged with their
//! log-sum-exp. Because slices never share an attended (query, key) pair, merging partial results over
//! them is exact.
//!
//! - CPU (and any device without the flash varlen kernel): full slices and square causal slices in
//!   f32/bf16/f16 run on torch's fused CPU flash kernel (`_scaled_dot_product_flash_attention_for_cpu`,
//!   which returns the LSE; its backward takes the final out/lse); every other slice — and everything in
//!   f64 — is computed densely on its own rectangle (QKᵀ, masked by the slice's kind, f32 accumulation,
//!   f64 for f64 inputs) in row chunks of at most [`CHUNK_ELEMS`] scores. Pieces are merged into the
//!   running result by LSE.
//! - CUDA: one `at::_flash_attention_forward` varlen call per group through the shim — or a single
//!   call when the whole mask is one native FlashAttention window (documents, sliding windows; see
//!   `varlen::window_form`); FlashAttention-2 aligns causal bottom-right like our model, inv_causal is causal on
//!   reversed rows and keys, bi_causal is a (Lk − Lq, 0) window.
//!
//! Tensor conventions: q `[B, Hq, Sq, D]`, k and v `[B, Hkv, Sk, D]`, LSE `[B, Hq, Sq]` f32 natural log,
//! `−inf` for a row that attends nothing (its output is 0). `Hq` must be a multiple of `Hkv` (GQA:
//! query head h uses KV head h / (Hq / Hkv)).

use tch::{Device, Kind, Tensor};

use super::varlen::{mask_plans, planned_backward, planned_forward, CudaGroupKernel, CudaVarlen};
use super::BackendError;
use crate::mask::{clip_slice, Mask, Slice, SliceKind};

/// Upper bound on the scores one dense piece materialises (B · Hq · rows · keys), 2²⁴ = 64 MiB in f32.
pub const CHUNK_ELEMS: i64 = 1 << 24;

/// One kernel launch of the sliced backend: slices of a single kind (and, for bi_causal, a single
/// window) whose query ranges are pairwise disjoint, so a varlen kernel can pack them as sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub kind: SliceKind,
    pub slices: Vec<Slice>,
}

/// Greedy interval colouring per kind: slices sorted by query start go to the first group of their kind
/// (and bi_causal window `Lk − Lq`) whose last query range ends at or before their start. Optimal for
/// interval graphs, so the number of launches is the maximum number of same-kind slices over any row.
pub fn plan_groups(mask: &Mask) -> Vec<Group> {
    let mut slices: Vec<&Slice> = mask.slices().iter().collect();
    slices.sort_by_key(|s| (s.kind, s.q.start, s.k.start));
    let mut groups: Vec<(Group, usize, i64)> = Vec::new(); // (group, last q end, window key)
    for s in slices {
        let wkey = if s.kind == SliceKind::BiCausal { s.k_len() as i64 - s.q_len() as i64 } else { 0 };
        match groups.iter_mut().find(|(g, end, w)| g.kind == s.kind && *w == wkey && *end <= s.q.start) {
            Some((g, end, _)) => {
                g.slices.push(s.clone());
                *end = s.q.end;
            }
            None => groups.push((Group { kind: s.kind, slices: vec![s.clone()] }, s.q.end, wkey)),
        }
    }
    groups.into_iter().map(|(g, _, _)| g).collect()
}

/// CUDA with a 16-bit dtype: the FlashAttention-2 varlen kernel, one launch per group. Everything else
/// (CPU; fp32/fp64 on CUDA, which FA2 does not take) uses the dense per-slice path.
fn uses_flash(q: &Tensor) -> bool {
    q.device().is_cuda() && matches!(q.kind(), Kind::BFloat16 | Kind::Half)
}

/// Kernel launches per forward call: one per group on the flash path, one per piece on the CPU
/// (a fused kernel call or a dense block; reported in the row's note).
pub fn launches(q: &Tensor, mask: &Mask) -> usize {
    if uses_flash(q) {
        mask_plans(mask, 1, true).len()
    } else {
        pieces(q, mask, q.size()[0] * q.size()[1]).len()
    }
}

/// Accumulation kind: f64 for f64 inputs (the reference and gradient checks), f32 otherwise.
fn acc_kind(k: Kind) -> Kind {
    if k == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

struct Dims {
    b: i64,
    hq: i64,
    hkv: i64,
    sq: i64,
    sk: i64,
    d: i64,
}

fn check_inputs(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask) -> Result<Dims, BackendError> {
    let (qs, ks, vs) = (q.size(), k.size(), v.size());
    if qs.len() != 4 || ks.len() != 4 || vs.len() != 4 {
        return Err(BackendError::Invalid(format!("q, k, v must be 4-D [B, H, S, D]; got {qs:?}, {ks:?}, {vs:?}")));
    }
    if ks != vs || qs[0] != ks[0] || qs[3] != ks[3] {
        return Err(BackendError::Invalid(format!("q {qs:?} and k/v {ks:?}/{vs:?} disagree on B, D or shape")));
    }
    if ks[1] == 0 || qs[1] % ks[1] != 0 {
        return Err(BackendError::Invalid(format!("query heads {} are not a multiple of KV heads {}", qs[1], ks[1])));
    }
    if mask.seqlen_q as i64 != qs[2] || mask.seqlen_k as i64 != ks[2] {
        return Err(BackendError::Invalid(format!("mask is {}×{} but q has {} rows and k {} keys", mask.seqlen_q, mask.seqlen_k, qs[2], ks[2])));
    }
    Ok(Dims { b: qs[0], hq: qs[1], hkv: ks[1], sq: qs[2], sk: ks[2], d: qs[3] })
}

/// Boolean `[lq, lk]` tensor of the attended pairs of a slice kind on an `lq × lk` rectangle, or `None`
/// for `Full` (nothing to mask). Same rule as [`Slice::row_keys`].
fn kind_mask(kind: SliceKind, lq: i64, lk: i64, device: Device) -> Option<Tensor> {
    if kind == SliceKind::Full {
        return None;
    }
    let a = Tensor::arange(lq, (Kind::Int64, device)).unsqueeze(1);
    let b = Tensor::arange(lk, (Kind::Int64, device)).unsqueeze(0);
    let upper = || b.le_tensor(&(&a + (lk - lq)));
    let lower = || b.ge_tensor(&a);
    Some(match kind {
        SliceKind::Full => unreachable!(),
        SliceKind::Causal => upper(),
        SliceKind::InvCausal => lower(),
        SliceKind::BiCausal => upper().logical_and(&lower()),
    })
}

/// Whether a slice runs on torch's fused CPU flash kernel (`_scaled_dot_product_flash_attention_for_cpu`,
/// which returns the LSE and has a backward taking out/lse): full slices, and causal slices that are
/// square — SDPA's `is_causal` is top-left aligned, which equals our bottom-right rule only when
/// lq == lk. f64 keeps the dense path (it is the reference-grade precision the checks rely on).
fn fused_cpu_slice(q: &Tensor, s: &Slice) -> bool {
    q.device() == Device::Cpu
        && matches!(q.kind(), Kind::Float | Kind::BFloat16 | Kind::Half)
        && (s.kind == SliceKind::Full || (s.kind == SliceKind::Causal && s.q_len() == s.k_len()))
}

/// A slice's q rows `[B, Hq, lq, D]` and keys / values `[B, Hq, lk, D]` (KV heads repeated for GQA),
/// contiguous, in the input dtype — the layout the fused CPU kernel takes.
fn slice_qkv_repeated(q: &Tensor, k: &Tensor, v: &Tensor, s: &Slice, dm: &Dims) -> Result<(Tensor, Tensor, Tensor), BackendError> {
    let g = dm.hq / dm.hkv;
    let (lq, lk) = (s.q_len() as i64, s.k_len() as i64);
    let qs = q.f_narrow(2, s.q.start as i64, lq)?.f_contiguous()?;
    let rep = |t: &Tensor| -> Result<Tensor, BackendError> {
        let t = t.f_narrow(2, s.k.start as i64, lk)?;
        Ok(if g > 1 { t.f_repeat_interleave_self_int(g, 1, None)?.f_contiguous()? } else { t.f_contiguous()? })
    };
    Ok((qs, rep(k)?, rep(v)?))
}

/// Splits every slice into row chunks whose dense score block stays under [`CHUNK_ELEMS`]; each piece
/// is again an exact slice (via [`clip_slice`]).
fn pieces(q: &Tensor, mask: &Mask, per_row_elems: i64) -> Vec<Slice> {
    let mut out = Vec::new();
    for s in mask.slices() {
        if fused_cpu_slice(q, s) {
            // The fused kernel tiles internally: no score block is materialised, no chunking needed.
            out.push(s.clone());
            continue;
        }
        let rows = (CHUNK_ELEMS / (per_row_elems * s.k_len() as i64).max(1)).max(1) as usize;
        if rows >= s.q_len() {
            out.push(s.clone());
            continue;
        }
        let mut r = s.q.start;
        while r < s.q.end {
            let e = (r + rows).min(s.q.end);
            out.extend(clip_slice(s, r..e, s.k.clone()));
            r = e;
        }
    }
    out
}

/// Scores of one piece as `[B, Hkv, G, lq, lk]` (scaled, masked with −inf), plus the piece's q rows
/// `[B, Hkv, G, lq, D]` and keys / values `[B, Hkv, 1, lk, D]`, all in the accumulation kind.
fn piece_scores(q: &Tensor, k: &Tensor, v: &Tensor, s: &Slice, dm: &Dims, scale: f64, acc: Kind) -> Result<(Tensor, Tensor, Tensor, Tensor), BackendError> {
    let g = dm.hq / dm.hkv;
    let (lq, lk) = (s.q_len() as i64, s.k_len() as i64);
    let qs = q.f_narrow(2, s.q.start as i64, lq)?.f_to_kind(acc)?.f_reshape([dm.b, dm.hkv, g, lq, dm.d])?;
    let ks = k.f_narrow(2, s.k.start as i64, lk)?.f_to_kind(acc)?.f_unsqueeze(2)?;
    let vs = v.f_narrow(2, s.k.start as i64, lk)?.f_to_kind(acc)?.f_unsqueeze(2)?;
    let mut scores = qs.f_matmul(&ks.f_transpose(-1, -2)?)?.f_mul_scalar(scale)?;
    if let Some(m) = kind_mask(s.kind, lq, lk, q.device()) {
        scores = scores.f_masked_fill(&m.f_logical_not()?, f64::NEG_INFINITY)?;
    }
    Ok((scores, qs, ks, vs))
}

/// −inf entries replaced by 0, so `exp(x − safe(lse))` is 0 (not NaN) on rows that attend nothing.
fn finite_or_zero(lse: &Tensor) -> Result<Tensor, BackendError> {
    let inf = lse.f_isinf()?;
    Ok(lse.f_masked_fill(&inf, 0.0)?)
}

/// Exact attention over an arbitrary range mask (local coordinates: `mask.seqlen_q` == q's S,
/// `mask.seqlen_k` == k's S). GQA: Hq a multiple of Hkv. Returns (out `[B, Hq, Sq, D]` in q's dtype,
/// lse `[B, Hq, Sq]` f32 — f64 when q is f64).
pub fn sliced_forward(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> Result<(Tensor, Tensor), BackendError> {
    let dm = check_inputs(q, k, v, mask)?;
    if uses_flash(q) {
        let plans = mask_plans(mask, q.size()[0] as usize, true);
        let (o, l, _) = planned_forward(&CudaGroupKernel(CudaVarlen::Flash), &plans, q, k, v, scale)?;
        return Ok((o, l));
    }
    let acc = acc_kind(q.kind());
    let dev = q.device();
    let out = Tensor::f_zeros([dm.b, dm.hq, dm.sq, dm.d], (acc, dev))?;
    let lse = Tensor::f_full([dm.b, dm.hq, dm.sq], f64::NEG_INFINITY, (acc, dev))?;
    for s in pieces(q, mask, dm.b * dm.hq) {
        let (lq, q0) = (s.q_len() as i64, s.q.start as i64);
        let (po, plse) = if fused_cpu_slice(q, &s) {
            let (qs, ks, vs) = slice_qkv_repeated(q, k, v, &s, &dm)?;
            let (o, l) = Tensor::f_internal_scaled_dot_product_flash_attention_for_cpu(&qs, &ks, &vs, 0.0, s.kind == SliceKind::Causal, None::<Tensor>, scale)?;
            (o.f_to_kind(acc)?, l.f_to_kind(acc)?)
        } else {
            let (scores, _, _, vs) = piece_scores(q, k, v, &s, &dm, scale, acc)?;
            let plse = scores.f_logsumexp([-1], false)?; // [B, Hkv, G, lq]
            let p = scores.f_sub(&finite_or_zero(&plse)?.f_unsqueeze(-1)?)?.f_exp()?;
            (p.f_matmul(&vs)?.f_reshape([dm.b, dm.hq, lq, dm.d])?, plse.f_reshape([dm.b, dm.hq, lq])?)
        };
        let mut o_rows = out.f_narrow(2, q0, lq)?;
        let mut l_rows = lse.f_narrow(2, q0, lq)?;
        let (mo, ml) = merge_acc(&o_rows, &l_rows, &po, &plse)?;
        o_rows.f_copy_(&mo)?;
        l_rows.f_copy_(&ml)?;
    }
    let lse_kind = if acc == Kind::Double { Kind::Double } else { Kind::Float };
    Ok((out.f_to_kind(q.kind())?, lse.f_to_kind(lse_kind)?))
}

/// LSE merge in the accumulation kind (no dtype change).
fn merge_acc(o1: &Tensor, lse1: &Tensor, o2: &Tensor, lse2: &Tensor) -> Result<(Tensor, Tensor), BackendError> {
    let lse = lse1.f_logaddexp(lse2)?;
    let safe = finite_or_zero(&lse)?;
    let w1 = lse1.f_sub(&safe)?.f_exp()?.f_unsqueeze(-1)?;
    let w2 = lse2.f_sub(&safe)?.f_exp()?.f_unsqueeze(-1)?;
    let out = o1.f_mul(&w1)?.f_add(&o2.f_mul(&w2)?)?;
    Ok((out, lse))
}

#[cfg(feature = "test-hooks")]
thread_local! {
    /// (calls, output elements) of `RunningMerge::add` on this thread: lets tests compare the merges a
    /// rank (one thread of a local world) really ran with the simulator's glue model of them.
    pub static MERGES_ON_THIS_THREAD: std::cell::Cell<(usize, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Merge two partial results over disjoint key sets of the same rows: lse = logaddexp(lse1, lse2),
/// out = o1·exp(lse1 − lse) + o2·exp(lse2 − lse). −inf-safe: a row empty in both stays (0, −inf), a
/// row empty in one takes the other. Computed in f32 (f64 for f64 inputs); out is returned in o1's
/// dtype and lse in f32 (f64 for f64 inputs).
pub fn merge_partials(o1: &Tensor, lse1: &Tensor, o2: &Tensor, lse2: &Tensor) -> (Tensor, Tensor) {
    let acc = acc_kind(o1.kind());
    let (o, l) = merge_acc(&o1.to_kind(acc), &lse1.to_kind(acc), &o2.to_kind(acc), &lse2.to_kind(acc))
        .unwrap_or_else(|e| panic!("merge_partials: shapes must match (o [B,H,S,D], lse [B,H,S]): {e}"));
    (o.to_kind(o1.kind()), l)
}

/// The running result of a block of rows over successive disjoint key blocks (a ring's steps). It
/// stays in the accumulation dtype (f32; f64 for f64) between steps and each partial is merged in
/// place: `lse' = logaddexp(lse, plse)`, then `out ← out·exp(lse − lse')` (`mul_`) and
/// `out += part·exp(plse − lse')` (`addcmul_`, the partial read in its own dtype). Per partial that
/// moves (4a + e) bytes per output element through memory (a = accumulation, e = partial element
/// size: 18 for bf16, 20 for f32) where casting up, merging and casting back each step moves
/// (3e + 10a) (46 / 28); the cast to the input dtype happens once, in [`RunningMerge::finish`].
/// −inf-safe like [`merge_partials`]: rows no block attends stay (0, −inf).
pub struct RunningMerge {
    out: Tensor,
    lse: Tensor,
}

impl RunningMerge {
    /// Empty result (out 0, lse −inf) for `[b, h, s, d]` rows of inputs of `kind`.
    pub fn new(b: i64, h: i64, s: i64, d: i64, kind: Kind, device: tch::Device) -> Result<Self, BackendError> {
        let acc = acc_kind(kind);
        Ok(RunningMerge { out: Tensor::f_zeros([b, h, s, d], (acc, device))?, lse: Tensor::f_full([b, h, s], f64::NEG_INFINITY, (acc, device))? })
    }

    /// Merges one partial (out `[b, h, s, d]` in any float dtype, lse `[b, h, s]` in the
    /// accumulation dtype) into the running result.
    pub fn add(&mut self, part_out: &Tensor, part_lse: &Tensor) -> Result<(), BackendError> {
        #[cfg(feature = "test-hooks")]
        MERGES_ON_THIS_THREAD.with(|c| {
            let (n, e) = c.get();
            c.set((n + 1, e + part_out.numel() as u64));
        });
        let lse = self.lse.f_logaddexp(part_lse)?;
        let safe = finite_or_zero(&lse)?;
        let w_run = self.lse.f_sub(&safe)?.f_exp()?.f_unsqueeze(-1)?;
        let w_part = part_lse.f_sub(&safe)?.f_exp()?.f_unsqueeze(-1)?;
        let _ = self.out.f_mul_(&w_run)?;
        let _ = self.out.f_addcmul_(part_out, &w_part)?;
        self.lse = lse;
        Ok(())
    }

    /// The result: out in `kind` (one cast), lse in the accumulation dtype.
    pub fn finish(self, kind: Kind) -> Result<(Tensor, Tensor), BackendError> {
        Ok((self.out.f_to_kind(kind)?, self.lse))
    }
}

/// Gradients of this block's contribution given the FINAL (possibly merged over several blocks) out
/// and lse of the rows and dout: returns (dq `[B, Hq, Sq, D]`, dk `[B, Hkv, Sk, D]`, dv `[B, Hkv, Sk, D]`)
/// in the dtypes of q, k, v. Standard flash-attention backward: P = exp(S·scale − lse) on attended
/// pairs, dV = Pᵀ dO, dP = dO Vᵀ, Drow = rowsum(dO∘O), dS = P∘(dP − Drow), dQ = dS K·scale,
/// dK = dSᵀ Q·scale (summed over the query heads of a KV group).
#[allow(clippy::too_many_arguments)]
pub fn sliced_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    mask: &Mask,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor), BackendError> {
    let dm = check_inputs(q, k, v, mask)?;
    if uses_flash(q) {
        let plans = mask_plans(mask, q.size()[0] as usize, true);
        return planned_backward(&CudaGroupKernel(CudaVarlen::Flash), &plans, q, k, v, out, lse, dout, scale);
    }
    let acc = acc_kind(q.kind());
    let dev = q.device();
    let g = dm.hq / dm.hkv;
    if out.size() != q.size() || dout.size() != q.size() || lse.size() != [dm.b, dm.hq, dm.sq] {
        return Err(BackendError::Invalid(format!(
            "out {:?} / dout {:?} must match q {:?}, lse {:?} must be [B, Hq, Sq]",
            out.size(),
            dout.size(),
            q.size(),
            lse.size()
        )));
    }
    let dout_a = dout.f_to_kind(acc)?;
    let drow = dout_a.f_mul(&out.f_to_kind(acc)?)?.f_sum_dim_intlist(&[-1i64][..], false, acc)?; // [B, Hq, Sq]
    let lse_safe = finite_or_zero(&lse.f_to_kind(acc)?)?;
    let dq = Tensor::f_zeros([dm.b, dm.hq, dm.sq, dm.d], (acc, dev))?;
    let dk = Tensor::f_zeros([dm.b, dm.hkv, dm.sk, dm.d], (acc, dev))?;
    let dv = Tensor::f_zeros([dm.b, dm.hkv, dm.sk, dm.d], (acc, dev))?;
    for s in pieces(q, mask, dm.b * dm.hq) {
        let (lq, lk, q0, k0) = (s.q_len() as i64, s.k_len() as i64, s.q.start as i64, s.k.start as i64);
        if fused_cpu_slice(q, &s) {
            // torch's fused CPU flash backward, fed the FINAL out and lse of these rows (so this block's
            // dq, dk, dv are its share of the merged attention, as in ring attention).
            let (qs, ks, vs) = slice_qkv_repeated(q, k, v, &s, &dm)?;
            let o_rows = out.f_narrow(2, q0, lq)?.f_to_kind(q.kind())?.f_contiguous()?;
            let l_rows = lse.f_narrow(2, q0, lq)?.f_to_kind(Kind::Float)?.f_contiguous()?;
            let do_rows = dout.f_narrow(2, q0, lq)?.f_to_kind(q.kind())?.f_contiguous()?;
            let (pdq, pdk, pdv) = Tensor::f_internal_scaled_dot_product_flash_attention_for_cpu_backward(
                &do_rows,
                &qs,
                &ks,
                &vs,
                &o_rows,
                &l_rows,
                0.0,
                s.kind == SliceKind::Causal,
                None::<Tensor>,
                scale,
            )?;
            let fold = |t: Tensor| -> Result<Tensor, BackendError> {
                Ok(t.f_to_kind(acc)?.f_reshape([dm.b, dm.hkv, g, lk, dm.d])?.f_sum_dim_intlist(&[2i64][..], false, acc)?)
            };
            let _ = dq.f_narrow(2, q0, lq)?.f_add_(&pdq.f_to_kind(acc)?)?;
            let _ = dk.f_narrow(2, k0, lk)?.f_add_(&fold(pdk)?)?;
            let _ = dv.f_narrow(2, k0, lk)?.f_add_(&fold(pdv)?)?;
            continue;
        }
        let (scores, qs, ks, vs) = piece_scores(q, k, v, &s, &dm, scale, acc)?;
        let l = lse_safe.f_narrow(2, q0, lq)?.f_reshape([dm.b, dm.hkv, g, lq, 1])?;
        let p = scores.f_sub(&l)?.f_exp()?; // [B, Hkv, G, lq, lk]
        let dos = dout_a.f_narrow(2, q0, lq)?.f_reshape([dm.b, dm.hkv, g, lq, dm.d])?;
        let dr = drow.f_narrow(2, q0, lq)?.f_reshape([dm.b, dm.hkv, g, lq, 1])?;
        let pdv = p.f_transpose(-1, -2)?.f_matmul(&dos)?.f_sum_dim_intlist(&[2i64][..], false, acc)?; // [B, Hkv, lk, D]
        let dp = dos.f_matmul(&vs.f_transpose(-1, -2)?)?;
        let ds = p.f_mul(&dp.f_sub(&dr)?)?;
        let pdq = ds.f_matmul(&ks)?.f_mul_scalar(scale)?.f_reshape([dm.b, dm.hq, lq, dm.d])?;
        let pdk = ds.f_transpose(-1, -2)?.f_matmul(&qs)?.f_sum_dim_intlist(&[2i64][..], false, acc)?.f_mul_scalar(scale)?;
        let _ = dq.f_narrow(2, q0, lq)?.f_add_(&pdq)?;
        let _ = dk.f_narrow(2, k0, lk)?.f_add_(&pdk)?;
        let _ = dv.f_narrow(2, k0, lk)?.f_add_(&pdv)?;
    }
    Ok((dq.f_to_kind(q.kind())?, dk.f_to_kind(k.kind())?, dv.f_to_kind(v.kind())?))
}

/// The `sliced` backend: [`sliced_forward`] / [`sliced_backward`] per head group of the mask (explicit
/// backward, no autograd).
pub struct Sliced;
pub static SLICED: Sliced = Sliced;

struct SlicedKernel {
    /// (query heads, KV heads, mask) per head group.
    parts: Vec<(std::ops::Range<i64>, std::ops::Range<i64>, Mask)>,
    note: String,
}

impl super::Backend for Sliced {
    fn name(&self) -> &'static str {
        "sliced"
    }
    fn summary(&self) -> &'static str {
        "any range mask: one launch per slice group (CUDA: flash varlen), merged by LSE; explicit backward"
    }
    fn supports(&self, case: &crate::case::Case, masks: &crate::mask::HeadMasks) -> Result<(), String> {
        let g = masks.groups.len();
        if !case.heads.kv.is_multiple_of(g) {
            return Err(format!("{g} head groups do not divide the {} KV heads (a KV head would see two masks)", case.heads.kv));
        }
        Ok(())
    }
    fn autograd(&self) -> bool {
        false
    }
    fn prepare(&self, case: &crate::case::Case, x: &super::Inputs) -> Result<Box<dyn super::Kernel>, BackendError> {
        let g = x.masks.groups.len() as i64;
        let (hq, hkv) = (case.heads.q as i64 / g, case.heads.kv as i64 / g);
        let parts: Vec<_> =
            x.masks.groups.iter().enumerate().map(|(i, m)| (i as i64 * hq..(i as i64 + 1) * hq, i as i64 * hkv..(i as i64 + 1) * hkv, m.clone())).collect();
        let launches: usize = parts.iter().map(|p| launches(&x.q, &p.2)).sum();
        let how = if uses_flash(&x.q) {
            "flash varlen launches (one per slice group, or one native window)".to_string()
        } else {
            let fused: usize = parts.iter().map(|p| p.2.slices().iter().filter(|s| fused_cpu_slice(&x.q, s)).count()).sum();
            format!("CPU pieces ({fused} on torch's fused CPU flash kernel, the rest dense with f32 accumulation)")
        };
        let gqa = if case.heads.q == case.heads.kv { "MHA" } else { "GQA by KV-group broadcast (fused pieces: KV heads repeated)" };
        Ok(Box::new(SlicedKernel { parts, note: format!("{launches} {how} per call; {gqa}") }))
    }
}

impl super::Kernel for SlicedKernel {
    fn forward(&mut self, x: &super::Inputs) -> Result<super::Fwd, BackendError> {
        if let [(_, _, m)] = self.parts.as_slice() {
            let (o, l) = sliced_forward(&x.q, &x.k, &x.v, m, x.scale)?;
            return Ok(super::Fwd { out: o, lse: Some(l) });
        }
        let (mut os, mut ls) = (vec![], vec![]);
        for (hq, hk, m) in &self.parts {
            let n = |t: &Tensor, r: &std::ops::Range<i64>| t.f_narrow(1, r.start, r.end - r.start);
            let (o, l) = sliced_forward(&n(&x.q, hq)?, &n(&x.k, hk)?, &n(&x.v, hk)?, m, x.scale)?;
            os.push(o);
            ls.push(l);
        }
        Ok(super::Fwd { out: Tensor::f_cat(&os, 1)?, lse: Some(Tensor::f_cat(&ls, 1)?) })
    }
    fn backward(&mut self, x: &super::Inputs, f: &super::Fwd) -> Result<(Tensor, Tensor, Tensor), BackendError> {
        let lse = f.lse.as_ref().ok_or_else(|| BackendError::Invalid("sliced backward needs the forward's LSE".into()))?;
        let (mut dq, mut dk, mut dv) = (vec![], vec![], vec![]);
        for (hq, hk, m) in &self.parts {
            let n = |t: &Tensor, r: &std::ops::Range<i64>| t.f_narrow(1, r.start, r.end - r.start);
            let (a, b, c) = sliced_backward(&n(&x.q, hq)?, &n(&x.k, hk)?, &n(&x.v, hk)?, &n(&f.out, hq)?, &n(lse, hq)?, &n(&x.dout, hq)?, m, x.scale)?;
            dq.push(a);
            dk.push(b);
            dv.push(c);
        }
        Ok((Tensor::f_cat(&dq, 1)?, Tensor::f_cat(&dk, 1)?, Tensor::f_cat(&dv, 1)?))
    }
    fn note(&self) -> String {
        self.note.clone()
    }
    fn cpu_bytes(&self, x: &super::Inputs, pass: crate::flops::Pass) -> u64 {
        // f32 accumulators (out + lse, or dq/dk/dv), plus the largest piece's working set: a dense piece
        // holds its scores and probabilities (and dP, dS for backward) in f32, ≤ CHUNK_ELEMS each; a
        // fused piece holds no score block, only its contiguous q rows and GQA-repeated K/V (and their
        // gradients for backward) in the input dtype (the kernel's per-thread tile buffers are not counted).
        let bwd = pass != crate::flops::Pass::Fwd;
        let acc = (x.q.numel() + x.k.numel() * 2) as u64 * 4;
        let (b, hq, d) = (x.q.size()[0] as u64, x.q.size()[1] as u64, x.q.size()[3] as u64);
        let elem = x.q.kind().elt_size_in_bytes() as u64;
        let piece_bytes = |s: &Slice| -> u64 {
            let (lq, lk) = (s.q_len() as u64, s.k_len() as u64);
            if fused_cpu_slice(&x.q, s) {
                b * hq * (lq + 2 * lk) * d * elem * if bwd { 2 } else { 1 }
            } else {
                (b * hq * lq * lk).min(CHUNK_ELEMS as u64) * 4 * if bwd { 4 } else { 2 }
            }
        };
        let worst = self.parts.iter().flat_map(|p| p.2.slices().iter().map(piece_bytes)).max().unwrap_or(0);
        acc + worst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Obviously-correct f64 attention with a dense mask, differentiable through autograd.
    fn dense_ref(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> (Tensor, Tensor) {
        let (hq, hkv) = (q.size()[1], k.size()[1]);
        let k = k.repeat_interleave_self_int(hq / hkv, 1, None);
        let v = v.repeat_interleave_self_int(hq / hkv, 1, None);
        let dense: Vec<u8> = mask.to_dense().into_iter().map(u8::from).collect();
        let m = Tensor::from_slice(&dense).reshape([mask.seqlen_q as i64, mask.seqlen_k as i64]).to_kind(Kind::Bool);
        let s = q.matmul(&k.transpose(-1, -2)) * scale;
        let s = s.masked_fill(&m.logical_not(), f64::NEG_INFINITY);
        let lse = s.logsumexp([-1], false);
        let p = (s - lse.masked_fill(&lse.isinf(), 0.0).unsqueeze(-1)).exp();
        (p.matmul(&v), lse)
    }

    fn rand_qkv(b: i64, hq: i64, hkv: i64, sq: i64, sk: i64, d: i64, seed: i64) -> (Tensor, Tensor, Tensor) {
        tch::manual_seed(seed);
        let o = (Kind::Double, Device::Cpu);
        (Tensor::randn([b, hq, sq, d], o), Tensor::randn([b, hkv, sk, d], o), Tensor::randn([b, hkv, sk, d], o))
    }

    /// A random valid mask built from a random grid: each cell of a random partition of the rectangle
    /// gets a random kind or nothing — several slices of each kind, so several groups.
    fn random_mask(sq: usize, sk: usize, seed: u64) -> Mask {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let cuts = |n: usize, rng: &mut ChaCha8Rng| {
            let mut c: Vec<usize> = (0..3).map(|_| rng.gen_range(1..n)).collect();
            c.push(0);
            c.push(n);
            c.sort_unstable();
            c.dedup();
            c
        };
        let (qc, kc) = (cuts(sq, &mut rng), cuts(sk, &mut rng));
        let mut slices = Vec::new();
        for qw in qc.windows(2) {
            for kw in kc.windows(2) {
                let r: usize = rng.gen_range(0..6);
                if r < 4 {
                    slices.push(Slice::new(qw[0]..qw[1], kw[0]..kw[1], SliceKind::ALL[r]));
                }
            }
        }
        Mask::rect(sq, sk, slices).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn groups_have_one_kind_and_disjoint_rows() {
        for seed in 0..20 {
            let m = random_mask(50, 40, seed);
            let groups = plan_groups(&m);
            let n: usize = groups.iter().map(|g| g.slices.len()).sum();
            assert_eq!(n, m.slices().len());
            for g in &groups {
                assert!(g.slices.iter().all(|s| s.kind == g.kind));
                for w in g.slices.windows(2) {
                    assert!(w[0].q.end <= w[1].q.start, "{:?}", g);
                }
            }
        }
    }

    #[test]
    fn forward_matches_dense_reference_on_random_masks_gqa() {
        for seed in 0..12 {
            let (sq, sk) = (37 + seed as usize, 29 + 2 * seed as usize);
            let m = random_mask(sq, sk, seed);
            let (q, k, v) = rand_qkv(2, 4, 2, sq as i64, sk as i64, 8, seed as i64);
            let (o, l) = sliced_forward(&q, &k, &v, &m, 0.3).unwrap();
            let (ro, rl) = dense_ref(&q, &k, &v, &m, 0.3);
            assert!(max_diff(&o, &ro) < 1e-10, "seed {seed}: out differs by {}", max_diff(&o, &ro));
            // −inf rows agree exactly; finite ones numerically.
            assert!(l.isinf().eq_tensor(&rl.isinf()).all().int64_value(&[]) == 1);
            let fin = rl.isfinite();
            assert!(max_diff(&l.masked_select(&fin), &rl.masked_select(&fin)) < 1e-10);
        }
    }

    #[test]
    fn forward_f32_and_bf16_keep_dtype_and_are_close() {
        let m = random_mask(64, 64, 7);
        let (q, k, v) = rand_qkv(1, 4, 1, 64, 64, 16, 7);
        let (ro, _) = dense_ref(&q, &k, &v, &m, 0.25);
        for (kind, tol) in [(Kind::Float, 1e-5), (Kind::BFloat16, 5e-2)] {
            let (o, l) = sliced_forward(&q.to_kind(kind), &k.to_kind(kind), &v.to_kind(kind), &m, 0.25).unwrap();
            assert_eq!(o.kind(), kind);
            assert_eq!(l.kind(), Kind::Float);
            assert!(max_diff(&o.to_kind(Kind::Double), &ro) < tol);
        }
    }

    #[test]
    fn chunked_pieces_cover_large_slices_exactly() {
        // B·Hq·rows·keys over CHUNK_ELEMS forces row chunking of a causal slice.
        let m = Mask::new(300, vec![Slice::new(0..300, 0..300, SliceKind::Causal)]).unwrap();
        // f64 inputs take the dense (chunked) path; f32 would take the fused kernel, unchunked.
        let ps = pieces(&Tensor::zeros([1], (Kind::Double, Device::Cpu)), &m, CHUNK_ELEMS / 10_000);
        assert!(ps.len() > 1);
        assert_eq!(ps.iter().map(Slice::area).sum::<u64>(), m.area());
        assert_eq!(Mask::new(300, ps).unwrap().to_dense(), m.to_dense());
    }

    #[test]
    fn fused_cpu_slices_match_the_dense_path_forward_and_backward() {
        // Documents (square causal and full slices → fused kernel) next to a rectangular causal and a
        // band (dense path), GQA 3:1; f32 through the fused kernel vs f64 through the dense path.
        let m = Mask::new(
            96,
            vec![
                Slice::new(0..40, 0..40, SliceKind::Causal),
                Slice::new(40..60, 40..60, SliceKind::Full),
                Slice::new(60..96, 40..60, SliceKind::Causal),
                Slice::new(60..96, 60..96, SliceKind::BiCausal),
            ],
        )
        .unwrap();
        let f32q = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let fused: Vec<bool> = m.slices().iter().map(|s| fused_cpu_slice(&f32q, s)).collect();
        assert_eq!(fused, vec![true, true, false, false]);
        let (q, k, v) = rand_qkv(2, 6, 2, 96, 96, 16, 11);
        let dout = Tensor::randn([2, 6, 96, 16], (Kind::Double, Device::Cpu));
        let (o64, l64) = sliced_forward(&q, &k, &v, &m, 0.25).unwrap();
        let (o32, l32) = sliced_forward(&q.to_kind(Kind::Float), &k.to_kind(Kind::Float), &v.to_kind(Kind::Float), &m, 0.25).unwrap();
        assert!(max_diff(&o32.to_kind(Kind::Double), &o64) < 1e-5);
        assert!(max_diff(&l32.to_kind(Kind::Double), &l64) < 1e-5);
        let g64 = sliced_backward(&q, &k, &v, &o64, &l64, &dout, &m, 0.25).unwrap();
        let f = |t: &Tensor| t.to_kind(Kind::Float);
        let g32 = sliced_backward(&f(&q), &f(&k), &f(&v), &o32, &l32, &f(&dout), &m, 0.25).unwrap();
        for (a, b) in [(&g32.0, &g64.0), (&g32.1, &g64.1), (&g32.2, &g64.2)] {
            assert!(max_diff(&a.to_kind(Kind::Double), b) < 1e-4, "{}", max_diff(&a.to_kind(Kind::Double), b));
        }
    }

    #[test]
    fn backward_matches_autograd_f64_on_random_masks() {
        for seed in 0..8 {
            let (sq, sk) = (33 + seed as usize, 41);
            let m = random_mask(sq, sk, 100 + seed);
            let (q, k, v) = rand_qkv(1, 4, 2, sq as i64, sk as i64, 8, seed as i64);
            let (q, k, v) = (q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true));
            let (ro, _) = dense_ref(&q, &k, &v, &m, 0.35);
            let dout = Tensor::randn(ro.size(), (Kind::Double, Device::Cpu));
            let g = Tensor::run_backward(&[(&ro * &dout).sum(Kind::Double)], &[&q, &k, &v], false, false);
            let (o, l) = tch::no_grad(|| sliced_forward(&q, &k, &v, &m, 0.35)).unwrap();
            let (dq, dk, dv) = tch::no_grad(|| sliced_backward(&q, &k, &v, &o, &l, &dout, &m, 0.35)).unwrap();
            // Rows that attend nothing get no gradient; autograd gives 0 there as well.
            let g: Vec<Tensor> = g.into_iter().map(|t| t.nan_to_num(0.0, 0.0, 0.0)).collect();
            assert!(max_diff(&dq, &g[0]) < 1e-9, "seed {seed} dq {}", max_diff(&dq, &g[0]));
            assert!(max_diff(&dk, &g[1]) < 1e-9, "seed {seed} dk {}", max_diff(&dk, &g[1]));
            assert!(max_diff(&dv, &g[2]) < 1e-9, "seed {seed} dv {}", max_diff(&dv, &g[2]));
        }
    }

    #[test]
    fn backward_of_blocks_with_merged_stats_sums_to_whole() {
        // Split the keys in two blocks (as context parallelism does), merge the forward, run each block's
        // backward with the merged out/lse: dq adds up, dk/dv land in their block.
        let m = random_mask(40, 48, 3);
        let (q, k, v) = rand_qkv(1, 2, 1, 40, 48, 8, 3);
        let (o, l) = sliced_forward(&q, &k, &v, &m, 0.3).unwrap();
        let dout = Tensor::randn([1, 2, 40, 8], (Kind::Double, Device::Cpu));
        let (dq, dk, dv) = sliced_backward(&q, &k, &v, &o, &l, &dout, &m, 0.3).unwrap();
        let (m1, m2) = (m.sub_block(0..40, 0..20), m.sub_block(0..40, 20..48));
        let (k1, k2) = (k.narrow(2, 0, 20), k.narrow(2, 20, 28));
        let (v1, v2) = (v.narrow(2, 0, 20), v.narrow(2, 20, 28));
        let (o1, l1) = sliced_forward(&q, &k1, &v1, &m1, 0.3).unwrap();
        let (o2, l2) = sliced_forward(&q, &k2, &v2, &m2, 0.3).unwrap();
        let (om, lm) = merge_partials(&o1, &l1, &o2, &l2);
        assert!(max_diff(&om, &o) < 1e-12);
        let (dq1, dk1, dv1) = sliced_backward(&q, &k1, &v1, &om, &lm, &dout, &m1, 0.3).unwrap();
        let (dq2, dk2, dv2) = sliced_backward(&q, &k2, &v2, &om, &lm, &dout, &m2, 0.3).unwrap();
        assert!(max_diff(&(dq1 + dq2), &dq) < 1e-10);
        assert!(max_diff(&Tensor::cat(&[dk1, dk2], 2), &dk) < 1e-10);
        assert!(max_diff(&Tensor::cat(&[dv1, dv2], 2), &dv) < 1e-10);
    }

    /// The in-place running merge equals pairwise `merge_partials` (f64 exactly; bf16 partials with an
    /// f32 accumulator to f32 rounding, better than re-rounding to bf16 each step), empty rows included.
    #[test]
    fn running_merge_matches_pairwise_merges() {
        for kind in [Kind::Double, Kind::BFloat16] {
            let acc = acc_kind(kind);
            let parts: Vec<(Tensor, Tensor)> = (0..4)
                .map(|i| {
                    let o = Tensor::randn([2, 3, 5, 8], (Kind::Double, Device::Cpu)).to_kind(kind);
                    let l = Tensor::randn([2, 3, 5], (Kind::Double, Device::Cpu)).to_kind(acc);
                    // Row 4 is empty in every block, row 3 in all but the last.
                    let _ = l.narrow(2, 4, 1).fill_(f64::NEG_INFINITY);
                    if i < 3 {
                        let _ = l.narrow(2, 3, 1).fill_(f64::NEG_INFINITY);
                    }
                    (o, l)
                })
                .collect();
            let mut run = RunningMerge::new(2, 3, 5, 8, kind, Device::Cpu).unwrap();
            for (o, l) in &parts {
                run.add(o, l).unwrap();
            }
            let (ro, rl) = run.finish(acc).unwrap();
            let (mut po, mut pl) = (parts[0].0.to_kind(acc), parts[0].1.shallow_clone());
            for (o, l) in &parts[1..] {
                (po, pl) = merge_partials(&po, &pl, &o.to_kind(acc), l);
            }
            let tol = if kind == Kind::Double { 1e-12 } else { 1e-5 };
            assert!(max_diff(&ro, &po) < tol && max_diff(&rl.nan_to_num(0.0, None, None), &pl.nan_to_num(0.0, None, None)) < tol, "{kind:?}");
            assert!(rl.narrow(2, 4, 1).isinf().all().int64_value(&[]) == 1);
            assert_eq!(ro.narrow(2, 4, 1).abs().sum(Kind::Double).double_value(&[]), 0.0);
        }
    }

    #[test]
    fn merge_partials_handles_empty_rows() {
        let o1 = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0]).reshape([1, 1, 3, 2]);
        let o2 = Tensor::from_slice(&[5.0f32, 6.0, 0.0, 0.0, 0.0, 0.0]).reshape([1, 1, 3, 2]);
        let ninf = f32::NEG_INFINITY;
        let l1 = Tensor::from_slice(&[0.0f32, 1.0, ninf]).reshape([1, 1, 3]);
        let l2 = Tensor::from_slice(&[0.0f32, ninf, ninf]).reshape([1, 1, 3]);
        let (o, l) = merge_partials(&o1, &l1, &o2, &l2);
        let o: Vec<f32> = o.flatten(0, -1).try_into().unwrap();
        let l: Vec<f32> = l.flatten(0, -1).try_into().unwrap();
        // Row 0: equal weights → mean; row 1: only block 1; row 2: empty in both → (0, −inf).
        assert_eq!(o, vec![3.0, 4.0, 3.0, 4.0, 0.0, 0.0]);
        assert!((l[0] - 2f32.ln()).abs() < 1e-6 && l[1] == 1.0 && l[2] == ninf);
    }
}
