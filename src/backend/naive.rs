//! `naive`: materialised `softmax(QKᵀ·scale + mask)·V` with plain torch ops in the input dtype (the
//! mask as an additive 0 / −inf bias; GQA by repeating KV heads); autograd backward. The baseline
//! every fused kernel should beat, and the memory hog (B·Hq·S² scores).

use tch::Tensor;

use super::{autograd_backward, dense_mask, Backend, Fwd, Inputs, Kernel};
use crate::attn::KernelError;
use crate::case::Case;
use crate::flops::Pass;
use crate::mask::HeadMasks;

pub struct Naive;
pub static NAIVE: Naive = Naive;

struct NaiveKernel {
    bias: Tensor,
}

impl Backend for Naive {
    fn name(&self) -> &'static str {
        "naive"
    }
    fn summary(&self) -> &'static str {
        "materialised softmax(QKᵀ·scale + mask)·V in torch ops, autograd backward"
    }
    fn supports(&self, _case: &Case, _m: &HeadMasks) -> Result<(), String> {
        Ok(())
    }
    fn autograd(&self) -> bool {
        true
    }
    fn masked_attention(&self) -> Option<&'static dyn crate::attn::MaskedAttention> {
        Some(&crate::attn::dense::MATERIALIZED)
    }
    fn prepare(&self, case: &Case, x: &Inputs) -> Result<Box<dyn Kernel>, KernelError> {
        let m = dense_mask(&x.masks, case.heads.q, x.q.device())?;
        let bias = Tensor::f_zeros(m.size(), (x.q.kind(), x.q.device()))?.f_masked_fill(&m.f_logical_not()?, f64::NEG_INFINITY)?;
        Ok(Box::new(NaiveKernel { bias }))
    }
}

impl Kernel for NaiveKernel {
    fn forward(&mut self, x: &Inputs) -> Result<Fwd, KernelError> {
        let g = x.q.size()[1] / x.k.size()[1];
        let k = x.k.f_repeat_interleave_self_int(g, 1, None)?;
        let v = x.v.f_repeat_interleave_self_int(g, 1, None)?;
        let s = x.q.f_matmul(&k.f_transpose(-1, -2)?)?.f_mul_scalar(x.scale)?.f_add(&self.bias)?;
        let out = s.f_softmax(-1, x.q.kind())?.f_matmul(&v)?;
        Ok(Fwd { out, lse: None })
    }
    fn backward(&mut self, x: &Inputs, f: &Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        autograd_backward(x, &f.out)
    }
    fn note(&self) -> String {
        "dense additive mask, GQA by repeating KV heads, autograd backward".into()
    }
    fn cpu_bytes(&self, x: &Inputs, pass: Pass) -> u64 {
        let s = x.q.size();
        let elem = x.q.kind().elt_size_in_bytes() as u64;
        let scores = (s[0] * s[1] * s[2] * s[2]) as u64 * elem;
        let kv = if x.q.size()[1] != x.k.size()[1] { 2 * super::tensor_bytes(&x.q) } else { 0 };
        let out = super::tensor_bytes(&x.q);
        // fwd: scores (+ bias added copy) and softmax; bwd: + dP and dS, gradients of q, k, v.
        match pass {
            Pass::Fwd => 3 * scores + kv + out,
            _ => 5 * scores + 2 * kv + 4 * out,
        }
    }
}
