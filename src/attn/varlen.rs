//! Running packed calls ([`super::groups::PackedCall`]) on a varlen kernel: our `[B, H, S, D]` tensors
//! gathered into the kernels' `[total, H, D]` rows, one call per group of slices, results scattered
//! back and merged by LSE ([`super::merge`]).
//!
//! The kernel itself is behind [`VarlenKernel`]: the real CUDA kernels through the shim
//! ([`CudaVarlenKernel`]: FlashAttention-2, memory-efficient, cuDNN), or a CPU emulation of their
//! semantics ([`EmulatedVarlenKernel`]), so the packing, reversal and scatter are tested without a GPU.

use tch::{Device, Kind, Tensor};

use super::dense;
use super::groups::{calls_for_groups, Group, PackedCall};
use super::merge::merge_into;
use super::KernelError;
use crate::mask::Mask;

/// Runs one packed varlen forward / backward. q `[Tq, Hq, D]`, k/v `[Tk, Hkv, D]`; lse `[Hq, Tq]` f32.
pub trait VarlenKernel {
    /// Returns (out `[Tq, Hq, D]`, lse `[Hq, Tq]` f32, state for the backward).
    fn forward(&self, call: &PackedCall, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor, Vec<Tensor>), KernelError>;
    /// Gradients with the given (final) out and lse of the packed rows.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        call: &PackedCall,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
        state: &[Tensor],
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor), KernelError>;
}

/// An int64 index tensor on `dev`.
pub fn index_tensor(v: &[i64], dev: Device) -> Tensor {
    Tensor::from_slice(v).to_device(dev)
}

fn cu(v: &[i32], dev: Device) -> Tensor {
    Tensor::from_slice(v).to_device(dev)
}

/// `[B, H, S, D]` → `[B·S, H, D]` (contiguous).
pub fn flat_rows(t: &Tensor) -> Result<Tensor, KernelError> {
    let s = t.size();
    Ok(t.f_transpose(1, 2)?.f_contiguous()?.f_reshape([s[0] * s[2], s[1], s[3]])?)
}

/// `[B·S, H, D]` → `[B, H, S, D]`.
pub fn unflat_rows(t: &Tensor, b: i64, s: i64) -> Result<Tensor, KernelError> {
    let sz = t.size();
    Ok(t.f_reshape([b, s, sz[1], sz[2]])?.f_transpose(1, 2)?.f_contiguous()?)
}

/// `[H, B·S]` → `[B, H, S]`.
fn unflat_lse(t: &Tensor, b: i64, s: i64) -> Result<Tensor, KernelError> {
    let h = t.size()[0];
    Ok(t.f_reshape([h, b, s])?.f_transpose(0, 1)?.f_contiguous()?)
}

/// Forward over a mask with one kernel call per group, merged with LSE. Returns (out in q's dtype,
/// lse f32 `[B, Hq, Sq]`, number of launches).
pub fn grouped_forward(
    kern: &dyn VarlenKernel,
    groups: &[Group],
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Mask,
    scale: f64,
) -> Result<(Tensor, Tensor, usize), KernelError> {
    packed_forward(kern, &calls_for_groups(groups, mask, q.size()[0] as usize), q, k, v, scale)
}

