//! The `sliced` kernel: exact attention over an arbitrary range mask, slice by slice (the FFA /
//! MagiAttention idea with stock kernels). On CUDA with 16-bit inputs: one FlashAttention-2 varlen
//! launch per slice group ([`super::groups`]), or a single call when the whole mask is one native
//! window (documents, sliding windows); FlashAttention-2 aligns causal bottom-right like our model,
//! inv_causal is causal on reversed rows and keys, bi_causal is a (Lk − Lq, 0) window. Everywhere
//! else (CPU; fp32/fp64 on CUDA, which FA2 does not take): the dense path ([`super::dense`]). Because
//! slices never share an attended (query, key) pair, merging partial results over them is exact.

use tch::{Kind, Tensor};

use super::groups::packed_calls;
use super::varlen::{device_calls, packed_backward, packed_forward, CudaVarlen, CudaVarlenKernel};
use super::{check_inputs, dense, KernelError, MaskedAttention};
use crate::mask::Mask;

/// CUDA with a 16-bit dtype: the FlashAttention-2 varlen kernel. Everything else uses the dense path.
pub fn uses_flash(q: &Tensor) -> bool {
    q.device().is_cuda() && matches!(q.kind(), Kind::BFloat16 | Kind::Half)
}

/// Kernel launches per forward call: one per packed call on the flash path, one per piece on the
/// dense path (a fused kernel call or a dense block; reported in the row's note).
pub fn launches(q: &Tensor, mask: &Mask) -> usize {
    if uses_flash(q) {
        packed_calls(mask, 1, true).len()
    } else {
        dense::pieces(q, mask, q.size()[0] * q.size()[1]).len()
    }
}

/// Exact attention over an arbitrary range mask. Returns (out `[B, Hq, Sq, D]` in q's dtype, lse
/// `[B, Hq, Sq]` f32 — f64 when q is f64).
pub fn sliced_forward(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> Result<(Tensor, Tensor), KernelError> {
    check_inputs(q, k, v, mask)?;
    if uses_flash(q) {
        let calls = device_calls(packed_calls(mask, q.size()[0] as usize, true), q.device())?;
        let (o, l, _) = packed_forward(&CudaVarlenKernel(CudaVarlen::Flash), &calls, q, k, v, scale)?;
        return Ok((o, l));
    }
    dense::forward(q, k, v, mask, scale)
}

/// Gradients of this mask's contribution given the FINAL (possibly merged over several blocks) out
/// and lse of the rows and dout: (dq `[B, Hq, Sq, D]`, dk `[B, Hkv, Sk, D]`, dv `[B, Hkv, Sk, D]`) in
/// the dtypes of q, k, v.
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
) -> Result<(Tensor, Tensor, Tensor), KernelError> {
    check_inputs(q, k, v, mask)?;
    if uses_flash(q) {
        let calls = device_calls(packed_calls(mask, q.size()[0] as usize, true), q.device())?;
        return packed_backward(&CudaVarlenKernel(CudaVarlen::Flash), &calls, q, k, v, out, lse, dout, scale);
    }
    dense::backward(q, k, v, out, lse, dout, mask, scale)
}

/// The `sliced` kernel as a [`MaskedAttention`].
pub struct Sliced;
pub static SLICED: Sliced = Sliced;

impl MaskedAttention for Sliced {
    fn name(&self) -> &'static str {
        "sliced"
    }
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> Result<(Tensor, Tensor), KernelError> {
        sliced_forward(q, k, v, mask, scale)
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
        sliced_backward(q, k, v, out, lse, dout, mask, scale)
    }
    fn gpu_launches(&self, mask: &Mask) -> usize {
        packed_calls(mask, 1, true).len().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{dense_ref, max_diff, rand_qkv, random_mask};
    use super::super::merge::merge_partials;
    use super::*;
    use tch::Device;

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
    fn backward_matches_autograd_f64_on_random_masks() {
        for seed in 0..8 {
            let (sq, sk) = (33 + seed as usize, 41);
            let m = random_mask(sq, sk, 100 + seed);
            let (q, k, v) = rand_qkv(1, 4, 2, sq as i64, sk as i64, 8, seed as i64);
            let (q, k, v) = (q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true));
            let (ro, _) = dense_ref(&q, &k, &v, &m, 0.35);
            let dout = crate::sys::rng::randn(ro.size(), (Kind::Double, Device::Cpu)).unwrap();
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
        let dout = crate::sys::rng::randn([1, 2, 40, 8], (Kind::Double, Device::Cpu)).unwrap();
        let (dq, dk, dv) = sliced_backward(&q, &k, &v, &o, &l, &dout, &m, 0.3).unwrap();
        let (m1, m2) = (m.sub_block(0..40, 0..20), m.sub_block(0..40, 20..48));
        let (k1, k2) = (k.narrow(2, 0, 20), k.narrow(2, 20, 28));
        let (v1, v2) = (v.narrow(2, 0, 20), v.narrow(2, 20, 28));
        let (o1, l1) = sliced_forward(&q, &k1, &v1, &m1, 0.3).unwrap();
        let (o2, l2) = sliced_forward(&q, &k2, &v2, &m2, 0.3).unwrap();
        let (om, lm) = merge_partials(&o1, &l1, &o2, &l2).unwrap();
        assert!(max_diff(&om, &o) < 1e-12);
        let (dq1, dk1, dv1) = sliced_backward(&q, &k1, &v1, &om, &lm, &dout, &m1, 0.3).unwrap();
        let (dq2, dk2, dv2) = sliced_backward(&q, &k2, &v2, &om, &lm, &dout, &m2, 0.3).unwrap();
        assert!(max_diff(&(dq1 + dq2), &dq) < 1e-10);
        assert!(max_diff(&Tensor::cat(&[dk1, dk2], 2), &dk) < 1e-10);
        assert!(max_diff(&Tensor::cat(&[dv1, dv2], 2), &dv) < 1e-10);
    }
}
