//! Packing our `[B, H, S, D]` tensors into the varlen layout of the CUDA kernels (`[total, H, D]` with
//! cumulative sequence offsets), one *sequence* per (batch element, slice), and scattering results back.
//! Used by the sliced backend on CUDA (one call per group of slices) and by the `*_varlen` backends.
//!
//! Each sequence pairs a query range with a key range and a kind the kernels know natively:
//! - `Full` → no mask; `Causal` → `is_causal` (FlashAttention-2 and cuDNN align causal bottom-right, like
//!   our model; the efficient kernel gets `custom_mask_type = 2`, its bottom-right causal);
//! - `InvCausal` (b ≥ a) → causal on *reversed* query rows and keys: with a′ = Lq−1−a, b′ = Lk−1−b,
//!   b ≥ a ⇔ b′ ≤ a′ + (Lk − Lq), exactly bottom-right causal — the gather indices are simply reversed;
//! - `BiCausal` (a ≤ b ≤ a + Lk − Lq) → sliding window (left = Lk − Lq, right = 0), so a group of
//!   bi_causal slices must share Lk − Lq (see `plan_groups`).
//!
//! The kernel call itself is behind [`GroupKernel`], so the packing logic is tested on CPU with an
//! emulation of the kernel semantics.

use tch::{Device, Kind, Tensor};

use super::sliced::{sliced_backward, sliced_forward, Group};
use super::BackendError;
use crate::mask::{Mask, Slice, SliceKind};

/// One varlen call: gather indices into the flattened `[B·S, H, D]` rows, offsets, and the mask mode.
#[derive(Debug)]
pub struct VarlenPlan {
    pub q_idx: Vec<i64>,
    pub k_idx: Vec<i64>,
    pub cu_q: Vec<i32>,
    pub cu_k: Vec<i32>,
    pub max_q: i64,
    pub max_k: i64,
    /// Bottom-right causal after the reversal of inv_causal sequences.
    pub causal: bool,
    /// Sliding window (left, right) in FlashAttention's bottom-right convention; `None` = unbounded.
    pub window: (Option<i64>, Option<i64>),
}

impl VarlenPlan {
    /// The plan for one group (one kind, disjoint query ranges) over `batch` elements of length `sq`/`sk`.
    pub fn for_group(g: &Group, batch: usize, sq: usize, sk: usize) -> VarlenPlan {
        let reverse = g.kind == SliceKind::InvCausal;
        let (mut q_idx, mut k_idx, mut cu_q, mut cu_k) = (vec![], vec![], vec![0i32], vec![0i32]);
        let (mut max_q, mut max_k) = (0, 0);
        for b in 0..batch {
            for s in &g.slices {
                let qs: Vec<i64> = s.q.clone().map(|i| (b * sq + i) as i64).collect();
                let ks: Vec<i64> = s.k.clone().map(|j| (b * sk + j) as i64).collect();
                if reverse {
                    q_idx.extend(qs.iter().rev());
                    k_idx.extend(ks.iter().rev());
                } else {
                    q_idx.extend(qs);
                    k_idx.extend(ks);
                }
                cu_q.push(q_idx.len() as i32);
                cu_k.push(k_idx.len() as i32);
                max_q = max_q.max(s.q_len() as i64);
                max_k = max_k.max(s.k_len() as i64);
            }
        }
        let (causal, window) = match g.kind {
            SliceKind::Full => (false, (None, None)),
            SliceKind::Causal | SliceKind::InvCausal => (true, (None, Some(0))),
            SliceKind::BiCausal => {
                let s = &g.slices[0];
                (true, (Some(s.k_len() as i64 - s.q_len() as i64), Some(0)))
            }
        };
        VarlenPlan { q_idx, k_idx, cu_q, cu_k, max_q, max_k, causal, window }
    }

    /// The mask one packed sequence `n` sees, in its own (packed) coordinates: what the kernel computes.
    pub fn sequence_slice(&self, n: usize) -> Slice {
        let lq = (self.cu_q[n + 1] - self.cu_q[n]) as usize;
        let lk = (self.cu_k[n + 1] - self.cu_k[n]) as usize;
        let kind = match (self.causal, self.window.0) {
            (false, _) => SliceKind::Full,
            (true, None) => SliceKind::Causal,
            (true, Some(_)) => SliceKind::BiCausal,
        };
        Slice::new(0..lq, 0..lk, kind)
    }

    pub fn sequences(&self) -> usize {
        self.cu_q.len() - 1
    }

    /// One call over square documents `docs` (in order, covering their rows) with FlashAttention's
    /// native sliding window: query i of a document attends keys j of the same document with
    /// i − left ≤ j ≤ i + right (`None` = unbounded on that side). `right = Some(0)` is causal.
    pub fn windowed(w: &WindowForm, batch: usize, seqlen: usize) -> VarlenPlan {
        let (mut q_idx, mut cu_q) = (vec![], vec![0i32]);
        let mut max = 0;
        for b in 0..batch {
            for d in &w.docs {
                q_idx.extend(d.clone().map(|i| (b * seqlen + i) as i64));
                cu_q.push(q_idx.len() as i32);
                max = max.max(d.len() as i64);
            }
        }
        let causal = w.right == Some(0);
        VarlenPlan { k_idx: q_idx.clone(), q_idx, cu_k: cu_q.clone(), cu_q, max_q: max, max_k: max, causal, window: (w.left, w.right) }
    }

