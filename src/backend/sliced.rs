//! `sliced`: any range mask, one launch per slice group (CUDA: FlashAttention-2 varlen), merged by
//! LSE, explicit backward — a thin shell over the attention core ([`crate::attn::sliced`]) that splits
//! the heads by mask group (per-head masks).

use tch::Tensor;

use super::Backend;
use crate::attn::dense::{fused_cpu_slice, CHUNK_ELEMS};
use crate::attn::groups::packed_calls;
use crate::attn::sliced::{launches, sliced_backward, sliced_forward, uses_flash};
use crate::attn::varlen::{device_calls, packed_backward, packed_forward, CudaVarlen, CudaVarlenKernel, DeviceCall};
use crate::attn::KernelError;
use crate::attn::MaskedAttention;
use crate::mask::{Mask, Slice};

/// The `sliced` backend: the core's sliced kernel ([`crate::attn::sliced`]) per head group of the mask
/// (explicit backward, no autograd).
pub struct Sliced;
pub static SLICED: Sliced = Sliced;

struct SlicedKernel {
    /// (query heads, KV heads, mask) per head group.
    parts: Vec<(std::ops::Range<i64>, std::ops::Range<i64>, Mask)>,
    /// On the flash path: each part's varlen calls with their offsets and indices already on the device
    /// (built in prepare, so a timed call copies nothing from the host). Empty on the dense path.
    calls: Vec<Vec<DeviceCall>>,
    note: String,
}

impl Backend for Sliced {
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
    fn masked_attention(&self) -> Option<&'static dyn MaskedAttention> {
        Some(&crate::attn::sliced::SLICED)
    }
    fn prepare(&self, case: &crate::case::Case, x: &super::Inputs) -> Result<Box<dyn super::Kernel>, KernelError> {
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
        let calls = if uses_flash(&x.q) {
            let b = x.q.size()[0] as usize;
            parts.iter().map(|p| device_calls(packed_calls(&p.2, b, true), x.q.device())).collect::<Result<Vec<_>, _>>()?
        } else {
            vec![]
        };
        Ok(Box::new(SlicedKernel { parts, calls, note: format!("{launches} {how} per call; {gqa}; varlen offsets and indices built in prepare") }))
    }
}

impl SlicedKernel {
    /// Part `i`'s forward: its prepared varlen calls on the flash path, the core's sliced kernel
    /// otherwise.
    fn part_forward(&self, i: usize, q: &Tensor, k: &Tensor, v: &Tensor, m: &Mask, scale: f64) -> Result<(Tensor, Tensor), KernelError> {
        match self.calls.get(i) {
            Some(calls) => {
                let (o, l, _) = packed_forward(&CudaVarlenKernel(CudaVarlen::Flash), calls, q, k, v, scale)?;
                Ok((o, l))
            }
            None => sliced_forward(q, k, v, m, scale),
        }
    }
}

impl super::Kernel for SlicedKernel {
    fn forward(&mut self, x: &super::Inputs) -> Result<super::Fwd, KernelError> {
        if let [(_, _, m)] = self.parts.as_slice() {
            let (o, l) = self.part_forward(0, &x.q, &x.k, &x.v, m, x.scale)?;
            return Ok(super::Fwd { out: o, lse: Some(l) });
        }
        let (mut os, mut ls) = (vec![], vec![]);
        for (i, (hq, hk, m)) in self.parts.iter().enumerate() {
            let n = |t: &Tensor, r: &std::ops::Range<i64>| t.f_narrow(1, r.start, r.end - r.start);
            let (o, l) = self.part_forward(i, &n(&x.q, hq)?, &n(&x.k, hk)?, &n(&x.v, hk)?, m, x.scale)?;
            os.push(o);
            ls.push(l);
        }
        Ok(super::Fwd { out: Tensor::f_cat(&os, 1)?, lse: Some(Tensor::f_cat(&ls, 1)?) })
    }
    fn backward(&mut self, x: &super::Inputs, f: &super::Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        let lse = f.lse.as_ref().ok_or_else(|| KernelError::Invalid("sliced backward needs the forward's LSE".into()))?;
        let (mut dq, mut dk, mut dv) = (vec![], vec![], vec![]);
        for (i, (hq, hk, m)) in self.parts.iter().enumerate() {
            let n = |t: &Tensor, r: &std::ops::Range<i64>| t.f_narrow(1, r.start, r.end - r.start);
            let (q, k, v, o, l, d) = (n(&x.q, hq)?, n(&x.k, hk)?, n(&x.v, hk)?, n(&f.out, hq)?, n(lse, hq)?, n(&x.dout, hq)?);
            let (a, b, c) = match self.calls.get(i) {
                Some(calls) => packed_backward(&CudaVarlenKernel(CudaVarlen::Flash), calls, &q, &k, &v, &o, &l, &d, x.scale)?,
                None => sliced_backward(&q, &k, &v, &o, &l, &d, m, x.scale)?,
            };
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