/// Forward with one kernel call per packed call, merged with LSE (see [`grouped_forward`]): each
/// call's rows are merged in place into the f32 result (in the packed `[T, H, D]` layout, the LSE as a
/// `[T, H]` view of `[H, T]`).
pub fn packed_forward(
    kern: &dyn VarlenKernel,
    calls: &[PackedCall],
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> Result<(Tensor, Tensor, usize), KernelError> {
    let (b, hq, sq, d) = (q.size()[0], q.size()[1], q.size()[2], q.size()[3]);
    let dev = q.device();
    let (qf, kf, vf) = (flat_rows(q)?, flat_rows(k)?, flat_rows(v)?);
    let mut out = Tensor::f_zeros([b * sq, hq, d], (Kind::Float, dev))?;
    let mut lse = Tensor::f_full([hq, b * sq], f64::NEG_INFINITY, (Kind::Float, dev))?;
    for call in calls {
        let (qi, ki) = (index_tensor(&call.q_idx, dev), index_tensor(&call.k_idx, dev));
        let (qp, kp, vp) = (qf.f_index_select(0, &qi)?, kf.f_index_select(0, &ki)?, vf.f_index_select(0, &ki)?);
        let (op, lp, _) = kern.forward(call, &qp, &kp, &vp, scale)?;
        // The call's rows of the running result (gathered), merged, and written back.
        let mut rows_out = out.f_index_select(0, &qi)?;
        let mut rows_lse = lse.f_index_select(1, &qi)?.f_transpose(0, 1)?.f_contiguous()?; // [Tq, H]
        merge_into(&mut rows_out, &mut rows_lse, &op, &lp.f_to_kind(Kind::Float)?.f_transpose(0, 1)?)?;
        let _ = out.f_index_copy_(0, &qi, &rows_out)?;
        let _ = lse.f_index_copy_(1, &qi, &rows_lse.f_transpose(0, 1)?)?;
    }
    Ok((unflat_rows(&out, b, sq)?.f_to_kind(q.kind())?, unflat_lse(&lse, b, sq)?, calls.len()))
}

/// Backward with one kernel call per group, given the final out / lse `[B, Hq, Sq]` and dout.
#[allow(clippy::too_many_arguments)]
pub fn grouped_backward(
    kern: &dyn VarlenKernel,
    groups: &[Group],
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    mask: &Mask,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor), KernelError> {
    packed_backward(kern, &calls_for_groups(groups, mask, q.size()[0] as usize), q, k, v, out, lse, dout, scale)
}

/// Backward with one kernel call per packed call, given the final out / lse (see [`grouped_backward`]).
#[allow(clippy::too_many_arguments)]
pub fn packed_backward(
    kern: &dyn VarlenKernel,
    calls: &[PackedCall],
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor), KernelError> {
    let (b, hq, sq, d) = (q.size()[0], q.size()[1], q.size()[2], q.size()[3]);
    let (hkv, sk) = (k.size()[1], k.size()[2]);
    let dev = q.device();
    let (qf, kf, vf, of, dof) = (flat_rows(q)?, flat_rows(k)?, flat_rows(v)?, flat_rows(out)?, flat_rows(dout)?);
    let lf = lse.f_to_kind(Kind::Float)?.f_transpose(0, 1)?.f_reshape([hq, b * sq])?;
    let mut dq = Tensor::f_zeros([b * sq, hq, d], (Kind::Float, dev))?;
    let mut dk = Tensor::f_zeros([b * sk, hkv, d], (Kind::Float, dev))?;
    let mut dv = Tensor::f_zeros([b * sk, hkv, d], (Kind::Float, dev))?;
    for call in calls {
        let (qi, ki) = (index_tensor(&call.q_idx, dev), index_tensor(&call.k_idx, dev));
        let (qp, kp, vp) = (qf.f_index_select(0, &qi)?, kf.f_index_select(0, &ki)?, vf.f_index_select(0, &ki)?);
        let (op, dop) = (of.f_index_select(0, &qi)?, dof.f_index_select(0, &qi)?);
        let lp = lf.f_index_select(1, &qi)?.f_contiguous()?;
        // Dropout is 0, so the backward needs no forward state (rng / philox): none is passed.
        let (gq, gk, gv) = kern.backward(call, &qp, &kp, &vp, &op, &lp, &dop, &[], scale)?;
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
pub struct CudaVarlenKernel(pub CudaVarlen);

/// Normalises a kernel's LSE to `[H, T]`.
fn lse_ht(lse: &Tensor, h: i64, t: i64) -> Result<Tensor, KernelError> {
    let s = lse.size();
    let r = if s == [h, t] {
        lse.shallow_clone()
    } else if s == [1, h, t] {
        lse.f_squeeze_dim(0)?
    } else if s == [t, h] || s == [t, h, 1] {
        lse.f_reshape([t, h])?.f_transpose(0, 1)?
    } else {
        return Err(KernelError::Torch(format!("unexpected varlen LSE shape {s:?} (H={h}, total={t})")));
    };
    Ok(r.f_to_kind(Kind::Float)?.f_contiguous()?)
}

/// Expands KV heads to the query heads (kernels without GQA support).
fn repeat_kv(t: &Tensor, hq: i64) -> Result<Tensor, KernelError> {
    let hkv = t.size()[1];
    Ok(if hkv == hq { t.shallow_clone() } else { t.f_repeat_interleave_self_int(hq / hkv, 1, None)? })
}

/// Sums gradients of repeated KV heads back onto their KV head.
fn fold_kv(t: &Tensor, hkv: i64) -> Result<Tensor, KernelError> {
    let s = t.size();
    if s[1] == hkv {
        return Ok(t.shallow_clone());
    }
    Ok(t.f_reshape([s[0], hkv, s[1] / hkv, s[2]])?.f_sum_dim_intlist(&[2i64][..], false, t.kind())?)
}

impl VarlenKernel for CudaVarlenKernel {
    fn forward(&self, call: &PackedCall, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor, Vec<Tensor>), KernelError> {
        let dev = q.device();
        let (cq, ck) = (cu(&call.cu_q, dev), cu(&call.cu_k, dev));
        let (t, h) = (q.size()[0], q.size()[1]);
        match self.0 {
            CudaVarlen::Flash => {
                let r = crate::sys::varlen::flash_varlen_fwd(q, k, v, &cq, &ck, call.max_q, call.max_k, scale, call.causal, call.window)?;
                Ok((r.out, lse_ht(&r.lse, h, t)?, vec![r.rng_state[0].shallow_clone(), r.rng_state[1].shallow_clone()]))
            }
            CudaVarlen::Efficient => {
                let (k, v) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let mask_type = if call.causal { 2 } else { 0 };
                let r = crate::sys::varlen::efficient_varlen_fwd(
                    &q.f_unsqueeze(0)?,
                    &k.f_unsqueeze(0)?,
                    &v.f_unsqueeze(0)?,
                    &cq,
                    &ck,
                    call.max_q,
                    call.max_k,
                    scale,
                    mask_type,
                    call.window.0,
                )?;
                Ok((r.out.f_squeeze_dim(0)?, lse_ht(&r.lse, h, t)?, vec![r.rng_state[0].shallow_clone(), r.rng_state[1].shallow_clone()]))
            }
            CudaVarlen::Cudnn => {
                let (k, v) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let r = crate::sys::varlen::cudnn_varlen_fwd(q, &k, &v, &cq, &ck, call.max_q, call.max_k, scale, call.causal)?;
                Ok((r.out, lse_ht(&r.lse, h, t)?, vec![r.rng_state[0].shallow_clone(), r.rng_state[1].shallow_clone()]))
            }
        }
    }

    fn backward(
        &self,
        call: &PackedCall,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
        _state: &[Tensor],
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        let dev = q.device();
        let (cq, ck) = (cu(&call.cu_q, dev), cu(&call.cu_k, dev));
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
                    call.max_q,
                    call.max_k,
                    0.0,
                    call.causal,
                    &zero,
                    &zero,
                    scale,
                    call.window.0,
                    call.window.1,
                )?;
                Ok((dq, dk, dv))
            }
            CudaVarlen::Efficient => {
                let (kr, vr) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let mask_type = if call.causal { 2 } else { 0 };
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
                    call.max_q,
                    call.max_k,
                    &lse3,
                    0.0,
                    &zero,
                    &zero,
                    mask_type,
                    false,
                    scale,
                    None,
                    call.window.0,
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
                    call.max_q,
                    call.max_k,
                    0.0,
                    call.causal,
                    scale,
                )?;
                Ok((dq, fold_kv(&dk, hkv)?, fold_kv(&dv, hkv)?))
            }
        }
    }
}