    /// The exact mask the kernel applies to packed sequence `n`, in its own coordinates (what the CPU
    /// emulation computes): bottom-right causal alignment and the (left, right) window.
    pub fn sequence_mask(&self, n: usize) -> Result<Mask, BackendError> {
        let lq = (self.cu_q[n + 1] - self.cu_q[n]) as usize;
        let lk = (self.cu_k[n + 1] - self.cu_k[n]) as usize;
        let invalid = |e: crate::mask::MaskError| BackendError::Invalid(e.to_string());
        let (left, right) = (self.window.0, if self.causal { Some(0) } else { self.window.1 });
        if left.is_none() && (right.is_none() || right == Some(0)) {
            // Full or plain causal: the single-kind slice says it exactly.
            return Mask::rect(lq, lk, vec![self.sequence_slice(n)]).map_err(invalid);
        }
        // Allowed keys: i + shift − L ≤ j ≤ i + shift + R (shift = lk − lq, bottom-right alignment).
        // In widened coordinates w = j − (shift − L) that is i ≤ w ≤ i + L + R: one bi-causal slice over
        // [0, lq) × [0, lq + L + R), clipped to the real keys and shifted back.
        let big = (lq + lk) as i64;
        let (l, r) = (left.unwrap_or(big).max(0), right.unwrap_or(big).max(0));
        let c = (lk as i64 - lq as i64) - l; // j = w + c
        let width = lq as i64 + l + r;
        let (w0, w1) = ((-c).max(0), (lk as i64 - c).min(width));
        let mut slices = Vec::new();
        if w0 < w1 {
            let band = Slice::new(0..lq, 0..width as usize, SliceKind::BiCausal);
            for p in crate::mask::clip_slice(&band, 0..lq, w0 as usize..w1 as usize) {
                slices.push(Slice::new(p.q.clone(), (p.k.start as i64 + c) as usize..(p.k.end as i64 + c) as usize, p.kind));
            }
        }
        Mask::rect(lq, lk, slices).map_err(invalid)
    }
}

/// A mask FlashAttention's varlen kernel runs in ONE call with its native sliding window: square
/// documents covering the sequence in order, and in each, query i attends keys j of its document with
/// i − left ≤ j ≤ i + right (`None` = unbounded). Covers full / causal document masks, sliding_window,
/// sliding_window_causal (and windows inside documents) — what LongCA-bench's FA2-varlen baseline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowForm {
    pub docs: Vec<std::ops::Range<usize>>,
    pub left: Option<i64>,
    pub right: Option<i64>,
}

/// Recognises a [`WindowForm`] exactly: per-row attended keys must be one interval containing the
/// diagonal; the window sizes are the largest reach left and right; documents start where a row's
/// interval starts at the row itself (and end where it ends there); then every row is re-derived from
/// (documents, left, right) and compared. `None` unless the mask is exactly that shape.
pub fn window_form(mask: &Mask) -> Option<WindowForm> {
    let s = mask.seqlen_q;
    if mask.seqlen_k != s {
        return None;
    }
    let (mut lo, mut hi, mut count) = (vec![usize::MAX; s], vec![0usize; s], vec![0u64; s]);
    for sl in mask.slices() {
        for i in sl.nonempty_rows() {
            let (a, b) = sl.row_keys(i - sl.q.start)?;
            lo[i] = lo[i].min(sl.k.start + a);
            hi[i] = hi[i].max(sl.k.start + b);
            count[i] += (b - a + 1) as u64;
        }
    }
    let (mut wl, mut wr) = (0usize, 0usize);
    for i in 0..s {
        if count[i] == 0 || count[i] != (hi[i] - lo[i] + 1) as u64 || lo[i] > i || hi[i] < i {
            return None;
        }
        wl = wl.max(i - lo[i]);
        wr = wr.max(hi[i] - i);
    }
    let mut starts = vec![0usize];
    for i in 1..s {
        if (wl > 0 && lo[i] == i) || (wr > 0 && hi[i - 1] == i - 1) {
            starts.push(i);
        }
    }
    let docs: Vec<std::ops::Range<usize>> = starts.iter().zip(starts.iter().skip(1).chain(std::iter::once(&s))).map(|(&a, &b)| a..b).collect();
    for d in &docs {
        for i in d.clone() {
            if lo[i] != d.start.max(i.saturating_sub(wl)) || hi[i] != (d.end - 1).min(i + wr) {
                return None;
            }
        }
    }
    let longest = docs.iter().map(|d| d.len()).max().unwrap_or(1);
    let side = |w: usize| if w + 1 >= longest { None } else { Some(w as i64) };
    let (left, right) = (side(wl), if wr == 0 { Some(0) } else { side(wr) });
    Some(WindowForm { docs, left, right })
}

/// Runs one packed varlen forward / backward. q `[Tq, Hq, D]`, k/v `[Tk, Hkv, D]`; lse `[Hq, Tq]` f32.
pub trait GroupKernel {
    /// Returns (out `[Tq, Hq, D]`, lse `[Hq, Tq]` f32, state for the backward).
    fn forward(&self, plan: &VarlenPlan, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor, Vec<Tensor>), BackendError>;
    /// Gradients with the given (final) out and lse of the packed rows.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        plan: &VarlenPlan,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
        state: &[Tensor],
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor), BackendError>;
}

fn idx(v: &[i64], dev: Device) -> Tensor {
    Tensor::from_slice(v).to_device(dev)
}

fn cu(v: &[i32], dev: Device) -> Tensor {
    Tensor::from_slice(v).to_device(dev)
}

/// `[B, H, S, D]` → `[B·S, H, D]` (contiguous).
fn flat_rows(t: &Tensor) -> Result<Tensor, BackendError> {
    let s = t.size();
    Ok(t.f_transpose(1, 2)?.f_contiguous()?.f_reshape([s[0] * s[2], s[1], s[3]])?)
}

