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

/// Runs one packed varlen forward / backward. q `[Tq, Hq, D]`, k/v `[Tk, Hkv, D]`; lse `[Hq, Tq]` f32
/// in the merge convention (a row that attends nothing has lse = −∞, see [`lse_from_kernel`]).
pub trait VarlenKernel {
    /// Returns (out `[Tq, Hq, D]`, lse `[Hq, Tq]` f32, state for the backward).
    fn forward(&self, call: &DeviceCall, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor, Vec<Tensor>), KernelError>;
    /// Gradients with the given (final) out and lse of the packed rows.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        call: &DeviceCall,
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

/// FlashAttention / memory-efficient kernels pad the LSE of each sequence to a multiple of this many
/// rows (`Kernel::kAlignLSE` in torch 2.11 aten/src/ATen/native/transformers/cuda/mem_eff_attention/
/// kernel_forward.h).
pub const EFFICIENT_LSE_ALIGN: i64 = 32;

/// A [`PackedCall`] with everything a kernel call needs on the device, built ONCE (in a backend's
/// `prepare`, outside every timed region): the cumulative offsets (int32), the gather indices (int64),
/// and the row index of the memory-efficient kernel's padded LSE. A timed call then copies nothing
/// from the host.
pub struct DeviceCall {
    pub call: PackedCall,
    pub cu_q: Tensor,
    pub cu_k: Tensor,
    pub q_idx: Tensor,
    pub k_idx: Tensor,
    /// For each packed query row t (sequence s, position p in it): `s · P + p`, P = [`Self::lse_pad`].
    pub lse_rows: Tensor,
}

impl DeviceCall {
    pub fn new(call: PackedCall, dev: Device) -> Result<DeviceCall, KernelError> {
        let pad = efficient_lse_pad(call.max_q);
        let mut rows = Vec::with_capacity(call.q_idx.len());
        for s in 0..call.sequences() {
            let len = (call.cu_q[s + 1] - call.cu_q[s]) as i64;
            rows.extend((0..len).map(|p| s as i64 * pad + p));
        }
        Ok(DeviceCall {
            cu_q: Tensor::f_from_slice(&call.cu_q)?.f_to_device(dev)?,
            cu_k: Tensor::f_from_slice(&call.cu_k)?.f_to_device(dev)?,
            q_idx: Tensor::f_from_slice(&call.q_idx)?.f_to_device(dev)?,
            k_idx: Tensor::f_from_slice(&call.k_idx)?.f_to_device(dev)?,
            lse_rows: Tensor::f_from_slice(&rows)?.f_to_device(dev)?,
            call,
        })
    }

