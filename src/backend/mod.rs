//! Kernel backends: one file per backend, the trait they implement ([`Backend`]), the inputs of a case
//! ([`Inputs`]), and the registry ([`registry`]). The attention maths lives below, in `crate::attn`;
//! a backend is the shell that prepares a case for one kernel and calls it.

pub mod cudnn_varlen;
pub mod efficient_varlen;
pub mod external;
pub mod flash_varlen;
pub mod naive;
pub mod reference;
pub mod registry;
pub mod sdpa;
pub mod sdpa_cudnn;
pub mod sdpa_efficient;
pub mod sdpa_flash;
pub mod sdpa_math;
pub mod sliced;
pub mod varlen;

pub use registry::{find_backend, registry};

use tch::{Device, Kind, Tensor};

use crate::attn::KernelError;

use crate::case::{Case, DeviceKind};
use crate::mask::{HeadMasks, Mask, SliceKind};

/// The tensors of one case, allocated once per case (inputs are never part of a timed call).
/// q `[B, Hq, S, D]`, k/v `[B, Hkv, S, D]`, dout like q; `scale` = 1/√D.
pub struct Inputs {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub dout: Tensor,
    pub masks: HeadMasks,
    pub scale: f64,
}

/// The case's q, k, v, dout — the one input contract every harness and every external worker follows:
/// `torch.manual_seed(seed)`, then standard normal q `[B, Hq, S, D]`, k, v `[B, Hkv, S, D]`, dout like q,
/// drawn in that order in f32 **on `device`** by torch's default generator of that device, then cast to
/// the case's dtype. On the CPU this is what it always was (CPU generator, f32, cast); on CUDA the draw
/// runs on the GPU (Philox), so a 48K case does not spend seconds in a host `randn` and a host-to-device
/// copy. The same seed gives the same values on the same device type with the same torch; CUDA values
/// differ from CPU values (issue 26). Both sides seed every device: `tch::manual_seed` is libtorch's
/// `torch::manual_seed` (torch/csrc/api/src/utils.cpp: the CPU generator and each CUDA default
/// generator, whose `set_current_seed` also resets the Philox offset), Python's `torch.manual_seed`
/// likewise (`torch.cuda.manual_seed_all`). CUDA values depend on the launch grid, i.e. on the GPU
/// model: the contract is "same torch, same GPU model".
pub fn draw_inputs(case: &Case, seed: u64, device: Device) -> Result<[Tensor; 4], KernelError> {
    let (b, hq, hkv, s, d) = (case.batch as i64, case.heads.q as i64, case.heads.kv as i64, case.seqlen as i64, case.head_dim as i64);
    let kind = case.dtype.kind();
    crate::sys::rng::with_seed(seed, || {
        let mk = |shape: [i64; 4]| -> Result<Tensor, KernelError> { Ok(Tensor::f_randn(shape, (Kind::Float, device))?.f_to_kind(kind)?) };
        Ok([mk([b, hq, s, d])?, mk([b, hkv, s, d])?, mk([b, hkv, s, d])?, mk([b, hq, s, d])?])
    })
}

/// What makes two cases' inputs the same tensors: shape, dtype, device, seed (not the mask, not the
/// backend, not the pass).
#[derive(Debug, Clone, PartialEq, Eq)]
struct InputKey {
    shape: [usize; 5],
    dtype: crate::case::DType,
    device: Device,
    seed: u64,
}

thread_local! {
    /// The last shape's inputs, kept by the thread (the runner's worker serves its cases on one
    /// thread), so every backend and pass of one shape shares one draw. One entry: the planner orders
    /// backends innermost, and a second shape's inputs would only hold device memory a later case may
    /// need. Per thread, so that test threads and a local CP world's rank threads never share a draw.
    static SHARED_INPUTS: std::cell::RefCell<Option<(InputKey, [Tensor; 4])>> = const { std::cell::RefCell::new(None) };
}

/// [`draw_inputs`] on the case's device, drawn once per shape and shared: the returned tensors alias
/// the kept ones (`detach` gives each case its own autograd leaf over the same storage). Returns whether
/// they were shared (`true`) or freshly drawn.
pub fn shared_inputs(case: &Case, seed: u64) -> Result<([Tensor; 4], bool), KernelError> {
    let device = case.device.tch();
    let key = InputKey { shape: [case.batch, case.heads.q, case.heads.kv, case.seqlen, case.head_dim], dtype: case.dtype, device, seed };
    SHARED_INPUTS.with(|cell| {
        let mut kept = cell.borrow_mut();
        let hit = matches!(&*kept, Some((k, _)) if *k == key);
        if !hit {
            *kept = None; // free the previous shape before drawing the next
            *kept = Some((key, draw_inputs(case, seed, device)?));
        }
        let (_, t) = kept.as_ref().expect("filled above");
        Ok(([t[0].f_detach()?, t[1].f_detach()?, t[2].f_detach()?, t[3].f_detach()?], hit))
    })
}

