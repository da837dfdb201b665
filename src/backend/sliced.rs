//! `sliced`: any range mask, one launch per slice group (CUDA: FlashAttention-2 varlen), merged by
//! LSE, explicit backward — a thin shell over the attention core ([`crate::attn::sliced`]) that splits
//! the heads by mask group (per-head masks).

use tch::Tensor;

use super::Backend;
use crate::attn::dense::{fused_cpu_slice, CHUNK_ELEMS};
use crate::attn::sliced::{launches, sliced_backward, sliced_forward, uses_flash};
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
        Ok(Box::new(SlicedKernel { parts, note: format!("{launches} {how} per call; {gqa}") }))
    }
}

impl super::Kernel for SlicedKernel {
    fn forward(&mut self, x: &super::Inputs) -> Result<super::Fwd, KernelError> {
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
    fn backward(&mut self, x: &super::Inputs, f: &super::Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        let lse = f.lse.as_ref().ok_or_else(|| KernelError::Invalid("sliced backward needs the forward's LSE".into()))?;
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
