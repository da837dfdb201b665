//! `torch.nn.functional.scaled_dot_product_attention` with exactly one SDPA backend enabled through the
//! shim's toggles (so a backend that cannot take the case fails instead of silently falling back).
//! Full / causal masks use no mask / `is_causal`; other masks a dense boolean `attn_mask` where the
//! backend accepts one. Backward through autograd. The four backends are thin files over [`Sdpa`].

use tch::Tensor;

use super::{autograd_backward, dense_mask, simple_mask, Backend, Fwd, Inputs, Kernel, Simple};
use crate::attn::KernelError;
use crate::case::{Case, DType, DeviceKind};
use crate::flops::Pass;
use crate::mask::HeadMasks;
use crate::sys::sdp::{with_sdp, SdpToggles};

/// PyTorch's SDPA implementations (its "backends"); attnbench enables exactly one per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpaPath {
    Flash,
    Efficient,
    Cudnn,
    Math,
}

pub struct Sdpa {
    pub name: &'static str,
    pub summary: &'static str,
    /// The one SDPA code path this backend enables.
    pub path: SdpaPath,
}

impl Sdpa {
    fn toggles(&self) -> SdpToggles {
        let mut t = SdpToggles { flash: false, mem_efficient: false, math: false, cudnn: false };
        match self.path {
            SdpaPath::Flash => t.flash = true,
            SdpaPath::Efficient => t.mem_efficient = true,
            SdpaPath::Cudnn => t.cudnn = true,
            SdpaPath::Math => t.math = true,
        }
        t
    }

    /// Native GQA (`enable_gqa`) or explicit KV repeat (the memory-efficient kernel has no GQA path).
    fn native_gqa(&self) -> bool {
        self.path != SdpaPath::Efficient
    }

    /// Whether a dense boolean `attn_mask` is accepted: math and memory-efficient everywhere, cuDNN on
    /// CUDA (recent cuDNN takes a bias; a refusal at run time becomes an `unsupported` row), flash on the
    /// CPU only (torch's CPU flash kernel takes `attn_mask`; FlashAttention-2 on CUDA does not).
    fn takes_attn_mask(&self, device: DeviceKind) -> bool {
        match self.path {
            SdpaPath::Math | SdpaPath::Efficient | SdpaPath::Cudnn => true,
            SdpaPath::Flash => device == DeviceKind::Cpu,
        }
    }

    /// The prepared kernel (mask, causal flag, GQA handling) for `case`.
    fn kernel(&self, case: &Case, x: &Inputs) -> Result<SdpaKernel, KernelError> {
        let simple = simple_mask(&x.masks);
        let (mask, causal, mnote) = match simple {
            Some(Simple::Full) => (None, false, "no mask"),
            Some(Simple::Causal) => (None, true, "is_causal"),
            None => (Some(dense_mask(&x.masks, case.heads.q, x.q.device())?), false, "dense bool attn_mask"),
        };
        let g = (case.heads.q / case.heads.kv) as i64;
        let (gqa, kv_repeated) = if g == 1 {
            ("MHA", None)
        } else if self.native_gqa() {
            ("GQA via enable_gqa", None)
        } else {
            let k = x.k.f_repeat_interleave_self_int(g, 1, None)?;
            let v = x.v.f_repeat_interleave_self_int(g, 1, None)?;
            ("GQA via KV repeated in preparation (untimed; its backward is timed with the pass)", Some((k, v)))
        };
        Ok(SdpaKernel { toggles: self.toggles(), mask, causal, kv_repeated, note: format!("{mnote}; {gqa}; only {} enabled", self.name) })
    }
}

struct SdpaKernel {
    toggles: SdpToggles,
    mask: Option<Tensor>,
    causal: bool,
    /// GQA without native support: K and V repeated to the query heads once, in `prepare` (outside the
    /// timed region, like every backend's input preparation). They stay connected to the inputs'
    /// autograd graph, so a timed backward includes the repeat's backward (summing the repeated heads'
    /// gradients), which is part of running GQA this way.
    kv_repeated: Option<(Tensor, Tensor)>,
    note: String,
}