/// Forgets this thread's kept inputs (frees their memory), e.g. after an out-of-memory case.
pub fn drop_shared_inputs() {
    SHARED_INPUTS.with(|cell| *cell.borrow_mut() = None);
}

impl Inputs {
    /// The case's inputs ([`draw_inputs`], shared per shape by [`shared_inputs`]) on its device. `requires_grad` is set on q, k, v when the
    /// backend differentiates through autograd and the pass has a backward.
    pub fn new(case: &Case, masks: HeadMasks, seed: u64, requires_grad: bool) -> Result<Inputs, KernelError> {
        let ([q, k, v, dout], _shared) = shared_inputs(case, seed)?;
        let grad = |t: Tensor| if requires_grad { t.set_requires_grad(true) } else { t };
        Ok(Inputs { q: grad(q), k: grad(k), v: grad(v), dout, masks, scale: 1.0 / (case.head_dim as f64).sqrt() })
    }

    /// Bytes of q, k, v (and dout): what the inputs occupy, excluded from peak memory.
    pub fn bytes(&self) -> u64 {
        [&self.q, &self.k, &self.v, &self.dout].iter().map(|t| tensor_bytes(t)).sum()
    }
}

/// Bytes of a tensor's elements.
pub fn tensor_bytes(t: &Tensor) -> u64 {
    (t.numel() * t.kind().elt_size_in_bytes()) as u64
}

/// Result of a forward: the output (with its autograd graph for autograd backends) and, for backends
/// whose backward is explicit, the LSE `[B, Hq, S]` f32.
pub struct Fwd {
    pub out: Tensor,
    pub lse: Option<Tensor>,
}

/// A backend prepared for one case: the calls the timer makes, synchronously.
pub trait Kernel {
    /// One forward call.
    fn forward(&mut self, x: &Inputs) -> Result<Fwd, KernelError>;
    /// Gradients (dq, dk, dv) of `⟨out, dout⟩` given a forward made by this kernel. Autograd backends keep
    /// the graph (`retain_graph`), so the timer repeats the backward on one forward.
    fn backward(&mut self, x: &Inputs, fwd: &Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError>;
    /// How the case is run: GQA handling, mask handling, launches per call (goes in the row's note).
    fn note(&self) -> String;
    /// Estimated CPU peak memory: bytes of the tensors one call of `pass` allocates (inputs excluded),
    /// counted from the shapes the backend creates. Used to refuse cases that cannot fit before they
    /// allocate anything; rows record the allocator's measured peak instead.
    fn cpu_bytes(&self, x: &Inputs, pass: crate::flops::Pass) -> u64;
    /// The forward's output in the standard layout `[B, Hq, S, D]`, for the correctness gate. A kernel
    /// whose timed calls work in its own layout (packed varlen rows) converts here, outside timing.
    fn standard_out(&self, fwd: &Fwd) -> Result<Tensor, KernelError> {
        Ok(fwd.out.shallow_clone())
    }
    /// Gradients (dq, dk, dv) in the standard layout, for the correctness gate (see `standard_out`).
    fn standard_grads(&self, grads: (Tensor, Tensor, Tensor)) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        Ok(grads)
    }
}

/// A kernel backend: one file each, one line in [`registry`](registry::REGISTRY).
pub trait Backend: Sync {
    fn name(&self) -> &'static str;
    /// One line for `attnbench list`.
    fn summary(&self) -> &'static str;
    /// Whether the case can run, answered before running anything: `Err(reason)` → an `unsupported` row.
    fn supports(&self, case: &Case, masks: &HeadMasks) -> Result<(), String>;
    /// Whether q, k, v must require grad for a backward (autograd-based backward).
    fn autograd(&self) -> bool;
    fn prepare(&self, case: &Case, x: &Inputs) -> Result<Box<dyn Kernel>, KernelError>;
    /// The backend's kernel for CP pieces: exact attention over one sub-mask with LSE and a backward
    /// from the final out / LSE. `None`: this backend cannot be a CP case's per-rank kernel.
    fn masked_attention(&self) -> Option<&'static dyn crate::attn::MaskedAttention> {
        None
    }
}

/// A whole-sequence mask of a single kind that SDPA's `is_causal` flag (or no mask) expresses exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simple {
    Full,
    Causal,
}

/// `Some` when every head shares one mask that is one full or one causal slice over the whole square.
pub fn simple_mask(masks: &HeadMasks) -> Option<Simple> {
    if !masks.is_shared() {
        return None;
    }
    let m = &masks.groups[0];
    match m.slices() {
        [s] if s.q == (0..m.seqlen_q) && s.k == (0..m.seqlen_k) && m.seqlen_q == m.seqlen_k => match s.kind {
            SliceKind::Full => Some(Simple::Full),
            SliceKind::Causal => Some(Simple::Causal),
            _ => None,
        },
        _ => None,
    }
}