/// `[B·S, H, D]` → `[B, H, S, D]`.
fn unflat_rows(t: &Tensor, b: i64, s: i64) -> Result<Tensor, BackendError> {
    let sz = t.size();
    Ok(t.f_reshape([b, s, sz[1], sz[2]])?.f_transpose(1, 2)?.f_contiguous()?)
}

/// `[H, B·S]` → `[B, H, S]`.
fn unflat_lse(t: &Tensor, b: i64, s: i64) -> Result<Tensor, BackendError> {
    let h = t.size()[0];
    Ok(t.f_reshape([h, b, s])?.f_transpose(0, 1)?.f_contiguous()?)
}

/// Forward over a mask with one kernel call per group, merged with LSE. Returns (out in q's dtype,
/// lse f32 `[B, Hq, Sq]`, number of launches).
pub fn grouped_forward(
    kern: &dyn GroupKernel,
    groups: &[Group],
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Mask,
    scale: f64,
) -> Result<(Tensor, Tensor, usize), BackendError> {
    planned_forward(kern, &plans_for(groups, mask, q.size()[0] as usize), q, k, v, scale)
}

/// The launch plans of a mask: one per slice group — or, for FlashAttention, a single call when the
/// whole mask is one native window ([`window_form`]: sliding windows, documents).
pub fn mask_plans(mask: &Mask, batch: usize, flash: bool) -> Vec<VarlenPlan> {
    if flash {
        if let Some(w) = window_form(mask) {
            return vec![VarlenPlan::windowed(&w, batch, mask.seqlen_q)];
        }
    }
    plans_for(&super::sliced::plan_groups(mask), mask, batch)
}

fn plans_for(groups: &[Group], mask: &Mask, batch: usize) -> Vec<VarlenPlan> {
    groups.iter().map(|g| VarlenPlan::for_group(g, batch, mask.seqlen_q, mask.seqlen_k)).collect()
}

/// Forward with one kernel call per plan, merged with LSE (see [`grouped_forward`]).
pub fn planned_forward(
    kern: &dyn GroupKernel,
    plans: &[VarlenPlan],
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> Result<(Tensor, Tensor, usize), BackendError> {
    let (b, hq, sq, d) = (q.size()[0], q.size()[1], q.size()[2], q.size()[3]);
    let dev = q.device();
    let (qf, kf, vf) = (flat_rows(q)?, flat_rows(k)?, flat_rows(v)?);
    let mut out = Tensor::f_zeros([b * sq, hq, d], (Kind::Float, dev))?;
    let mut lse = Tensor::f_full([hq, b * sq], f64::NEG_INFINITY, (Kind::Float, dev))?;
    for plan in plans {
        let (qi, ki) = (idx(&plan.q_idx, dev), idx(&plan.k_idx, dev));
        let (qp, kp, vp) = (qf.f_index_select(0, &qi)?, kf.f_index_select(0, &ki)?, vf.f_index_select(0, &ki)?);
        let (op, lp, _) = kern.forward(plan, &qp, &kp, &vp, scale)?;
        // Partial result of this group over all rows: zero / −inf outside its rows.
        let go = Tensor::f_zeros([b * sq, hq, d], (Kind::Float, dev))?.f_index_copy(0, &qi, &op.f_to_kind(Kind::Float)?)?;
        let gl = Tensor::f_full([hq, b * sq], f64::NEG_INFINITY, (Kind::Float, dev))?.f_index_copy(1, &qi, &lp.f_to_kind(Kind::Float)?)?;
        let (mo, ml) = merge_rows(&out, &lse, &go, &gl)?;
        out = mo;
        lse = ml;
    }
    Ok((unflat_rows(&out, b, sq)?.f_to_kind(q.kind())?, unflat_lse(&lse, b, sq)?, plans.len()))
}

/// LSE merge in the flat layout (out `[T, H, D]`, lse `[H, T]`).
fn merge_rows(o1: &Tensor, l1: &Tensor, o2: &Tensor, l2: &Tensor) -> Result<(Tensor, Tensor), BackendError> {
    let l = l1.f_logaddexp(l2)?;
    let safe = l.f_masked_fill(&l.f_isinf()?, 0.0)?;
    let w1 = l1.f_sub(&safe)?.f_exp()?.f_transpose(0, 1)?.f_unsqueeze(-1)?;
    let w2 = l2.f_sub(&safe)?.f_exp()?.f_transpose(0, 1)?.f_unsqueeze(-1)?;
    Ok((o1.f_mul(&w1)?.f_add(&o2.f_mul(&w2)?)?, l))
}

/// Backward with one kernel call per group, given the final out / lse `[B, Hq, Sq]` and dout.
#[allow(clippy::too_many_arguments)]
pub fn grouped_backward(
    kern: &dyn GroupKernel,
    groups: &[Group],
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    mask: &Mask,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor), BackendError> {
    planned_backward(kern, &plans_for(groups, mask, q.size()[0] as usize), q, k, v, out, lse, dout, scale)
}

/// Backward with one kernel call per plan, given the final out / lse (see [`grouped_backward`]).
#[allow(clippy::too_many_arguments)]
pub fn planned_backward(
    kern: &dyn GroupKernel,
    plans: &[VarlenPlan],
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor), BackendError> {
    let (b, hq, sq, d) = (q.size()[0], q.size()[1], q.size()[2], q.size()[3]);
    let (hkv, sk) = (k.size()[1], k.size()[2]);
    let dev = q.device();
    let (qf, kf, vf, of, dof) = (flat_rows(q)?, flat_rows(k)?, flat_rows(v)?, flat_rows(out)?, flat_rows(dout)?);
    let lf = lse.f_to_kind(Kind::Float)?.f_transpose(0, 1)?.f_reshape([hq, b * sq])?;
    let mut dq = Tensor::f_zeros([b * sq, hq, d], (Kind::Float, dev))?;
    let mut dk = Tensor::f_zeros([b * sk, hkv, d], (Kind::Float, dev))?;
    let mut dv = Tensor::f_zeros([b * sk, hkv, d], (Kind::Float, dev))?;
    for plan in plans {
        let (qi, ki) = (idx(&plan.q_idx, dev), idx(&plan.k_idx, dev));
        let (qp, kp, vp) = (qf.f_index_select(0, &qi)?, kf.f_index_select(0, &ki)?, vf.f_index_select(0, &ki)?);
        let (op, dop) = (of.f_index_select(0, &qi)?, dof.f_index_select(0, &qi)?);
        let lp = lf.f_index_select(1, &qi)?.f_contiguous()?;
        // Dropout is 0, so the backward needs no forward state (rng / philox): none is passed.
        let (gq, gk, gv) = kern.backward(plan, &qp, &kp, &vp, &op, &lp, &dop, &[], scale)?;
        let _ = dq.f_index_add_(0, &qi, &gq.f_to_kind(Kind::Float)?)?;
        let _ = dk.f_index_add_(0, &ki, &gk.f_to_kind(Kind::Float)?)?;
        let _ = dv.f_index_add_(0, &ki, &gv.f_to_kind(Kind::Float)?)?;
    }
    Ok((unflat_rows(&dq, b, sq)?.f_to_kind(q.kind())?, unflat_rows(&dk, b, sk)?.f_to_kind(k.kind())?, unflat_rows(&dv, b, sk)?.f_to_kind(v.kind())?))
}

/// Which CUDA varlen kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaVarlen {
    Flash,
    Efficient,
    Cudnn,
}