    /// Padded LSE length per sequence of the memory-efficient kernel: ceil(max_q / 32) · 32.
    pub fn lse_pad(&self) -> i64 {
        efficient_lse_pad(self.call.max_q)
    }
}

fn efficient_lse_pad(max_q: i64) -> i64 {
    (max_q + EFFICIENT_LSE_ALIGN - 1) / EFFICIENT_LSE_ALIGN * EFFICIENT_LSE_ALIGN
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

/// Builds the device side of each call (see [`DeviceCall`]).
pub fn device_calls(calls: Vec<PackedCall>, dev: Device) -> Result<Vec<DeviceCall>, KernelError> {
    calls.into_iter().map(|c| DeviceCall::new(c, dev)).collect()
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
    let calls = device_calls(calls_for_groups(groups, mask, q.size()[0] as usize), q.device())?;
    packed_forward(kern, &calls, q, k, v, scale)
}

/// Forward with one kernel call per packed call, merged with LSE (see [`grouped_forward`]): each
/// call's rows are merged in place into the f32 result (in the packed `[T, H, D]` layout, the LSE as a
/// `[T, H]` view of `[H, T]`).
pub fn packed_forward(
    kern: &dyn VarlenKernel,
    calls: &[DeviceCall],
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
        let (qi, ki) = (&call.q_idx, &call.k_idx);
        let (qp, kp, vp) = (qf.f_index_select(0, qi)?, kf.f_index_select(0, ki)?, vf.f_index_select(0, ki)?);
        let (op, lp, _) = kern.forward(call, &qp, &kp, &vp, scale)?;
        // The call's rows of the running result (gathered), merged, and written back.
        let mut rows_out = out.f_index_select(0, qi)?;
        let mut rows_lse = lse.f_index_select(1, qi)?.f_transpose(0, 1)?.f_contiguous()?; // [Tq, H]
        merge_into(&mut rows_out, &mut rows_lse, &op, &lp.f_to_kind(Kind::Float)?.f_transpose(0, 1)?)?;
        let _ = out.f_index_copy_(0, qi, &rows_out)?;
        let _ = lse.f_index_copy_(1, qi, &rows_lse.f_transpose(0, 1)?)?;
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
    let calls = device_calls(calls_for_groups(groups, mask, q.size()[0] as usize), q.device())?;
    packed_backward(kern, &calls, q, k, v, out, lse, dout, scale)
}

/// Backward with one kernel call per packed call, given the final out / lse (see [`grouped_backward`]).
#[allow(clippy::too_many_arguments)]
pub fn packed_backward(
    kern: &dyn VarlenKernel,
    calls: &[DeviceCall],
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
        let (qi, ki) = (&call.q_idx, &call.k_idx);
        let (qp, kp, vp) = (qf.f_index_select(0, qi)?, kf.f_index_select(0, ki)?, vf.f_index_select(0, ki)?);
        let (op, dop) = (of.f_index_select(0, qi)?, dof.f_index_select(0, qi)?);
        let lp = lf.f_index_select(1, qi)?.f_contiguous()?;
        // Dropout is 0, so the backward needs no forward state (rng / philox): none is passed.
        let (gq, gk, gv) = kern.backward(call, &qp, &kp, &vp, &op, &lp, &dop, &[], scale)?;
        let _ = dq.f_index_add_(0, qi, &gq.f_to_kind(Kind::Float)?)?;
        let _ = dk.f_index_add_(0, ki, &gk.f_to_kind(Kind::Float)?)?;
        let _ = dv.f_index_add_(0, ki, &gv.f_to_kind(Kind::Float)?)?;
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

/// The merge convention for a row that attends nothing is lse = −∞ (`exp(lse)` = 0 weight), but
/// FlashAttention-2 writes +∞ there (`lse = (sum == 0.f || sum != sum) ? INFINITY : …` in
/// flash-attention csrc/flash_attn/src/softmax.h `normalize_softmax_lse`, and `gLSE(m) = INFINITY` for
/// early-exit rows in flash_fwd_kernel.h; vendored as-is in torch 2.11
/// aten/src/ATen/native/transformers/cuda/flash_attn/). Merging a +∞ row gives NaN, so every kernel's
/// LSE goes through this at the boundary: +∞ → −∞, everything else unchanged.
pub fn lse_from_kernel(lse: &Tensor) -> Result<Tensor, KernelError> {
    let l = lse.f_to_kind(Kind::Float)?;
    Ok(l.f_masked_fill(&l.f_isposinf()?, f64::NEG_INFINITY)?)
}

/// The inverse at the backward boundary: the kernels recompute P = exp(S·scale − lse), and with S = −∞
/// on masked entries an lse of −∞ gives exp(NaN) in kernels that do not special-case it; +∞ (what the
/// kernels themselves write for such rows) gives P = 0 exactly. −∞ → +∞.
pub fn lse_to_kernel(lse: &Tensor) -> Result<Tensor, KernelError> {
    let l = lse.f_to_kind(Kind::Float)?;
    Ok(l.f_masked_fill(&l.f_isneginf()?, f64::INFINITY)?.f_contiguous()?)
}

/// FlashAttention-2 varlen LSE `[H, T]` (torch 2.11 aten/src/ATen/native/transformers/cuda/flash_attn/
/// flash_api.cpp `mha_varlen_fwd`: `softmax_lse = at::empty({num_heads, total_q}, kFloat)`) → `[H, T]`.
pub fn flash_lse_to_ht(lse: &Tensor, h: i64, t: i64) -> Result<Tensor, KernelError> {
    expect_shape("flash-varlen", lse, &[h, t])?;
    lse_from_kernel(&lse.f_contiguous()?)
}

/// Memory-efficient varlen LSE → `[H, T]`. With `cu_seqlens` the kernel returns one padded row block per
/// sequence: `[n_seq, H, ceil(max_q / 32) · 32]`, query p of sequence s at `[s, h, p]` (torch 2.11
/// aten/src/ATen/native/transformers/cuda/attention.cu `_efficient_attention_forward`:
/// `logsumexp = at::empty({seqstart_q.has_value() ? seqstart_q->size(0) - 1 : B, num_heads,
/// ceil_div(max_seqlen_q, kAlignLSE) * kAlignLSE})`). Gathered with the call's precomputed `lse_rows`.
pub fn efficient_lse_to_ht(lse: &Tensor, call: &DeviceCall, h: i64) -> Result<Tensor, KernelError> {
    let (n, pad) = (call.call.sequences() as i64, call.lse_pad());
    expect_shape("efficient-varlen", lse, &[n, h, pad])?;
    let rows = lse.f_permute([1, 0, 2])?.f_reshape([h, n * pad])?;
    lse_from_kernel(&rows.f_index_select(1, &call.lse_rows)?)
}

/// `[H, T]` → the memory-efficient backward's `[n_seq, H, P]` layout (the forward's, see
/// [`efficient_lse_to_ht`]; the backward reads it with the forward's strides, torch 2.11
/// attention_backward.cu `_efficient_attention_backward`: `p.lse_strideB = logsumexp.stride(0)`). Pad
/// rows are +∞ (never read for real queries).
pub fn efficient_lse_from_ht(lse: &Tensor, call: &DeviceCall) -> Result<Tensor, KernelError> {
    let (n, pad, h) = (call.call.sequences() as i64, call.lse_pad(), lse.size()[0]);
    let full = Tensor::f_full([h, n * pad], f64::INFINITY, (Kind::Float, lse.device()))?;
    let full = full.f_index_copy(1, &call.lse_rows, &lse_to_kernel(lse)?)?;
    Ok(full.f_reshape([h, n, pad])?.f_permute([1, 0, 2])?.f_contiguous()?)
}

/// cuDNN ragged softmax stats `[T, H, 1]` (torch 2.11 aten/src/ATen/native/cudnn/MHA.cpp
/// `run_cudnn_SDP_fprop_nestedtensor`: `softmaxstats = at::empty({q.size(0), h_q, 1}, kFloat)`, ragged
/// offset `cum_seqlen_q · h_q`) → `[H, T]`.
pub fn cudnn_lse_to_ht(lse: &Tensor, h: i64, t: i64) -> Result<Tensor, KernelError> {
    expect_shape("cudnn-varlen", lse, &[t, h, 1])?;
    lse_from_kernel(&lse.f_reshape([t, h])?.f_transpose(0, 1)?.f_contiguous()?)
}

/// `[H, T]` → cuDNN's ragged `[T, H, 1]` stats, which its nested backward reads with the forward's
/// layout (MHA.cpp `build_graph_backward_nestedtensor`: Stats dim `{b, h_q, s_q, 1}`, stride
/// `{h_q·s_q, 1, h_q, 1}`, ragged offset `cum_seqlen_q · h_q`).
pub fn cudnn_stats_from_ht(lse: &Tensor) -> Result<Tensor, KernelError> {
    Ok(lse_to_kernel(lse)?.f_transpose(0, 1)?.f_contiguous()?.f_unsqueeze(-1)?)
}

fn expect_shape(kernel: &str, t: &Tensor, want: &[i64]) -> Result<(), KernelError> {
    if t.size() != want {
        return Err(KernelError::Torch(format!("{kernel}: unexpected LSE shape {:?} (expected {want:?})", t.size())));
    }
    Ok(())
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

impl CudaVarlen {
    /// Whether the kernel needs K/V repeated to the query heads (no GQA in this path).
    pub fn needs_repeated_kv(self) -> bool {
        self != CudaVarlen::Flash
    }
}

/// The `attn_bias` argument of `_cudnn_attention_backward` when there is none: an UNDEFINED tensor.
/// torch 2.11 attention_backward.cu treats any *defined* tensor as a bias (`if (attn_bias.defined())
/// attn_bias_ = attn_bias;`) and expands it to 4-D, which throws for an empty 1-D tensor.
pub fn cudnn_no_bias() -> Tensor {
    Tensor::new()
}

impl VarlenKernel for CudaVarlenKernel {
    fn forward(&self, call: &DeviceCall, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor, Vec<Tensor>), KernelError> {
        let (cq, ck, c) = (&call.cu_q, &call.cu_k, &call.call);
        let (t, h) = (q.size()[0], q.size()[1]);
        match self.0 {
            CudaVarlen::Flash => {
                let r = crate::sys::varlen::flash_varlen_fwd(q, k, v, cq, ck, c.max_q, c.max_k, scale, c.causal, c.window)?;
                Ok((r.out, flash_lse_to_ht(&r.lse, h, t)?, vec![r.rng_state[0].shallow_clone(), r.rng_state[1].shallow_clone()]))
            }
            CudaVarlen::Efficient => {
                let (k, v) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let mask_type = if c.causal { 2 } else { 0 };
                let r = crate::sys::varlen::efficient_varlen_fwd(
                    &q.f_unsqueeze(0)?,
                    &k.f_unsqueeze(0)?,
                    &v.f_unsqueeze(0)?,
                    cq,
                    ck,
                    c.max_q,
                    c.max_k,
                    scale,
                    mask_type,
                    c.window.0,
                )?;
                Ok((r.out.f_squeeze_dim(0)?, efficient_lse_to_ht(&r.lse, call, h)?, vec![r.rng_state[0].shallow_clone(), r.rng_state[1].shallow_clone()]))
            }
            CudaVarlen::Cudnn => {
                let (k, v) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let r = crate::sys::varlen::cudnn_varlen_fwd(q, &k, &v, cq, ck, c.max_q, c.max_k, scale, c.causal)?;
                Ok((r.out, cudnn_lse_to_ht(&r.lse, h, t)?, vec![r.rng_state[0].shallow_clone(), r.rng_state[1].shallow_clone()]))
            }
        }
    }

    fn backward(
        &self,
        call: &DeviceCall,
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
        let (cq, ck, c) = (&call.cu_q, &call.cu_k, &call.call);
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
                    &lse_to_kernel(lse)?,
                    cq,
                    ck,
                    c.max_q,
                    c.max_k,
                    0.0,
                    c.causal,
                    &zero,
                    &zero,
                    scale,
                    c.window.0,
                    c.window.1,
                )?;
                Ok((dq, dk, dv))
            }
            CudaVarlen::Efficient => {
                let (kr, vr) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let mask_type = if c.causal { 2 } else { 0 };
                let (dq, dk, dv, _) = Tensor::f_internal_efficient_attention_backward(
                    &dout.f_unsqueeze(0)?,
                    &q.f_unsqueeze(0)?,
                    &kr.f_unsqueeze(0)?,
                    &vr.f_unsqueeze(0)?,
                    None::<&Tensor>,
                    &out.f_unsqueeze(0)?,
                    Some(cq),
                    Some(ck),
                    c.max_q,
                    c.max_k,
                    &efficient_lse_from_ht(lse, call)?,
                    0.0,
                    &zero,
                    &zero,
                    mask_type,
                    false,
                    scale,
                    None,
                    c.window.0,
                    false,
                )?;
                Ok((dq.f_squeeze_dim(0)?, fold_kv(&dk.f_squeeze_dim(0)?, hkv)?, fold_kv(&dv.f_squeeze_dim(0)?, hkv)?))
            }
            CudaVarlen::Cudnn => {
                let (kr, vr) = (repeat_kv(k, h)?, repeat_kv(v, h)?);
                let (dq, dk, dv) = Tensor::f_internal_cudnn_attention_backward(
                    &dout,
                    q,
                    &kr,
                    &vr,
                    &out,
                    &cudnn_stats_from_ht(lse)?,
                    &zero,
                    &zero,
                    &cudnn_no_bias(),
                    cq,
                    ck,
                    c.max_q,
                    c.max_k,
                    0.0,
                    c.causal,
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
    fn forward(&self, call: &DeviceCall, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor, Vec<Tensor>), KernelError> {
        let call = &call.call;
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
        call: &DeviceCall,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
        _state: &[Tensor],
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        let call = &call.call;
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

    /// A call over three documents of lengths 5, 1, 3 (max_q 5), batch 1, on the CPU.
    fn three_doc_call() -> DeviceCall {
        let m = crate::attn::fixtures::zoo("causal_document", 9, &[("doc_lens", "5,1,3")]);
        let (call, _) = crate::backend::varlen::single_call(&m, CudaVarlen::Efficient, 1).unwrap();
        DeviceCall::new(call, Device::Cpu).unwrap()
    }

    /// An `[H, T]` LSE with distinct values, f32.
    fn ht(h: i64, t: i64) -> Tensor {
        Tensor::arange(h * t, (Kind::Float, Device::Cpu)).reshape([h, t]) / 7.0
    }

    #[test]
    fn efficient_lse_per_sequence_padded_layout_is_read_and_written() {
        // The memory-efficient kernel with cu_seqlens returns `[n_seq, H, ceil32(max_q)]` (torch 2.11
        // aten/src/ATen/native/transformers/cuda/attention.cu `_efficient_attention_forward`), query p
        // of sequence s at [s, h, p]; the tail of each row block is padding. Built element by element.
        let call = three_doc_call();
        let (h, t) = (3, 9);
        assert_eq!(call.call.cu_q, vec![0, 5, 6, 9]);
        assert_eq!(call.lse_pad(), 32);
        let want = ht(h, t);
        let raw = Tensor::full([3, h, 32], 1234.5, (Kind::Float, Device::Cpu));
        for s in 0..3 {
            for p in call.call.cu_q[s]..call.call.cu_q[s + 1] {
                for hh in 0..h {
                    let _ = raw.get(s as i64).get(hh).get((p - call.call.cu_q[s]) as i64).fill_(want.double_value(&[hh, p as i64]));
                }
            }
        }
        let got = efficient_lse_to_ht(&raw, &call, h).unwrap();
        assert_eq!(got.size(), vec![h, t]);
        assert_eq!((&got - &want).abs().max().double_value(&[]), 0.0);
        // Back to the kernel's layout for the backward: same values at the real rows, +inf padding.
        let back = efficient_lse_from_ht(&want, &call).unwrap();
        assert_eq!(back.size(), vec![3, h, 32]);
        let real = raw.ne(1234.5);
        assert_eq!((back.masked_select(&real) - raw.masked_select(&real)).abs().max().double_value(&[]), 0.0);
        assert!(back.masked_select(&real.logical_not()).isposinf().all().int64_value(&[]) == 1);
        // A `[1, H, T]` tensor (what the old code accepted) is an error, not a silent misread.
        assert!(efficient_lse_to_ht(&want.unsqueeze(0), &call, h).is_err());
    }

    #[test]
    fn cudnn_ragged_stats_are_token_major() {
        // cuDNN's nested forward returns stats `[T, H, 1]` (torch 2.11 aten/src/ATen/native/cudnn/MHA.cpp
        // `run_cudnn_SDP_fprop_nestedtensor`), and its nested backward reads the same layout; the old
        // code handed the backward our `[H, T]`. Built element by element.
        let (h, t) = (3, 9);
        let want = ht(h, t);
        let raw = Tensor::zeros([t, h, 1], (Kind::Float, Device::Cpu));
        for tt in 0..t {
            for hh in 0..h {
                let _ = raw.get(tt).get(hh).get(0).fill_(want.double_value(&[hh, tt]));
            }
        }
        let got = cudnn_lse_to_ht(&raw, h, t).unwrap();
        assert_eq!((&got - &want).abs().max().double_value(&[]), 0.0);
        let stats = cudnn_stats_from_ht(&want).unwrap();
        assert_eq!(stats.size(), vec![t, h, 1]);
        assert_eq!(stats.stride(), vec![h, 1, 1], "contiguous [T, H, 1]");
        assert_eq!((&stats - &raw).abs().max().double_value(&[]), 0.0);
        // An `[H, T]` tensor is rejected by the forward reader even when it has the right numel.
        assert!(cudnn_lse_to_ht(&want, h, t).is_err());
    }

    #[test]
    fn cudnn_backward_gets_no_bias() {
        // attention_backward.cu (torch 2.11): `if (attn_bias.defined()) attn_bias_ = attn_bias;` — a
        // defined empty tensor would be taken as a bias and fail to expand to 4-D.
        assert!(!cudnn_no_bias().defined());
    }

    #[test]
    fn flash_plus_inf_rows_merge_as_empty_rows_not_nan() {
        // FlashAttention-2 writes lse = +inf for a row that attends nothing (`[H, T]` layout, torch
        // 2.11 cuda/flash_attn/flash_api.cpp `mha_varlen_fwd`: `at::empty({num_heads, total_q})`).
        let (h, t) = (2, 4);
        let raw = ht(h, t);
        let _ = raw.get(1).get(2).fill_(f64::INFINITY);
        let part_out = Tensor::zeros([t, h, 8], (Kind::Float, Device::Cpu));
        let merge = |lp: &Tensor| {
            let mut out = Tensor::ones([t, h, 8], (Kind::Float, Device::Cpu));
            let mut lse = Tensor::full([t, h], 0.5, (Kind::Float, Device::Cpu));
            merge_into(&mut out, &mut lse, &part_out, &lp.transpose(0, 1)).unwrap();
            (out, lse)
        };
        // As the kernel writes it, the row poisons the merge (this is what the old code did).
        let (bad, _) = merge(&raw);
        assert!(bad.isnan().any().int64_value(&[]) == 1);
        // Through the boundary: an empty partial, the running result unchanged for that row.
        let lp = flash_lse_to_ht(&raw, h, t).unwrap();
        assert!(lp.double_value(&[1, 2]).is_infinite() && lp.double_value(&[1, 2]) < 0.0);
        let (out, lse) = merge(&lp);
        assert!(out.isnan().any().int64_value(&[]) == 0);
        assert_eq!(out.double_value(&[2, 1, 0]), 1.0);
        assert_eq!(lse.double_value(&[2, 1]), 0.5);
        // And back for a backward: −∞ → +∞ (P = exp(S − lse) = 0 in every kernel), finite unchanged.
        let k = lse_to_kernel(&lp).unwrap();
        assert!(k.double_value(&[1, 2]) == f64::INFINITY);
        assert_eq!(k.double_value(&[0, 1]), raw.double_value(&[0, 1]));
    }

    /// On the GPU machine (`launch/gpu-check` runs the ignored `cuda_` tests): each real varlen
    /// kernel through the shim — FlashAttention-2, memory-efficient, cuDNN — agrees with the CPU dense
    /// computation, forward and backward, on the masks it takes: every slice kind (several launches,
    /// flash and efficient), and a causal document mask with a 1-token document (one launch, all three;
    /// cuDNN only takes square causal slices, see `backend::varlen::single_call`). This checks what only
    /// a GPU shows: the LSE layouts ([H,T] / [n_seq,H,ceil32] / [T,H,1]), +inf for empty rows, the
    /// causal alignment, the window, and the backward's LSE and bias conventions. bf16 inputs, bf16
    /// tolerances. Failures are collected per kernel and mask, so one kernel's failure (or panic) does
    /// not hide another's.
    #[test]
    #[ignore = "needs a CUDA device; run by launch/gpu-check"]
    fn cuda_varlen_kernels_match_cpu() {
        assert!(crate::sys::cuda_available(), "this test needs a CUDA device");
        let docs = crate::attn::fixtures::zoo("causal_document", 44, &[("doc_lens", "20,1,23")]);
        let cases: Vec<(CudaVarlen, &str, Mask)> = vec![
            (CudaVarlen::Flash, "all kinds", mask_all_kinds()),
            // Not "all kinds": the harness never hands inverse- or bi-causal slices to the
            // memory-efficient kernel (backend/varlen.rs takes only full and causal groups for it), and
            // on an H200 (2026-12-04) this library-level path did fail on them (out off by 2.5).
            (CudaVarlen::Efficient, "full and causal kinds", crate::attn::fixtures::mask_full_and_causal_kinds()),
            (CudaVarlen::Flash, "documents", docs.clone()),
            (CudaVarlen::Efficient, "documents", docs.clone()),
            (CudaVarlen::Cudnn, "documents", docs),
        ];
        let mut failures = vec![];
        for (which, name, m) in cases {
            let r = std::panic::catch_unwind(|| check_one_cuda_kernel(which, &m));
            match r {
                Ok(Ok(())) => eprintln!("{which:?} on {name}: ok"),
                Ok(Err(e)) => failures.push(format!("{which:?} on {name}: {e}")),
                Err(p) => failures.push(format!(
                    "{which:?} on {name}: panic {:?}",
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                )),
            }
        }
        assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
    }

    fn check_one_cuda_kernel(which: CudaVarlen, m: &Mask) -> Result<(), String> {
        let groups = group_slices(m);
        let o = (Kind::Float, Device::Cpu);
        let (sq, sk) = (m.seqlen_q as i64, m.seqlen_k as i64);
        let (q, k, v, dout) = crate::sys::rng::with_seed(11, || {
            (Tensor::randn([2, 4, sq, 64], o), Tensor::randn([2, 2, sk, 64], o), Tensor::randn([2, 2, sk, 64], o), Tensor::randn([2, 4, sq, 64], o))
        });
        let r = |t: &Tensor| t.to_kind(Kind::BFloat16).to_kind(Kind::Float);
        let (ro, rl) = dense::forward(&r(&q), &r(&k), &r(&v), m, 0.125).map_err(|e| e.to_string())?;
        let (rdq, rdk, rdv) = dense::backward(&r(&q), &r(&k), &r(&v), &ro, &rl, &r(&dout), m, 0.125).map_err(|e| e.to_string())?;
        let g = |t: &Tensor| t.to_kind(Kind::BFloat16).to_device(Device::Cuda(0));
        let diff = |a: &Tensor, b: &Tensor| (a.to_device(Device::Cpu).to_kind(Kind::Float) - b).abs().max().double_value(&[]);
        let kern = CudaVarlenKernel(which);
        let (go, gl, _) = grouped_forward(&kern, &groups, &g(&q), &g(&k), &g(&v), m, 0.125).map_err(|e| format!("forward: {e}"))?;
        let mut errs = vec![];
        if diff(&go, &ro) >= 3e-2 || go.isnan().any().int64_value(&[]) == 1 {
            errs.push(format!("out differs from CPU by {}", diff(&go, &ro)));
        }
        let gl = gl.to_device(Device::Cpu).to_kind(Kind::Float);
        let fin = rl.isfinite();
        if gl.isfinite().ne_tensor(&fin).any().int64_value(&[]) == 1 {
            errs.push("LSE finiteness differs from CPU (empty rows must be -inf)".into());
        } else {
            let lse_err = (gl.masked_select(&fin) - rl.masked_select(&fin)).abs().max().double_value(&[]);
            if lse_err >= 3e-2 {
                errs.push(format!("LSE differs from CPU by {lse_err} (layout?)"));
            }
        }
        match grouped_backward(&kern, &groups, &g(&q), &g(&k), &g(&v), &go, &gl.to_device(Device::Cuda(0)), &g(&dout), m, 0.125) {
            Ok((dq, dk, dv)) => {
                for (name, a, b) in [("dq", &dq, &rdq), ("dk", &dk, &rdk), ("dv", &dv, &rdv)] {
                    if diff(a, b) >= 6e-2 || a.isnan().any().int64_value(&[]) == 1 {
                        errs.push(format!("{name} differs from CPU by {}", diff(a, b)));
                    }
                }
            }
            Err(e) => errs.push(format!("backward: {e}")),
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}
