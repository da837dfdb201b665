//! The `*_varlen` backends (`flash-varlen`, `efficient-varlen`, `cudnn-varlen`): ONE varlen kernel
//! call over the whole mask, over the attention core's packing ([`crate::attn::groups`],
//! [`crate::attn::varlen`]).

use tch::Tensor;

use crate::attn::groups::{group_slices, window_form, PackedCall};
use crate::attn::varlen::{flat_rows, unflat_rows, CudaVarlen, CudaVarlenKernel, DeviceCall, VarlenKernel};
use crate::attn::KernelError;
use crate::mask::{Mask, SliceKind};

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
    /// Why the backward is not offered (evidence, in the backend's own file), if it is not.
    pub backward_off: Option<&'static str>,
}

/// How a mask maps onto one varlen call, or why it cannot.
pub fn single_call(mask: &Mask, kernel: CudaVarlen, batch: usize) -> Result<(PackedCall, String), String> {
    let groups = group_slices(mask);
    if groups.len() == 1 {
        let g = &groups[0];
        match (g.kind, kernel) {
            (SliceKind::Causal, CudaVarlen::Cudnn) if g.slices.iter().any(|s| s.q_len() != s.k_len()) => {
                // cuDNN's causal mask is top-left aligned (torch 2.11 aten/src/ATen/native/cudnn/MHA.cpp
                // builds the nested graph with `set_causal_mask(is_causal)`, cudnn-frontend's top-left
                // variant; bottom-right is the separate `set_causal_mask_bottom_right`), our model's is
                // bottom-right: they agree only on square slices. No shift of the packed rows turns one
                // into the other for Lq ≠ Lk, so such masks are unsupported here, never timed wrong.
                return Err("has rectangular causal slices, and cuDNN aligns causal masks top-left (ours: bottom-right)".into());
            }
            (SliceKind::Full | SliceKind::Causal, _) | (SliceKind::BiCausal, CudaVarlen::Flash) => {
                let how = format!("{} {} sequences", g.slices.len(), g.kind);
                return Ok((PackedCall::for_group(g, batch, mask.seqlen_q, mask.seqlen_k), how));
            }
            (k, _) => return Err(format!("no native {k} slices")),
        }
    }
    if kernel == CudaVarlen::Flash {
        if let Some(w) = window_form(mask) {
            let side = |x: Option<i64>| x.map_or("∞".to_string(), |v| v.to_string());
            let how = format!("{} documents, native window (left {}, right {})", w.docs.len(), side(w.left), side(w.right));
            return Ok((PackedCall::windowed(&w, batch, mask.seqlen_q), how));
        }
    }
    Err(format!("needs {} varlen launches (slice groups) and is not one native window", groups.len()))
}

/// A prepared single varlen call: the plan with its device tensors, the packed inputs (K/V already
/// repeated to the query heads for kernels without GQA), and how to unpack results.
pub struct SingleCallKernel {
    kern: Box<dyn VarlenKernel>,
    call: DeviceCall,
    /// KV heads of the inputs (the repeated heads' gradients are summed back onto these).
    hkv: i64,
    how: String,
    qp: Tensor,
    kp: Tensor,
    vp: Tensor,
    dop: Tensor,
    /// (batch, seqlen_q, seqlen_k) of the standard layout.
    dims: (i64, i64, i64),
}