/// The real kernels through the shim (CUDA only).
pub struct CudaGroupKernel(pub CudaVarlen);

/// Normalises a kernel's LSE to `[H, T]`.
fn lse_ht(lse: &Tensor, h: i64, t: i64) -> Result<Tensor, BackendError> {
    let s = lse.size();
    let r = if s == [h, t] {
        lse.shallow_clone()
    } else if s == [1, h, t] {
        lse.f_squeeze_dim(0)?
    } else if s == [t, h] || s == [t, h, 1] {
        lse.f_reshape([t, h])?.f_transpose(0, 1)?
    } else {
        return Err(BackendError::Torch(format!("unexpected varlen LSE shape {s:?} (H={h}, total={t})")));
    };
    Ok(r.f_to_kind(Kind::Float)?.f_contiguous()?)
}

/// Expands KV heads to the query heads (kernels without GQA support).
fn repeat_kv(t: &Tensor, hq: i64) -> Result<Tensor, BackendError> {
    let hkv = t.size()[1];
    Ok(if hkv == hq { t.shallow_clone() } else { t.f_repeat_interleave_self_int(hq / hkv, 1, None)? })
}

/// Sums gradients of repeated KV heads back onto their KV head.
fn fold_kv(t: &Tensor, hkv: i64) -> Result<Tensor, BackendError> {
    let s = t.size();
    if s[1] == hkv {
        return Ok(t.shallow_clone());
    }
    Ok(t.f_reshape([s[0], hkv, s[1] / hkv, s[2]])?.f_sum_dim_intlist(&[2i64][..], false, t.kind())?)
}

impl GroupKernel for CudaGroupKernel {
    fn forward(&self, plan: &VarlenPlan, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor, Vec<Tensor>), BackendError> {
        let dev = q.device();
        let (cq, ck) = (cu(&plan.cu_q, dev), cu(&plan.cu_k, dev));
        let (t, h) = (q.size()[0], q.size()[1]);
        match self.0 {
            CudaVarlen::Flash => {
                let r = crate::sys::varlen::flash_varlen_fwd(q, k, v, &cq, &ck, plan.max_q, plan.max_k, scale, plan.causal, plan.window)?;
                Ok((r.out, lse_ht(&r.lse, h, t)?, vec![r.rng_state[0].shallow_clone(), r.rng_state[1].shallow_clone()]))
            }
            CudaVarlen::Efficient => {
                let (k, v) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let mask_type = if plan.causal { 2 } else { 0 };
                let r = crate::sys::varlen::efficient_varlen_fwd(
                    &q.f_unsqueeze(0)?,
                    &k.f_unsqueeze(0)?,
                    &v.f_unsqueeze(0)?,
                    &cq,
                    &ck,
                    plan.max_q,
                    plan.max_k,
                    scale,
                    mask_type,
                    plan.window.0,
                )?;
                Ok((r.out.f_squeeze_dim(0)?, lse_ht(&r.lse, h, t)?, vec![r.rng_state[0].shallow_clone(), r.rng_state[1].shallow_clone()]))
            }
            CudaVarlen::Cudnn => {
                let (k, v) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let r = crate::sys::varlen::cudnn_varlen_fwd(q, &k, &v, &cq, &ck, plan.max_q, plan.max_k, scale, plan.causal)?;
                Ok((r.out, lse_ht(&r.lse, h, t)?, vec![r.rng_state[0].shallow_clone(), r.rng_state[1].shallow_clone()]))
            }
        }
    }

