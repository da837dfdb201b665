//! The dense path: attention computed block by block with tensor ops, on any device and dtype (f64
//! included, which the checks rely on), merged with the LSE.
//!
//! - [`forward`] / [`backward`] (the `sliced` kernel off the FlashAttention path): full slices and square
//!   causal slices in f32/bf16/f16 on the CPU run on torch's fused CPU flash kernel
//!   (`_scaled_dot_product_flash_attention_for_cpu`, which returns the LSE; its backward takes the
//!   final out/lse); every other slice is computed densely on its own rectangle (QKᵀ, masked by the
//!   slice's kind, accumulated in f32 — f64 for f64), in row chunks of at most [`CHUNK_ELEMS`] scores.
//! - [`materialized_forward`] / [`materialized_backward`] (the `naive` backend's kernel for CP pieces):
//!   ONE score block over the whole rectangle, masked by the mask's dense boolean picture — the
//!   textbook computation, O(Sq·Sk) memory, independent of the slice machinery.

use tch::{Device, Kind, Tensor};

use super::merge::merge_into;
use super::{acc_kind, check_inputs, finite_or_zero, Dims, KernelError};
use crate::mask::{clip_slice, Mask, Slice, SliceKind};

/// Upper bound on the scores one dense piece materialises (B · Hq · rows · keys), 2²⁴ = 64 MiB in f32.
pub const CHUNK_ELEMS: i64 = 1 << 24;

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
pub fn fused_cpu_slice(q: &Tensor, s: &Slice) -> bool {
    q.device() == Device::Cpu
        && matches!(q.kind(), Kind::Float | Kind::BFloat16 | Kind::Half)
        && (s.kind == SliceKind::Full || (s.kind == SliceKind::Causal && s.q_len() == s.k_len()))
}

/// A slice's q rows `[B, Hq, lq, D]` and keys / values `[B, Hq, lk, D]` (KV heads repeated for GQA),
/// contiguous, in the input dtype — the layout the fused CPU kernel takes.
fn slice_qkv_repeated(q: &Tensor, k: &Tensor, v: &Tensor, s: &Slice, dm: &Dims) -> Result<(Tensor, Tensor, Tensor), KernelError> {
    let g = dm.hq / dm.hkv;
    let (lq, lk) = (s.q_len() as i64, s.k_len() as i64);
    let qs = q.f_narrow(2, s.q.start as i64, lq)?.f_contiguous()?;
    let rep = |t: &Tensor| -> Result<Tensor, KernelError> {
        let t = t.f_narrow(2, s.k.start as i64, lk)?;
        Ok(if g > 1 { t.f_repeat_interleave_self_int(g, 1, None)?.f_contiguous()? } else { t.f_contiguous()? })
    };
    Ok((qs, rep(k)?, rep(v)?))
}