impl SingleCallKernel {
    /// Packs `x` for `call` and builds every device tensor the call needs (outside any timed region:
    /// a timed call copies nothing from the host and repeats nothing). `repeat_kv`: expand K/V to the
    /// query heads here, for kernels without GQA.
    pub fn new(kern: Box<dyn VarlenKernel>, call: PackedCall, how: String, x: &super::Inputs, repeat_kv: bool) -> Result<SingleCallKernel, KernelError> {
        let call = DeviceCall::new(call, x.q.device())?;
        let (hq, hkv) = (x.q.size()[1], x.k.size()[1]);
        let pack = |t: &Tensor, i: &Tensor| -> Result<Tensor, KernelError> { Ok(flat_rows(&t.f_detach()?)?.f_index_select(0, i)?.f_contiguous()?) };
        let rep = |t: Tensor| -> Result<Tensor, KernelError> {
            Ok(if repeat_kv && hkv != hq { t.f_repeat_interleave_self_int(hq / hkv, 1, None)?.f_contiguous()? } else { t })
        };
        let (qp, dop) = (pack(&x.q, &call.q_idx)?, pack(&x.dout, &call.q_idx)?);
        let (kp, vp) = (rep(pack(&x.k, &call.k_idx)?)?, rep(pack(&x.v, &call.k_idx)?)?);
        Ok(SingleCallKernel { kern, call, hkv, how, qp, kp, vp, dop, dims: (x.q.size()[0], x.q.size()[2], x.k.size()[2]) })
    }

    fn unpack(&self, packed: &Tensor, rows: &Tensor, s: i64) -> Result<Tensor, KernelError> {
        let (b, dev) = (self.dims.0, packed.device());
        let sz = packed.size();
        let full = Tensor::f_zeros([b * s, sz[1], sz[2]], (packed.kind(), dev))?.f_index_add(0, rows, packed)?;
        unflat_rows(&full, b, s)
    }

    /// Sums the gradients of repeated KV heads back onto their KV head (part of the timed backward:
    /// the caller needs gradients of its own K/V).
    fn fold(&self, t: Tensor) -> Result<Tensor, KernelError> {
        let s = t.size();
        if s[1] == self.hkv {
            return Ok(t);
        }
        Ok(t.f_reshape([s[0], self.hkv, s[1] / self.hkv, s[2]])?.f_sum_dim_intlist(&[2i64][..], false, t.kind())?)
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
        if let Some(why) = self.backward_off.filter(|_| case.pass != crate::flops::Pass::Fwd) {
            return Err(format!("{}: backward off — {why}; forward only", self.name));
        }
        single_call(&masks.groups[0], self.kernel, 1)
            .map(|_| ())
            .map_err(|why| format!("`{}` {why}; {} runs exactly one call — use `sliced`", case.pattern, self.name))
    }
    fn autograd(&self) -> bool {
        false
    }
    fn prepare(&self, case: &crate::case::Case, x: &super::Inputs) -> Result<Box<dyn super::Kernel>, KernelError> {
        let (call, how) = single_call(&x.masks.groups[0], self.kernel, case.batch).map_err(KernelError::Unsupported)?;
        Ok(Box::new(SingleCallKernel::new(Box::new(CudaVarlenKernel(self.kernel)), call, how, x, self.kernel.needs_repeated_kv())?))
    }
}