/// CPU emulation of a varlen kernel: each packed sequence is attended densely with the mask the kernel
/// would apply ([`PackedCall::sequence_slice`]). Lets the packing, reversal and scatter be tested
/// without a GPU.
pub struct EmulatedVarlenKernel;

fn seq_tensors(t: &Tensor, lo: i32, hi: i32) -> Result<Tensor, KernelError> {
    // [T, H, D] rows lo..hi → [1, H, L, D]
    Ok(t.f_narrow(0, lo as i64, (hi - lo) as i64)?.f_transpose(0, 1)?.f_unsqueeze(0)?)
}

impl VarlenKernel for EmulatedVarlenKernel {
    fn forward(&self, call: &PackedCall, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor, Vec<Tensor>), KernelError> {
        let (mut outs, mut lses) = (vec![], vec![]);
        for n in 0..call.sequences() {
            let m = call.sequence_mask(n)?;
            let (qs, ks, vs) = (
                seq_tensors(q, call.cu_q[n], call.cu_q[n + 1])?,
                seq_tensors(k, call.cu_k[n], call.cu_k[n + 1])?,
                seq_tensors(v, call.cu_k[n], call.cu_k[n + 1])?,
            );
            let (o, l) = dense::forward(&qs, &ks, &vs, &m, scale)?;
            outs.push(o.f_squeeze_dim(0)?.f_transpose(0, 1)?);
            lses.push(l.f_squeeze_dim(0)?.f_to_kind(Kind::Float)?);
        }
        Ok((Tensor::f_cat(&outs, 0)?, Tensor::f_cat(&lses, 1)?, vec![]))
    }