    fn backward(
        &self,
        plan: &VarlenPlan,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
        _state: &[Tensor],
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor), BackendError> {
        let dev = q.device();
        let (cq, ck) = (cu(&plan.cu_q, dev), cu(&plan.cu_k, dev));
        let (h, hkv) = (q.size()[1], k.size()[1]);
        // Dropout is 0: the rng / philox tensors are never read, any tensor will do.
        let zero = Tensor::f_zeros([2], (Kind::Int64, dev))?;
        let (out, dout) = (out.f_to_kind(q.kind())?.f_contiguous()?, dout.f_to_kind(q.kind())?.f_contiguous()?);
        match self.0 {
            CudaVarlen::Flash => {
                let (dq, dk, dv) = Tensor::f_internal_flash_attention_backward(
                    &dout,
                    q,
                    k,
                    v,
                    &out,
                    lse,
                    &cq,
                    &ck,
                    plan.max_q,
                    plan.max_k,
                    0.0,
                    plan.causal,
                    &zero,
                    &zero,
                    scale,
                    plan.window.0,
                    plan.window.1,
                )?;
                Ok((dq, dk, dv))
            }
            CudaVarlen::Efficient => {
                let (kr, vr) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let mask_type = if plan.causal { 2 } else { 0 };
                let lse3 = lse.f_unsqueeze(0)?;
                let (dq, dk, dv, _) = Tensor::f_internal_efficient_attention_backward(
                    &dout.f_unsqueeze(0)?,
                    &q.f_unsqueeze(0)?,
                    &kr.f_unsqueeze(0)?,
                    &vr.f_unsqueeze(0)?,
                    None::<&Tensor>,
                    &out.f_unsqueeze(0)?,
                    Some(&cq),
                    Some(&ck),
                    plan.max_q,
                    plan.max_k,
                    &lse3,
                    0.0,
                    &zero,
                    &zero,
                    mask_type,
                    false,
                    scale,
                    None,
                    plan.window.0,
                    false,
                )?;
                Ok((dq.f_squeeze_dim(0)?, fold_kv(&dk.f_squeeze_dim(0)?, hkv)?, fold_kv(&dv.f_squeeze_dim(0)?, hkv)?))
            }
            CudaVarlen::Cudnn => {
                let (kr, vr) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let empty = Tensor::f_empty([0], (q.kind(), dev))?;
                let (dq, dk, dv) = Tensor::f_internal_cudnn_attention_backward(
                    &dout,
                    q,
                    &kr,
                    &vr,
                    &out,
                    lse,
                    &zero,
                    &zero,
                    &empty,
                    &cq,
                    &ck,
                    plan.max_q,
                    plan.max_k,
                    0.0,
                    plan.causal,
                    scale,
                )?;
                Ok((dq, fold_kv(&dk, hkv)?, fold_kv(&dv, hkv)?))
            }
        }
    }
}

/// CPU emulation of a varlen kernel: each packed sequence is attended densely with the mask the kernel
/// would apply ([`VarlenPlan::sequence_slice`]). Lets the packing, reversal and scatter be tested
/// without a GPU.
pub struct EmulatedGroupKernel;

fn seq_tensors(t: &Tensor, lo: i32, hi: i32) -> Result<Tensor, BackendError> {
    // [T, H, D] rows lo..hi → [1, H, L, D]
    Ok(t.f_narrow(0, lo as i64, (hi - lo) as i64)?.f_transpose(0, 1)?.f_unsqueeze(0)?)
}

impl GroupKernel for EmulatedGroupKernel {
    fn forward(&self, plan: &VarlenPlan, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor, Vec<Tensor>), BackendError> {
        let (mut outs, mut lses) = (vec![], vec![]);
        for n in 0..plan.sequences() {
            let m = plan.sequence_mask(n)?;
            let (qs, ks, vs) = (
                seq_tensors(q, plan.cu_q[n], plan.cu_q[n + 1])?,
                seq_tensors(k, plan.cu_k[n], plan.cu_k[n + 1])?,
                seq_tensors(v, plan.cu_k[n], plan.cu_k[n + 1])?,
            );
            let (o, l) = sliced_forward(&qs, &ks, &vs, &m, scale)?;
            outs.push(o.f_squeeze_dim(0)?.f_transpose(0, 1)?);
            lses.push(l.f_squeeze_dim(0)?.f_to_kind(Kind::Float)?);
        }
        Ok((Tensor::f_cat(&outs, 0)?, Tensor::f_cat(&lses, 1)?, vec![]))
    }

    fn backward(
        &self,
        plan: &VarlenPlan,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
        _state: &[Tensor],
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor), BackendError> {
        let (mut dqs, mut dks, mut dvs) = (vec![], vec![], vec![]);
        for n in 0..plan.sequences() {
            let m = plan.sequence_mask(n)?;
            let (a, b, c, e) = (plan.cu_q[n], plan.cu_q[n + 1], plan.cu_k[n], plan.cu_k[n + 1]);
            let l = lse.f_narrow(1, a as i64, (b - a) as i64)?.f_unsqueeze(0)?;
            let (dq, dk, dv) = sliced_backward(
                &seq_tensors(q, a, b)?,
                &seq_tensors(k, c, e)?,
                &seq_tensors(v, c, e)?,
                &seq_tensors(out, a, b)?,
                &l,
                &seq_tensors(dout, a, b)?,
                &m,
                scale,
            )?;
            dqs.push(dq.f_squeeze_dim(0)?.f_transpose(0, 1)?);
            dks.push(dk.f_squeeze_dim(0)?.f_transpose(0, 1)?);
            dvs.push(dv.f_squeeze_dim(0)?.f_transpose(0, 1)?);
        }
        Ok((Tensor::f_cat(&dqs, 0)?, Tensor::f_cat(&dks, 0)?, Tensor::f_cat(&dvs, 0)?))
    }
}