/// Dense boolean mask (`true` = attend) broadcastable to `[B, Hq, S, S]`: `[S, S]` when shared, else
/// `[1, Hq, S, S]` (each head group's mask repeated over its heads). S² bytes per group.
pub fn dense_mask(masks: &HeadMasks, heads_q: usize, device: Device) -> Result<Tensor, KernelError> {
    let one = |m: &Mask| -> Result<Tensor, KernelError> {
        let d: Vec<u8> = m.to_dense().into_iter().map(u8::from).collect();
        Ok(Tensor::from_slice(&d).f_reshape([m.seqlen_q as i64, m.seqlen_k as i64])?.f_to_kind(Kind::Bool)?)
    };
    let t = if masks.is_shared() {
        one(&masks.groups[0])?
    } else {
        let per = (heads_q / masks.groups.len()) as i64;
        let gs = masks.groups.iter().map(one).collect::<Result<Vec<_>, _>>()?;
        Tensor::f_stack(&gs, 0)?.f_repeat_interleave_self_int(per, 0, None)?.f_unsqueeze(0)?
    };
    Ok(t.f_to_device(device)?)
}

/// Gradients through autograd of ⟨out, dout⟩ w.r.t. q, k, v, keeping the graph so the backward can be
/// repeated on one forward. The dot product adds one elementwise multiply and sum (O(S·D), negligible
/// next to the O(S²·D) backward).
pub fn autograd_backward(x: &Inputs, out: &Tensor) -> Result<(Tensor, Tensor, Tensor), KernelError> {
    let loss = out.f_mul(&x.dout)?.f_sum(out.kind())?;
    let g = Tensor::f_run_backward(&[&loss], &[&x.q, &x.k, &x.v], true, false)?;
    let mut it = g.into_iter();
    Ok((it.next().unwrap(), it.next().unwrap(), it.next().unwrap()))
}

/// Shared "CUDA only" answer of the CUDA kernels.
pub fn require_cuda(case: &Case, what: &str) -> Result<(), String> {
    if case.device != DeviceKind::Cuda {
        return Err(format!("{what} is a CUDA kernel; no CPU implementation"));
    }
    Ok(())
}

/// Shared dtype answer of the 16-bit-only CUDA kernels.
pub fn require_half(case: &Case, what: &str) -> Result<(), String> {
    use crate::case::DType;
    if !matches!(case.dtype, DType::Bf16 | DType::Fp16) {
        return Err(format!("{what} takes bf16 or fp16 only, not {}", case.dtype));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{DType, HeadLayout};
    use crate::flops::Pass;
    use crate::mask::{build_pattern, Params};

    fn case(seqlen: usize, dtype: DType) -> Case {
        Case::kernel("naive", "causal", Params::new(), seqlen, HeadLayout { q: 4, kv: 2 }, 8, dtype, Pass::Bwd, DeviceKind::Cpu)
    }

    /// CPU draws are what they always were (the seed contract's CPU side): the CPU generator in f32,
    /// then cast — checked against a draw written out here, not through `draw_inputs`.
    #[test]
    fn cpu_draws_follow_the_seed_contract() {
        let c = case(16, DType::Bf16);
        let [q, k, v, dout] = draw_inputs(&c, 5, Device::Cpu).unwrap();
        let want = crate::sys::rng::with_seed(5, || {
            [[1i64, 4, 16, 8], [1, 2, 16, 8], [1, 2, 16, 8], [1, 4, 16, 8]].map(|s| Tensor::randn(s, (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16))
        });
        for (got, want) in [q, k, v, dout].iter().zip(want.iter()) {
            assert_eq!(got.kind(), Kind::BFloat16);
            assert!(got.equal(want));
        }
    }

    /// Every backend of one shape gets the same draw (same storage, no second `randn`), each with its
    /// own autograd leaf; another shape or seed draws anew, with the values `draw_inputs` gives.
    #[test]
    fn inputs_are_drawn_once_per_shape_and_shared() {
        let m = || build_pattern("causal", 24, &Params::new()).unwrap();
        let c = case(24, DType::Fp32);
        let a = Inputs::new(&c, m(), 11, true).unwrap();
        let b = Inputs::new(&Case { backend: "sliced".into(), pass: Pass::Fwd, ..c.clone() }, m(), 11, false).unwrap();
        assert_eq!(a.q.data_ptr(), b.q.data_ptr(), "a second backend of the same shape draws again");
        assert_eq!(a.dout.data_ptr(), b.dout.data_ptr());
        assert!(a.q.requires_grad() && !b.q.requires_grad(), "each case has its own leaf");
        let other_seed = Inputs::new(&c, m(), 12, false).unwrap();
        assert!(!other_seed.q.equal(&a.q));
        let [q12, ..] = draw_inputs(&c, 12, Device::Cpu).unwrap();
        assert!(other_seed.q.equal(&q12));
        let again = Inputs::new(&c, m(), 11, false).unwrap();
        assert!(again.q.equal(&a.q.detach()));
    }
}