impl super::Kernel for SingleCallKernel {
    fn forward(&mut self, x: &super::Inputs) -> Result<super::Fwd, KernelError> {
        let (o, l, _) = self.kern.forward(&self.call, &self.qp, &self.kp, &self.vp, x.scale)?;
        Ok(super::Fwd { out: o, lse: Some(l) })
    }
    fn backward(&mut self, x: &super::Inputs, f: &super::Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        let lse = f.lse.as_ref().ok_or_else(|| KernelError::Invalid("varlen backward needs the forward's LSE".into()))?;
        let (dq, dk, dv) = self.kern.backward(&self.call, &self.qp, &self.kp, &self.vp, &f.out, lse, &self.dop, &[], x.scale)?;
        Ok((dq, self.fold(dk)?, self.fold(dv)?))
    }
    fn standard_out(&self, f: &super::Fwd) -> Result<Tensor, KernelError> {
        self.unpack(&f.out, &self.call.q_idx, self.dims.1)
    }
    fn standard_grads(&self, (dq, dk, dv): (Tensor, Tensor, Tensor)) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        Ok((
            self.unpack(&dq, &self.call.q_idx, self.dims.1)?,
            self.unpack(&dk, &self.call.k_idx, self.dims.2)?,
            self.unpack(&dv, &self.call.k_idx, self.dims.2)?,
        ))
    }
    fn note(&self) -> String {
        format!("one varlen call over {} per batch element; inputs packed to [total, H, D], offsets and indices on the device, K/V heads repeated where the kernel has no GQA, all in prepare (untimed)", self.how)
    }
    fn cpu_bytes(&self, x: &super::Inputs, _pass: crate::flops::Pass) -> u64 {
        super::tensor_bytes(&x.q) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attn::fixtures::zoo;
    use crate::attn::varlen::EmulatedVarlenKernel;

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
            for repeat_kv in [false, true] {
                let (call, _) = single_call(&m, CudaVarlen::Flash, 2).unwrap();
                // `repeat_kv`: K/V expanded to the query heads in prepare (efficient / cuDNN), gradients
                // summed back onto the KV heads in the backward.
                let mut k = SingleCallKernel::new(Box::new(EmulatedVarlenKernel), call, String::new(), &x, repeat_kv).unwrap();
                assert_eq!(k.kp.size()[1], if repeat_kv { 4 } else { 2 });
                use super::super::Kernel;
                let f = k.forward(&x).unwrap();
                let (ro, rl) = crate::attn::sliced::sliced_forward(&x.q, &x.k, &x.v, &m, x.scale).unwrap();
                assert!((k.standard_out(&f).unwrap() - &ro).abs().max().double_value(&[]) < 1e-9, "{name} out");
                let g = k.backward(&x, &f).unwrap();
                let (dq, dk, dv) = k.standard_grads(g).unwrap();
                let (rq, rk, rv) = crate::attn::sliced::sliced_backward(&x.q, &x.k, &x.v, &ro, &rl, &x.dout, &m, x.scale).unwrap();
                for (a, b) in [(dq, rq), (dk, rk), (dv, rv)] {
                    // The emulated kernel keeps the LSE in f32, like the real kernels: f32-level agreement.
                    let e = (&a - &b).abs().max().double_value(&[]);
                    assert!(e < 1e-5, "{name} grads differ by {e}");
                }
            }
        }
    }

    /// Item 6 of issue 26: a timed call builds nothing from host slices and repeats nothing — every
    /// call gets the very tensors prepare built (offsets, indices, packed and repeated K/V), seen here
    /// through a recording kernel that keeps the storage pointers it was handed.
    #[test]
    fn timed_calls_reuse_what_prepare_built() {
        use crate::case::{Case, DType, DeviceKind, HeadLayout};
        use crate::flops::Pass;
        use std::cell::RefCell;
        use std::rc::Rc;
        type Seen = Rc<RefCell<Vec<[usize; 4]>>>;
        struct Recording(Seen);
        impl VarlenKernel for Recording {
            fn forward(&self, call: &DeviceCall, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor, Vec<Tensor>), KernelError> {
                self.0.borrow_mut().push([call.cu_q.data_ptr() as usize, call.q_idx.data_ptr() as usize, k.data_ptr() as usize, k.size()[1] as usize]);
                EmulatedVarlenKernel.forward(call, q, k, v, scale)
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
                state: &[Tensor],
                scale: f64,
            ) -> Result<(Tensor, Tensor, Tensor), KernelError> {
                self.0.borrow_mut().push([call.cu_q.data_ptr() as usize, call.q_idx.data_ptr() as usize, k.data_ptr() as usize, k.size()[1] as usize]);
                EmulatedVarlenKernel.backward(call, q, k, v, out, lse, dout, state, scale)
            }
        }
        let m = zoo("causal_document", 40, &[("doc_lens", "20,1,19")]);
        let case = Case::kernel(
            "efficient-varlen",
            "causal_document",
            crate::mask::Params::new(),
            40,
            HeadLayout { q: 4, kv: 2 },
            8,
            DType::Fp64,
            Pass::Fwdbwd,
            DeviceKind::Cpu,
        );
        let x = super::super::Inputs::new(&case, crate::mask::HeadMasks::shared(m.clone()), 3, false).unwrap();
        let (call, _) = single_call(&m, CudaVarlen::Efficient, 1).unwrap();
        let seen: Seen = Rc::default();
        let mut k = SingleCallKernel::new(Box::new(Recording(seen.clone())), call, String::new(), &x, true).unwrap();
        let prepared = [k.call.cu_q.data_ptr() as usize, k.call.q_idx.data_ptr() as usize, k.kp.data_ptr() as usize, 4];
        use super::super::Kernel;
        for _ in 0..3 {
            let f = k.forward(&x).unwrap();
            let _ = k.backward(&x, &f).unwrap();
        }
        assert_eq!(seen.borrow().len(), 6);
        assert!(seen.borrow().iter().all(|s| *s == prepared), "a call got tensors other than prepare's: {:?} vs {prepared:?}", seen.borrow());
    }

    /// The memory-efficient kernel gets only what its GPU test checks: full and causal slices in one
    /// call (the test's mixed-kind mask, inverse- and bi-causal included, is refused here).
    #[test]
    fn efficient_varlen_refuses_inverse_and_bi_causal_slices() {
        use crate::attn::fixtures::{mask_all_kinds, mask_full_and_causal_kinds};
        assert!(single_call(&mask_all_kinds(), CudaVarlen::Efficient, 1).is_err());
        for m in [mask_all_kinds(), mask_full_and_causal_kinds()] {
            for g in crate::attn::groups::group_slices(&m) {
                let one = Mask::rect(m.seqlen_q, m.seqlen_k, g.slices.clone()).unwrap();
                let takes = single_call(&one, CudaVarlen::Efficient, 1).is_ok();
                assert_eq!(takes, matches!(g.kind, SliceKind::Full | SliceKind::Causal), "{:?}", g.kind);
            }
        }
    }

    #[test]
    fn cudnn_varlen_runs_forward_only() {
        use crate::backend::Backend;
        use crate::case::{Case, DType, DeviceKind, HeadLayout};
        use crate::flops::Pass;
        let masks = crate::mask::build_pattern("causal", 1024, &crate::mask::Params::new()).unwrap();
        let case = |p| Case::kernel("cudnn-varlen", "causal", Default::default(), 1024, HeadLayout { q: 8, kv: 2 }, 128, DType::Bf16, p, DeviceKind::Cuda);
        let cudnn = &crate::backend::cudnn_varlen::CUDNN_VARLEN;
        assert_eq!(cudnn.supports(&case(Pass::Fwd), &masks), Ok(()));
        for p in [Pass::Bwd, Pass::Fwdbwd] {
            let why = cudnn.supports(&case(p), &masks).unwrap_err();
            assert!(why.contains("backward off"), "{why}");
        }
        // The other varlen kernels keep their backward.
        assert_eq!(crate::backend::flash_varlen::FLASH_VARLEN.supports(&case(Pass::Bwd), &masks), Ok(()));
    }

    #[test]
    fn cudnn_varlen_takes_only_square_causal_slices() {
        use crate::mask::{Slice, SliceKind};
        // Bottom-right causal over 4 queries × 8 keys: cuDNN would align it top-left (MHA.cpp
        // `set_causal_mask`), so it must be refused, not timed wrong; flash and efficient (custom mask
        // type 2, bottom-right) take it.
        let rect = Mask::rect(4, 8, vec![Slice::new(0..4, 0..8, SliceKind::Causal)]).unwrap();
        let why = single_call(&rect, CudaVarlen::Cudnn, 1).expect_err("cuDNN refuses rectangular causal");
        assert!(why.contains("top-left"), "{why}");
        assert!(single_call(&rect, CudaVarlen::Flash, 1).is_ok());
        assert!(single_call(&rect, CudaVarlen::Efficient, 1).is_ok());
        // Square causal documents and rectangular full slices are the same in both alignments.
        assert!(single_call(&zoo("causal_document", 40, &[("doc_lens", "20,1,19")]), CudaVarlen::Cudnn, 1).is_ok());
        let full = Mask::rect(4, 8, vec![Slice::new(0..4, 0..8, SliceKind::Full)]).unwrap();
        assert!(single_call(&full, CudaVarlen::Cudnn, 1).is_ok());
    }
}