impl Backend for Sdpa {
    fn name(&self) -> &'static str {
        self.name
    }
    fn summary(&self) -> &'static str {
        self.summary
    }
    fn supports(&self, case: &Case, masks: &HeadMasks) -> Result<(), String> {
        let cpu = case.device == DeviceKind::Cpu;
        match self.path {
            SdpaPath::Efficient | SdpaPath::Cudnn if cpu => return Err(format!("{} has no CPU kernel", self.name)),
            _ => {}
        }
        match (self.path, case.dtype) {
            (SdpaPath::Flash | SdpaPath::Cudnn, DType::Fp32 | DType::Fp64) if !cpu => {
                return Err(format!("{} takes bf16/fp16 on CUDA, not {}", self.name, case.dtype))
            }
            (SdpaPath::Efficient, DType::Fp64) => return Err("the memory-efficient kernel does not take fp64".into()),
            _ => {}
        }
        if simple_mask(masks).is_none() && !self.takes_attn_mask(case.device) {
            return Err(format!("{} takes only full or causal (is_causal) masks on {}; `{}` needs a dense attn_mask", self.name, case.device, case.pattern));
        }
        Ok(())
    }
    fn autograd(&self) -> bool {
        true
    }
    fn prepare(&self, case: &Case, x: &Inputs) -> Result<Box<dyn Kernel>, KernelError> {
        Ok(Box::new(self.kernel(case, x)?))
    }
}

impl Kernel for SdpaKernel {
    fn forward(&mut self, x: &Inputs) -> Result<Fwd, KernelError> {
        let out = with_sdp(self.toggles, || -> Result<Tensor, KernelError> {
            Ok(match &self.kv_repeated {
                Some((k, v)) => Tensor::f_scaled_dot_product_attention(&x.q, k, v, self.mask.as_ref(), 0.0, self.causal, x.scale, false)?,
                None => {
                    let gqa = x.q.size()[1] != x.k.size()[1];
                    Tensor::f_scaled_dot_product_attention(&x.q, &x.k, &x.v, self.mask.as_ref(), 0.0, self.causal, x.scale, gqa)?
                }
            })
        })??;
        Ok(Fwd { out, lse: None })
    }
    fn backward(&mut self, x: &Inputs, f: &Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        with_sdp(self.toggles, || autograd_backward(x, &f.out))?
    }
    fn note(&self) -> String {
        self.note.clone()
    }
    fn cpu_bytes(&self, x: &Inputs, pass: Pass) -> u64 {
        let s = x.q.size();
        let out = super::tensor_bytes(&x.q);
        let lse = (s[0] * s[1] * s[2]) as u64 * 4;
        let mask = self.mask.as_ref().map_or(0, super::tensor_bytes);
        if self.toggles.math {
            // math materialises the scores and probabilities like `naive`.
            let scores = (s[0] * s[1] * s[2] * s[2]) as u64 * x.q.kind().elt_size_in_bytes() as u64;
            return match pass {
                Pass::Fwd => 2 * scores + out + mask,
                _ => 4 * scores + 4 * out + mask,
            };
        }
        // fused: output + LSE (+ gradients) and the mask; per-thread tiles are negligible.
        match pass {
            Pass::Fwd => out + lse + mask,
            _ => 4 * out + lse + mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sdpa_efficient::SDPA_EFFICIENT;
    use crate::case::HeadLayout;
    use crate::mask::{build_pattern, Params};

    /// The memory-efficient kernel has no GQA path: its K/V are repeated to the query heads once, in
    /// `prepare` (untimed), and the timed forward uses them as they are. (The kernel itself is CUDA
    /// only; preparing needs no GPU.)
    #[test]
    fn efficient_gqa_repeats_kv_in_prepare_not_in_the_timed_call() {
        let case = Case::kernel("sdpa-efficient", "causal", Params::new(), 32, HeadLayout { q: 8, kv: 2 }, 16, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
        let x = Inputs::new(&case, build_pattern("causal", 32, &Params::new()).unwrap(), 1, true).unwrap();
        let k = SDPA_EFFICIENT.kernel(&case, &x).unwrap();
        assert!(k.note.contains("KV repeated in preparation"), "{}", k.note);
        let (kr, vr) = k.kv_repeated.as_ref().expect("repeated in prepare");
        assert_eq!((kr.size(), vr.size()), (vec![1, 8, 32, 16], vec![1, 8, 32, 16]));
        // Still connected to the inputs' graph: a timed backward reaches x.k / x.v through them.
        assert!(kr.requires_grad() && vr.requires_grad());
        assert_eq!(kr.narrow(1, 0, 4), x.k.narrow(1, 0, 1).expand([1, 4, 32, 16], false));
        // Native GQA backends repeat nothing.
        let flash = crate::backend::sdpa_flash::SDPA_FLASH.kernel(&case, &x).unwrap();
        assert!(flash.kv_repeated.is_none() && flash.note.contains("enable_gqa"), "{}", flash.note);
    }
}