/// A `*_varlen` backend: ONE varlen kernel call over the whole mask, like the FA2-varlen baselines of
/// LongCA-bench: a mask of one slice group (document masks: block-diagonal full or causal slices), or —
/// FlashAttention only — any [`WindowForm`] (sliding_window, sliding_window_causal, windows inside
/// documents) through the kernel's native window. Masks that need several launches are unsupported
/// here; the `sliced` backend runs them.
///
/// Inputs are packed into the kernel's `[total, H, D]` layout in `prepare`, so a timed call is the
/// kernel alone (as in the baselines, whose inputs already are packed); the correctness gate unpacks the
/// results outside the timed region.
pub struct VarlenBackend {
    pub name: &'static str,
    pub summary: &'static str,
    pub kernel: CudaVarlen,
}

/// How a mask maps onto one varlen call, or why it cannot.
pub fn single_call_plan(mask: &Mask, kernel: CudaVarlen, batch: usize) -> Result<(VarlenPlan, String), String> {
    let groups = super::sliced::plan_groups(mask);
    if groups.len() == 1 {
        let g = &groups[0];
        match (g.kind, kernel) {
            (SliceKind::Full | SliceKind::Causal, _) | (SliceKind::BiCausal, CudaVarlen::Flash) => {
                let how = format!("{} {} sequences", g.slices.len(), g.kind);
                return Ok((VarlenPlan::for_group(g, batch, mask.seqlen_q, mask.seqlen_k), how));
            }
            (k, _) => return Err(format!("no native {k} slices")),
        }
    }
    if kernel == CudaVarlen::Flash {
        if let Some(w) = window_form(mask) {
            let side = |x: Option<i64>| x.map_or("∞".to_string(), |v| v.to_string());
            let how = format!("{} documents, native window (left {}, right {})", w.docs.len(), side(w.left), side(w.right));
            return Ok((VarlenPlan::windowed(&w, batch, mask.seqlen_q), how));
        }
    }
    Err(format!("needs {} varlen launches (slice groups) and is not one native window", groups.len()))
}

/// A prepared single varlen call: the plan, the packed inputs, and how to unpack results.
pub struct VarlenKernel {
    kern: Box<dyn GroupKernel>,
    plan: VarlenPlan,
    how: String,
    qp: Tensor,
    kp: Tensor,
    vp: Tensor,
    dop: Tensor,
    /// (batch, seqlen_q, seqlen_k) of the standard layout.
    dims: (i64, i64, i64),
}

impl VarlenKernel {
    /// Packs `x` for `plan` (outside any timed region).
    pub fn new(kern: Box<dyn GroupKernel>, plan: VarlenPlan, how: String, x: &super::Inputs) -> Result<VarlenKernel, BackendError> {
        let dev = x.q.device();
        let (qi, ki) = (idx(&plan.q_idx, dev), idx(&plan.k_idx, dev));
        let pack = |t: &Tensor, i: &Tensor| -> Result<Tensor, BackendError> { Ok(flat_rows(&t.f_detach()?)?.f_index_select(0, i)?.f_contiguous()?) };
        let (qp, kp, vp, dop) = (pack(&x.q, &qi)?, pack(&x.k, &ki)?, pack(&x.v, &ki)?, pack(&x.dout, &qi)?);
        Ok(VarlenKernel { kern, plan, how, qp, kp, vp, dop, dims: (x.q.size()[0], x.q.size()[2], x.k.size()[2]) })
    }

    fn unpack(&self, packed: &Tensor, rows: &[i64], s: i64) -> Result<Tensor, BackendError> {
        let (b, dev) = (self.dims.0, packed.device());
        let sz = packed.size();
        let full = Tensor::f_zeros([b * s, sz[1], sz[2]], (packed.kind(), dev))?.f_index_add(0, &idx(rows, dev), packed)?;
        unflat_rows(&full, b, s)
    }
}

impl super::Backend for VarlenBackend {
    fn name(&self) -> &'static str {
        self.name
    }
    fn summary(&self) -> &'static str {
        self.summary
    }
    fn supports(&self, case: &crate::case::Case, masks: &crate::mask::HeadMasks) -> Result<(), String> {
        super::require_cuda(case, self.name)?;
        if self.kernel != CudaVarlen::Efficient {
            super::require_half(case, self.name)?;
        } else if case.dtype == crate::case::DType::Fp64 {
            return Err(format!("{} does not take fp64", self.name));
        }
        if !masks.is_shared() {
            return Err(format!("{} needs one mask shared by all heads", self.name));
        }
        single_call_plan(&masks.groups[0], self.kernel, 1)
            .map(|_| ())
            .map_err(|why| format!("`{}` {why}; {} runs exactly one call — use `sliced`", case.pattern, self.name))
    }
    fn autograd(&self) -> bool {
        false
    }
    fn prepare(&self, case: &crate::case::Case, x: &super::Inputs) -> Result<Box<dyn super::Kernel>, BackendError> {
        let (plan, how) = single_call_plan(&x.masks.groups[0], self.kernel, case.batch).map_err(BackendError::Unsupported)?;
        Ok(Box::new(VarlenKernel::new(Box::new(CudaGroupKernel(self.kernel)), plan, how, x)?))
    }
}