    fn backward(
        &self,
        call: &PackedCall,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
        _state: &[Tensor],
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        let (mut dqs, mut dks, mut dvs) = (vec![], vec![], vec![]);
        for n in 0..call.sequences() {
            let m = call.sequence_mask(n)?;
            let (a, b, c, e) = (call.cu_q[n], call.cu_q[n + 1], call.cu_k[n], call.cu_k[n + 1]);
            let l = lse.f_narrow(1, a as i64, (b - a) as i64)?.f_unsqueeze(0)?;
            let (dq, dk, dv) = dense::backward(
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::mask_all_kinds;
    use super::super::groups::group_slices;
    use super::*;

    #[test]
    fn grouped_varlen_emulation_matches_the_dense_path() {
        let m = mask_all_kinds();
        let groups = group_slices(&m);
        let o = (Kind::Double, Device::Cpu);
        let (q, k, v) = crate::sys::rng::with_seed(5, || (Tensor::randn([2, 4, 40, 8], o), Tensor::randn([2, 2, 44, 8], o), Tensor::randn([2, 2, 44, 8], o)));
        let (ro, rl) = dense::forward(&q, &k, &v, &m, 0.3).unwrap();
        let (go, gl, launches) = grouped_forward(&EmulatedVarlenKernel, &groups, &q, &k, &v, &m, 0.3).unwrap();
        assert_eq!(launches, groups.len());
        assert!((&go - &ro).abs().max().double_value(&[]) < 1e-5);
        let fin = rl.isfinite();
        assert!(gl.isfinite().eq_tensor(&fin).all().int64_value(&[]) == 1);
        assert!((gl.masked_select(&fin) - rl.to_kind(Kind::Float).masked_select(&fin)).abs().max().double_value(&[]) < 1e-5);
        let dout = crate::sys::rng::randn([2, 4, 40, 8], o).unwrap();
        let (dq, dk, dv) = dense::backward(&q, &k, &v, &ro, &rl, &dout, &m, 0.3).unwrap();
        let (gq, gk, gv) = grouped_backward(&EmulatedVarlenKernel, &groups, &q, &k, &v, &ro, &rl, &dout, &m, 0.3).unwrap();
        for (a, b) in [(dq, gq), (dk, gk), (dv, gv)] {
            assert!((a - b).abs().max().double_value(&[]) < 1e-4);
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
        let groups = group_slices(&m);
        let o = (Kind::Float, Device::Cpu);
        let (q, k, v) = (
            crate::sys::rng::randn([2, 4, 40, 64], o).unwrap(),
            crate::sys::rng::randn([2, 2, 44, 64], o).unwrap(),
            crate::sys::rng::randn([2, 2, 44, 64], o).unwrap(),
        );
        let dout = crate::sys::rng::randn([2, 4, 40, 64], o).unwrap();
        let r = |t: &Tensor| t.to_kind(Kind::BFloat16).to_kind(Kind::Float);
        let (ro, rl) = dense::forward(&r(&q), &r(&k), &r(&v), &m, 0.125).unwrap();
        let (rdq, rdk, rdv) = dense::backward(&r(&q), &r(&k), &r(&v), &ro, &rl, &r(&dout), &m, 0.125).unwrap();
        let g = |t: &Tensor| t.to_kind(Kind::BFloat16).to_device(Device::Cuda(0));
        let diff = |a: &Tensor, b: &Tensor| (a.to_device(Device::Cpu).to_kind(Kind::Float) - b).abs().max().double_value(&[]);
        for which in [CudaVarlen::Flash, CudaVarlen::Efficient, CudaVarlen::Cudnn] {
            let kern = CudaVarlenKernel(which);
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