/// Splits every slice into row chunks whose dense score block stays under [`CHUNK_ELEMS`]; each piece
/// is again an exact slice (via [`clip_slice`]). Slices for the fused kernel stay whole (it tiles).
pub fn pieces(q: &Tensor, mask: &Mask, per_row_elems: i64) -> Vec<Slice> {
    let mut out = Vec::new();
    for s in mask.slices() {
        if fused_cpu_slice(q, s) {
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

/// One dense block: query rows `q0..q0+lq` against keys `k0..k0+lk`, with the attended pairs given by
/// a boolean `[lq, lk]` mask (`None` = all).
struct Block {
    q0: i64,
    lq: i64,
    k0: i64,
    lk: i64,
    allowed: Option<Tensor>,
}

impl Block {
    fn of_slice(s: &Slice, device: Device) -> Block {
        let (lq, lk) = (s.q_len() as i64, s.k_len() as i64);
        Block { q0: s.q.start as i64, lq, k0: s.k.start as i64, lk, allowed: kind_mask(s.kind, lq, lk, device) }
    }

    /// Scores `[B, Hkv, G, lq, lk]` (scaled, −inf outside the mask), the block's q rows
    /// `[B, Hkv, G, lq, D]` and keys / values `[B, Hkv, 1, lk, D]`, all in the accumulation kind.
    fn scores(&self, q: &Tensor, k: &Tensor, v: &Tensor, dm: &Dims, scale: f64, acc: Kind) -> Result<(Tensor, Tensor, Tensor, Tensor), KernelError> {
        let g = dm.hq / dm.hkv;
        let qs = q.f_narrow(2, self.q0, self.lq)?.f_to_kind(acc)?.f_reshape([dm.b, dm.hkv, g, self.lq, dm.d])?;
        let ks = k.f_narrow(2, self.k0, self.lk)?.f_to_kind(acc)?.f_unsqueeze(2)?;
        let vs = v.f_narrow(2, self.k0, self.lk)?.f_to_kind(acc)?.f_unsqueeze(2)?;
        let mut scores = qs.f_matmul(&ks.f_transpose(-1, -2)?)?.f_mul_scalar(scale)?;
        if let Some(m) = &self.allowed {
            scores = scores.f_masked_fill(&m.f_logical_not()?, f64::NEG_INFINITY)?;
        }
        Ok((scores, qs, ks, vs))
    }

    /// The block's partial result: out `[B, Hq, lq, D]` and lse `[B, Hq, lq]` in the accumulation kind.
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor, dm: &Dims, scale: f64, acc: Kind) -> Result<(Tensor, Tensor), KernelError> {
        let (scores, _, _, vs) = self.scores(q, k, v, dm, scale, acc)?;
        let plse = scores.f_logsumexp([-1], false)?; // [B, Hkv, G, lq]
        let p = scores.f_sub(&finite_or_zero(&plse)?.f_unsqueeze(-1)?)?.f_exp()?;
        Ok((p.f_matmul(&vs)?.f_reshape([dm.b, dm.hq, self.lq, dm.d])?, plse.f_reshape([dm.b, dm.hq, self.lq])?))
    }

    /// Adds this block's share of the gradients into dq / dk / dv (accumulation kind), given the FINAL
    /// (merged) lse of the rows with −inf replaced by 0, dout and Drow = rowsum(dO∘O).
    #[allow(clippy::too_many_arguments)]
    fn backward_into(
        &self,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        (lse_safe, dout_a, drow): (&Tensor, &Tensor, &Tensor),
        (dq, dk, dv): (&Tensor, &Tensor, &Tensor),
        dm: &Dims,
        scale: f64,
        acc: Kind,
    ) -> Result<(), KernelError> {
        let g = dm.hq / dm.hkv;
        let (scores, qs, ks, vs) = self.scores(q, k, v, dm, scale, acc)?;
        let l = lse_safe.f_narrow(2, self.q0, self.lq)?.f_reshape([dm.b, dm.hkv, g, self.lq, 1])?;
        let p = scores.f_sub(&l)?.f_exp()?; // [B, Hkv, G, lq, lk]
        let dos = dout_a.f_narrow(2, self.q0, self.lq)?.f_reshape([dm.b, dm.hkv, g, self.lq, dm.d])?;
        let dr = drow.f_narrow(2, self.q0, self.lq)?.f_reshape([dm.b, dm.hkv, g, self.lq, 1])?;
        let pdv = p.f_transpose(-1, -2)?.f_matmul(&dos)?.f_sum_dim_intlist(&[2i64][..], false, acc)?; // [B, Hkv, lk, D]
        let dp = dos.f_matmul(&vs.f_transpose(-1, -2)?)?;
        let ds = p.f_mul(&dp.f_sub(&dr)?)?;
        let pdq = ds.f_matmul(&ks)?.f_mul_scalar(scale)?.f_reshape([dm.b, dm.hq, self.lq, dm.d])?;
        let pdk = ds.f_transpose(-1, -2)?.f_matmul(&qs)?.f_sum_dim_intlist(&[2i64][..], false, acc)?.f_mul_scalar(scale)?;
        let _ = dq.f_narrow(2, self.q0, self.lq)?.f_add_(&pdq)?;
        let _ = dk.f_narrow(2, self.k0, self.lk)?.f_add_(&pdk)?;
        let _ = dv.f_narrow(2, self.k0, self.lk)?.f_add_(&pdv)?;
        Ok(())
    }
}

/// The LSE kind of a result: f32, f64 for f64 inputs.
fn lse_kind(acc: Kind) -> Kind {
    if acc == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// Dense-path forward over a range mask (see the module doc). Returns (out `[B, Hq, Sq, D]` in q's
/// dtype, lse `[B, Hq, Sq]` f32 — f64 for f64).
pub fn forward(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> Result<(Tensor, Tensor), KernelError> {
    let dm = check_inputs(q, k, v, mask)?;
    let acc = acc_kind(q.kind());
    let dev = q.device();
    let out = Tensor::f_zeros([dm.b, dm.hq, dm.sq, dm.d], (acc, dev))?;
    let lse = Tensor::f_full([dm.b, dm.hq, dm.sq], f64::NEG_INFINITY, (acc, dev))?;
    for s in pieces(q, mask, dm.b * dm.hq) {
        let (po, plse) = if fused_cpu_slice(q, &s) {
            let (qs, ks, vs) = slice_qkv_repeated(q, k, v, &s, &dm)?;
            let (o, l) = Tensor::f_internal_scaled_dot_product_flash_attention_for_cpu(&qs, &ks, &vs, 0.0, s.kind == SliceKind::Causal, None::<Tensor>, scale)?;
            (o, l.f_to_kind(acc)?)
        } else {
            Block::of_slice(&s, dev).forward(q, k, v, &dm, scale, acc)?
        };
        let (q0, lq) = (s.q.start as i64, s.q_len() as i64);
        merge_into(&mut out.f_narrow(2, q0, lq)?, &mut lse.f_narrow(2, q0, lq)?, &po, &plse)?;
    }
    Ok((out.f_to_kind(q.kind())?, lse.f_to_kind(lse_kind(acc))?))
}

/// Checks the shapes a backward receives: out / dout like q, lse `[B, Hq, Sq]`.
fn check_backward(q: &Tensor, out: &Tensor, lse: &Tensor, dout: &Tensor, dm: &Dims) -> Result<(), KernelError> {
    if out.size() != q.size() || dout.size() != q.size() || lse.size() != [dm.b, dm.hq, dm.sq] {
        return Err(KernelError::Invalid(format!(
            "out {:?} / dout {:?} must match q {:?}, lse {:?} must be [B, Hq, Sq]",
            out.size(),
            dout.size(),
            q.size(),
            lse.size()
        )));
    }
    Ok(())
}

/// What every dense-path backward sets up once: the checked dimensions, the accumulation dtype,
/// dout and Drow = rowsum(dO∘O) in that dtype, lse with fully-masked rows (−∞) zeroed, and zeroed
/// dq, dk, dv accumulators that the blocks add into.
struct GradAccumulator {
    dm: Dims,
    acc: Kind,
    dout: Tensor,
    drow: Tensor,
    lse: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
}

impl GradAccumulator {
    fn new(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, lse: &Tensor, dout: &Tensor, mask: &Mask) -> Result<Self, KernelError> {
        let dm = check_inputs(q, k, v, mask)?;
        check_backward(q, out, lse, dout, &dm)?;
        let acc = acc_kind(q.kind());
        let dev = q.device();
        let dout_a = dout.f_to_kind(acc)?;
        let drow = dout_a.f_mul(&out.f_to_kind(acc)?)?.f_sum_dim_intlist(&[-1i64][..], false, acc)?; // [B, Hq, Sq]
        let lse = finite_or_zero(&lse.f_to_kind(acc)?)?;
        let dq = Tensor::f_zeros([dm.b, dm.hq, dm.sq, dm.d], (acc, dev))?;
        let dk = Tensor::f_zeros([dm.b, dm.hkv, dm.sk, dm.d], (acc, dev))?;
        let dv = Tensor::f_zeros([dm.b, dm.hkv, dm.sk, dm.d], (acc, dev))?;
        Ok(GradAccumulator { dm, acc, dout: dout_a, drow, lse, dq, dk, dv })
    }

    /// Adds one block's gradients (the dense formula of [`backward`]).
    fn add_block(&self, block: Block, (q, k, v): (&Tensor, &Tensor, &Tensor), scale: f64) -> Result<(), KernelError> {
        block.backward_into((q, k, v), (&self.lse, &self.dout, &self.drow), (&self.dq, &self.dk, &self.dv), &self.dm, scale, self.acc)
    }

    /// The gradients in the dtypes of q, k, v.
    fn finish(self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        Ok((self.dq.f_to_kind(q.kind())?, self.dk.f_to_kind(k.kind())?, self.dv.f_to_kind(v.kind())?))
    }
}

/// Dense-path gradients of this mask's contribution given the FINAL (possibly merged over several
/// blocks of keys) out and lse of the rows and dout: (dq `[B, Hq, Sq, D]`, dk, dv `[B, Hkv, Sk, D]`) in
/// the dtypes of q, k, v. Standard flash-attention backward: P = exp(S·scale − lse) on attended
/// pairs, dV = Pᵀ dO, dP = dO Vᵀ, Drow = rowsum(dO∘O), dS = P∘(dP − Drow), dQ = dS K·scale,
/// dK = dSᵀ Q·scale (summed over the query heads of a KV group).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    mask: &Mask,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor), KernelError> {
    let grads = GradAccumulator::new(q, k, v, out, lse, dout, mask)?;
    let (dm, acc, dev) = (&grads.dm, grads.acc, q.device());
    let g = dm.hq / dm.hkv;
    for s in pieces(q, mask, dm.b * dm.hq) {
        let (lq, lk, q0, k0) = (s.q_len() as i64, s.k_len() as i64, s.q.start as i64, s.k.start as i64);
        if fused_cpu_slice(q, &s) {
            // torch's fused CPU flash backward, fed the FINAL out and lse of these rows (so this block's
            // dq, dk, dv are its share of the merged attention, as in ring attention).
            let (qs, ks, vs) = slice_qkv_repeated(q, k, v, &s, dm)?;
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
            let fold = |t: Tensor| -> Result<Tensor, KernelError> {
                Ok(t.f_to_kind(acc)?.f_reshape([dm.b, dm.hkv, g, lk, dm.d])?.f_sum_dim_intlist(&[2i64][..], false, acc)?)
            };
            let _ = grads.dq.f_narrow(2, q0, lq)?.f_add_(&pdq.f_to_kind(acc)?)?;
            let _ = grads.dk.f_narrow(2, k0, lk)?.f_add_(&fold(pdk)?)?;
            let _ = grads.dv.f_narrow(2, k0, lk)?.f_add_(&fold(pdv)?)?;
            continue;
        }
        grads.add_block(Block::of_slice(&s, dev), (q, k, v), scale)?;
    }
    grads.finish(q, k, v)
}

/// The whole rectangle as one block masked by the mask's dense boolean picture.
fn whole(mask: &Mask, device: Device) -> Result<Block, KernelError> {
    let d: Vec<u8> = mask.to_dense().into_iter().map(u8::from).collect();
    let (sq, sk) = (mask.seqlen_q as i64, mask.seqlen_k as i64);
    let allowed = Tensor::from_slice(&d).f_reshape([sq, sk])?.f_to_kind(Kind::Bool)?.f_to_device(device)?;
    Ok(Block { q0: 0, lq: sq, k0: 0, lk: sk, allowed: Some(allowed) })
}

/// Materialised forward: one score block over the whole rectangle (see the module doc). Same result
/// and conventions as [`forward`].
pub fn materialized_forward(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> Result<(Tensor, Tensor), KernelError> {
    let dm = check_inputs(q, k, v, mask)?;
    let acc = acc_kind(q.kind());
    let (o, l) = whole(mask, q.device())?.forward(q, k, v, &dm, scale, acc)?;
    Ok((o.f_to_kind(q.kind())?, l.f_to_kind(lse_kind(acc))?))
}

/// Materialised backward from the final out / lse (same conventions as [`backward`]).
#[allow(clippy::too_many_arguments)]
pub fn materialized_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    mask: &Mask,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor), KernelError> {
    let grads = GradAccumulator::new(q, k, v, out, lse, dout, mask)?;
    grads.add_block(whole(mask, q.device())?, (q, k, v), scale)?;
    grads.finish(q, k, v)
}

/// The `naive` backend's kernel for CP pieces: [`materialized_forward`] / [`materialized_backward`].
pub struct Materialized;
pub static MATERIALIZED: Materialized = Materialized;

impl super::MaskedAttention for Materialized {
    fn name(&self) -> &'static str {
        "naive"
    }
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> Result<(Tensor, Tensor), KernelError> {
        materialized_forward(q, k, v, mask, scale)
    }
    fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
        mask: &Mask,
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        materialized_backward(q, k, v, out, lse, dout, mask, scale)
    }
    fn gpu_launches(&self, _mask: &Mask) -> usize {
        // matmul, mask, logsumexp, exp, matmul: a handful of kernels whatever the mask.
        5
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{dense_ref, max_diff, rand_qkv, random_mask};
    use super::*;

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
        let dout = crate::sys::rng::randn([2, 6, 96, 16], (Kind::Double, Device::Cpu)).unwrap();
        let (o64, l64) = forward(&q, &k, &v, &m, 0.25).unwrap();
        let (o32, l32) = forward(&q.to_kind(Kind::Float), &k.to_kind(Kind::Float), &v.to_kind(Kind::Float), &m, 0.25).unwrap();
        assert!(max_diff(&o32.to_kind(Kind::Double), &o64) < 1e-5);
        assert!(max_diff(&l32.to_kind(Kind::Double), &l64) < 1e-5);
        let g64 = backward(&q, &k, &v, &o64, &l64, &dout, &m, 0.25).unwrap();
        let f = |t: &Tensor| t.to_kind(Kind::Float);
        let g32 = backward(&f(&q), &f(&k), &f(&v), &o32, &l32, &f(&dout), &m, 0.25).unwrap();
        for (a, b) in [(&g32.0, &g64.0), (&g32.1, &g64.1), (&g32.2, &g64.2)] {
            assert!(max_diff(&a.to_kind(Kind::Double), b) < 1e-4, "{}", max_diff(&a.to_kind(Kind::Double), b));
        }
    }

    /// The materialised kernel (one masked block) equals the slice-by-slice dense path, forward and
    /// backward, on random masks with every kind (f64, GQA).
    #[test]
    fn materialized_matches_the_dense_path() {
        for seed in 0..6 {
            let (sq, sk) = (31 + seed as usize, 27 + seed as usize);
            let m = random_mask(sq, sk, 40 + seed);
            let (q, k, v) = rand_qkv(2, 4, 2, sq as i64, sk as i64, 8, seed as i64);
            let dout = crate::sys::rng::randn([2, 4, sq as i64, 8], (Kind::Double, Device::Cpu)).unwrap();
            let (o, l) = materialized_forward(&q, &k, &v, &m, 0.3).unwrap();
            let (ro, rl) = dense_ref(&q, &k, &v, &m, 0.3);
            assert!(max_diff(&o, &ro) < 1e-10 && max_diff(&l.nan_to_num(0.0, 0.0, 0.0), &rl.nan_to_num(0.0, 0.0, 0.0)) < 1e-10, "seed {seed}");
            let a = materialized_backward(&q, &k, &v, &o, &l, &dout, &m, 0.3).unwrap();
            let b = backward(&q, &k, &v, &o, &l, &dout, &m, 0.3).unwrap();
            for (x, y) in [(&a.0, &b.0), (&a.1, &b.1), (&a.2, &b.2)] {
                assert!(max_diff(x, y) < 1e-10, "seed {seed}: {}", max_diff(x, y));
            }
        }
    }
}