impl super::Kernel for VarlenKernel {
    fn forward(&mut self, x: &super::Inputs) -> Result<super::Fwd, BackendError> {
        let (o, l, _) = self.kern.forward(&self.plan, &self.qp, &self.kp, &self.vp, x.scale)?;
        Ok(super::Fwd { out: o, lse: Some(l) })
    }
    fn backward(&mut self, x: &super::Inputs, f: &super::Fwd) -> Result<(Tensor, Tensor, Tensor), BackendError> {
        let lse = f.lse.as_ref().ok_or_else(|| BackendError::Invalid("varlen backward needs the forward's LSE".into()))?;
        self.kern.backward(&self.plan, &self.qp, &self.kp, &self.vp, &f.out, lse, &self.dop, &[], x.scale)
    }
    fn standard_out(&self, f: &super::Fwd) -> Result<Tensor, BackendError> {
        self.unpack(&f.out, &self.plan.q_idx, self.dims.1)
    }
    fn standard_grads(&self, (dq, dk, dv): (Tensor, Tensor, Tensor)) -> Result<(Tensor, Tensor, Tensor), BackendError> {
        Ok((
            self.unpack(&dq, &self.plan.q_idx, self.dims.1)?,
            self.unpack(&dk, &self.plan.k_idx, self.dims.2)?,
            self.unpack(&dv, &self.plan.k_idx, self.dims.2)?,
        ))
    }
    fn note(&self) -> String {
        format!("one varlen call over {} per batch element; inputs packed to [total, H, D] in prepare (untimed)", self.how)
    }
    fn cpu_bytes(&self, x: &super::Inputs, _pass: crate::flops::Pass) -> u64 {
        super::tensor_bytes(&x.q) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sliced::plan_groups;

    fn mask_all_kinds() -> Mask {
        // One slice of each kind, two of some, rectangular ones included.
        Mask::rect(
            40,
            44,
            vec![
                Slice::new(0..10, 0..10, SliceKind::Causal),
                Slice::new(10..25, 0..20, SliceKind::Causal),
                Slice::new(0..12, 20..30, SliceKind::InvCausal),
                Slice::new(25..40, 0..9, SliceKind::InvCausal),
                Slice::new(12..20, 20..34, SliceKind::BiCausal),
                Slice::new(30..36, 30..44, SliceKind::Full),
                Slice::new(36..40, 30..40, SliceKind::BiCausal),
            ],
        )
        .unwrap()
    }

    #[test]
    fn grouped_varlen_emulation_matches_sliced() {
        let m = mask_all_kinds();
        let groups = plan_groups(&m);
        tch::manual_seed(5);
        let o = (Kind::Double, Device::Cpu);
        let (q, k, v) = (Tensor::randn([2, 4, 40, 8], o), Tensor::randn([2, 2, 44, 8], o), Tensor::randn([2, 2, 44, 8], o));
        let (ro, rl) = sliced_forward(&q, &k, &v, &m, 0.3).unwrap();
        let (go, gl, launches) = grouped_forward(&EmulatedGroupKernel, &groups, &q, &k, &v, &m, 0.3).unwrap();
        assert_eq!(launches, groups.len());
        assert!((&go - &ro).abs().max().double_value(&[]) < 1e-5);
        let fin = rl.isfinite();
        assert!(gl.isfinite().eq_tensor(&fin).all().int64_value(&[]) == 1);
        assert!((gl.masked_select(&fin) - rl.to_kind(Kind::Float).masked_select(&fin)).abs().max().double_value(&[]) < 1e-5);
        let dout = Tensor::randn([2, 4, 40, 8], o);
        let (dq, dk, dv) = sliced_backward(&q, &k, &v, &ro, &rl, &dout, &m, 0.3).unwrap();
        let (gq, gk, gv) = grouped_backward(&EmulatedGroupKernel, &groups, &q, &k, &v, &ro, &rl, &dout, &m, 0.3).unwrap();
        for (a, b) in [(dq, gq), (dk, gk), (dv, gv)] {
            assert!((a - b).abs().max().double_value(&[]) < 1e-4);
        }
    }

    #[test]
    fn plan_reverses_inv_causal_and_windows_bi_causal() {
        let m = mask_all_kinds();
        for g in plan_groups(&m) {
            let p = VarlenPlan::for_group(&g, 1, 40, 44);
            assert_eq!(p.sequences(), g.slices.len());
            match g.kind {
                SliceKind::InvCausal => assert!(p.causal && p.q_idx[0] == g.slices[0].q.end as i64 - 1),
                SliceKind::BiCausal => assert_eq!(p.window.0, Some(g.slices[0].k_len() as i64 - g.slices[0].q_len() as i64)),
                SliceKind::Full => assert!(!p.causal),
                SliceKind::Causal => assert!(p.causal && p.window.0.is_none()),
            }
        }
    }

    fn zoo(name: &str, s: usize, kv: &[(&str, &str)]) -> Mask {
        let mut p = crate::mask::Params::new();
        for (k, v) in kv {
            p = p.set(k, v);
        }
        crate::mask::build_pattern(name, s, &p).unwrap().groups.remove(0)
    }

    #[test]
    fn window_form_recognises_exactly_the_one_call_masks() {
        let s = 97;
        let docs = [("doc_lens", "30,1,40,26")];
        let yes = [
            zoo("full", s, &[]),
            zoo("causal", s, &[]),
            zoo("sliding_window", s, &[("window_left", "7"), ("window_right", "3")]),
            zoo("sliding_window", s, &[("window_left", "0"), ("window_right", "5")]),
            zoo("sliding_window", s, &[("window_left", "200"), ("window_right", "4")]),
            zoo("sliding_window_causal", s, &[("window", "9")]),
            zoo("causal_document", s, &docs),
            zoo("full_document", s, &docs),
        ];
        for m in &yes {
            let w = window_form(m).unwrap_or_else(|| panic!("not recognised: {:?}", m.slices()));
            // Rebuild the mask the kernel would apply from (documents, window) and compare exactly.
            let plan = VarlenPlan::windowed(&w, 1, s);
            let mut dense = vec![false; s * s];
            for (n, d) in w.docs.iter().enumerate() {
                let seq = plan.sequence_mask(n).unwrap().to_dense();
                for (i, row) in d.clone().enumerate() {
                    for (j, col) in d.clone().enumerate() {
                        dense[row * s + col] = seq[i * d.len() + j];
                    }
                }
            }
            assert_eq!(dense, m.to_dense(), "{w:?}");
        }
        assert_eq!(window_form(&zoo("sliding_window_causal", s, &[("window", "9")])).unwrap().right, Some(0));
        assert_eq!(window_form(&zoo("causal_document", s, &docs)).unwrap().docs.len(), 4);
        for (name, kv) in [
            ("share_question", &docs[..]),
            ("prefix_lm_causal", &[][..]),
            ("causal_blockwise", &docs[..]),
            ("global_sliding_window", &[("global", "4"), ("window", "8")][..]),
        ] {
            assert!(window_form(&zoo(name, s, kv)).is_none(), "{name} is not one window call");
        }
    }

    #[test]
    fn single_call_kernel_with_packed_inputs_matches_sliced() {
        use crate::case::{Case, DType, DeviceKind, HeadLayout};
        use crate::flops::Pass;
        for (name, kv) in [
            ("sliding_window", &[("window_left", "6"), ("window_right", "2")][..]),
            ("sliding_window_causal", &[("window", "5")][..]),
            ("causal_document", &[("doc_lens", "20,1,19")][..]),
        ] {
            let m = zoo(name, 40, kv);
            let case = Case {
                batch: 2,
                ..Case::kernel("flash-varlen", name, crate::mask::Params::new(), 40, HeadLayout { q: 4, kv: 2 }, 8, DType::Fp64, Pass::Fwdbwd, DeviceKind::Cpu)
            };
            let x = super::super::Inputs::new(&case, crate::mask::HeadMasks::shared(m.clone()), 3, false).unwrap();
            let (plan, _) = single_call_plan(&m, CudaVarlen::Flash, 2).unwrap();
            let mut k = VarlenKernel::new(Box::new(EmulatedGroupKernel), plan, String::new(), &x).unwrap();
            use super::super::Kernel;
            let f = k.forward(&x).unwrap();
            let (ro, rl) = sliced_forward(&x.q, &x.k, &x.v, &m, x.scale).unwrap();
            assert!((k.standard_out(&f).unwrap() - &ro).abs().max().double_value(&[]) < 1e-9, "{name} out");
            let g = k.backward(&x, &f).unwrap();
            let (dq, dk, dv) = k.standard_grads(g).unwrap();
            let (rq, rk, rv) = sliced_backward(&x.q, &x.k, &x.v, &ro, &rl, &x.dout, &m, x.scale).unwrap();
            for (a, b) in [(dq, rq), (dk, rk), (dv, rv)] {
                // The emulated kernel keeps the LSE in f32, like the real kernels: f32-level agreement.
                let e = (&a - &b).abs().max().double_value(&[]);
                assert!(e < 1e-5, "{name} grads differ by {e}");
            }
        }
    }

    /// On the GPU machine (`launch/gpu-check` runs the ignored `cuda_` tests): each real varlen
    /// kernel through the shim — FlashAttention-2, memory-efficient, cuDNN — agrees with the CPU sliced
    /// computation on a mask with every slice kind, forward and backward. This checks what only a GPU
    /// shows: flash's LSE layout, the efficient and cuDNN argument conventions (causal alignment,
    /// window, cumulative offsets), and their backward state. bf16 inputs, bf16 tolerances.
    #[test]
    #[ignore = "needs a CUDA device; run by launch/gpu-check"]
    fn cuda_varlen_kernels_match_cpu() {
        assert!(crate::sys::cuda_available(), "this test needs a CUDA device");
        let m = mask_all_kinds();
        let groups = plan_groups(&m);
        tch::manual_seed(5);
        let o = (Kind::Float, Device::Cpu);
        let (q, k, v) = (Tensor::randn([2, 4, 40, 64], o), Tensor::randn([2, 2, 44, 64], o), Tensor::randn([2, 2, 44, 64], o));
        let dout = Tensor::randn([2, 4, 40, 64], o);
        let r = |t: &Tensor| t.to_kind(Kind::BFloat16).to_kind(Kind::Float);
        let (ro, rl) = sliced_forward(&r(&q), &r(&k), &r(&v), &m, 0.125).unwrap();
        let (rdq, rdk, rdv) = sliced_backward(&r(&q), &r(&k), &r(&v), &ro, &rl, &r(&dout), &m, 0.125).unwrap();
        let g = |t: &Tensor| t.to_kind(Kind::BFloat16).to_device(Device::Cuda(0));
        let diff = |a: &Tensor, b: &Tensor| (a.to_device(Device::Cpu).to_kind(Kind::Float) - b).abs().max().double_value(&[]);
        for which in [CudaVarlen::Flash, CudaVarlen::Efficient, CudaVarlen::Cudnn] {
            let kern = CudaGroupKernel(which);
            let (go, gl, _) = grouped_forward(&kern, &groups, &g(&q), &g(&k), &g(&v), &m, 0.125).unwrap();
            assert!(diff(&go, &ro) < 3e-2, "{which:?}: out differs from CPU by {}", diff(&go, &ro));
            let fin = rl.isfinite();
            let lse_err = (gl.to_device(Device::Cpu).to_kind(Kind::Float).masked_select(&fin) - rl.masked_select(&fin)).abs().max().double_value(&[]);
            assert!(lse_err < 3e-2, "{which:?}: LSE differs from CPU by {lse_err} (layout?)");
            let (dq, dk, dv) = grouped_backward(&kern, &groups, &g(&q), &g(&k), &g(&v), &go, &gl, &g(&dout), &m, 0.125).unwrap();
            for (name, a, b) in [("dq", &dq, &rdq), ("dk", &dk, &rdk), ("dv", &dv, &rdv)] {
                assert!(diff(a, b) < 6e-2, "{which:?}: {name} differs from CPU by {}", diff(a, b));
            }
        }
    }
}
