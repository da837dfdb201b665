//! The attention core: exact attention over an arbitrary range mask, with its log-sum-exp, forward
//! and backward — what every kernel backend wraps and what every CP strategy computes per block. It
//! depends on nothing above it (masks and the shim only).
//!
//! - [`groups`]: slices → launch groups → packed varlen calls (and one-call native windows).
//! - [`dense`]: the tensor-op path (any device and dtype; torch's fused CPU kernel where it applies)
//!   and the materialised whole-rectangle computation.
//! - [`varlen`]: packed calls run on a varlen kernel (the CUDA kernels through the shim, or their CPU
//!   emulation).
//! - [`merge`]: the one LSE merge.
//! - [`sliced`]: the `sliced` kernel — varlen FlashAttention on CUDA (16-bit), the dense path elsewhere.
//! - [`MaskedAttention`]: the per-case choice of kernel a CP strategy (and the simulator) calls.
//!
//! Tensor conventions: q `[B, Hq, Sq, D]`, k and v `[B, Hkv, Sk, D]`, LSE `[B, Hq, Sq]` f32 natural log
//! (f64 for f64 inputs), `−inf` for a row that attends nothing (its output is 0). `Hq` must be a
//! multiple of `Hkv` (GQA: query head h uses KV head h / (Hq / Hkv)). A mask is in local coordinates:
//! `mask.seqlen_q` == Sq, `mask.seqlen_k` == Sk.

pub mod dense;
pub mod groups;
pub mod merge;
pub mod sliced;
pub mod varlen;

use tch::{Kind, Tensor};

use crate::mask::Mask;
use crate::sys::SysError;

/// Why a kernel call failed — in the attention core, in a backend, or while timing it. `Oom` and
/// `Unsupported` are split out because a row records them as statuses of their own.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The kernel cannot run this case (kind of mask, dtype, device, head layout or pass).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The allocator ran out of memory.
    #[error("out of memory: {0}")]
    Oom(String),
    /// Inputs that violate the tensor conventions above (shapes, GQA ratio, mask size).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Any other libtorch or shim error.
    #[error("{0}")]
    Torch(String),
    /// Timing the call failed (a device call, an impossible time).
    #[error("measurement: {0}")]
    Measure(String),
}

impl From<crate::measure::MeasureError> for KernelError {
    fn from(e: crate::measure::MeasureError) -> Self {
        match e {
            crate::measure::MeasureError::Sys(s) => s.into(),
            other => KernelError::Measure(other.to_string()),
        }
    }
}

impl KernelError {
    /// Classifies a libtorch error message: "out of memory" anywhere → [`KernelError::Oom`].
    pub fn from_message(msg: String) -> Self {
        SysError::classify(&msg).into()
    }
}

impl From<SysError> for KernelError {
    fn from(e: SysError) -> Self {
        match e {
            SysError::Oom(m) => KernelError::Oom(m),
            SysError::Torch(m) => KernelError::Torch(m),
        }
    }
}

impl From<tch::TchError> for KernelError {
    fn from(e: tch::TchError) -> Self {
        SysError::from(e).into()
    }
}

/// Exact attention over one range mask, with the LSE out and a backward from the FINAL out / LSE of the
/// rows (so a block's gradients are its share of attention merged over several blocks, as in ring
/// attention). The kernel a CP case names (`backend` of a CP case) provides this; see
/// `crate::backend::Backend::masked_attention`.
pub trait MaskedAttention: Sync {
    /// The backend name this kernel belongs to (goes into CP rows).
    fn name(&self) -> &'static str;
    /// (out `[B, Hq, Sq, D]` in q's dtype, lse `[B, Hq, Sq]` f32, f64 for f64).
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> Result<(Tensor, Tensor), KernelError>;
    /// (dq, dk, dv) in the dtypes of q, k, v.
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<(Tensor, Tensor, Tensor), KernelError>;
    /// Kernel launches one forward over `mask` makes on a GPU with 16-bit inputs (the simulator's
    /// roofline charges a fixed cost per launch).
    fn gpu_launches(&self, mask: &Mask) -> usize;
}

/// Accumulation kind: f64 for f64 inputs (the reference and gradient checks), f32 otherwise.
pub fn acc_kind(k: Kind) -> Kind {
    if k == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// −inf entries replaced by 0, so `exp(x − safe(lse))` is 0 (not NaN) on rows that attend nothing.
pub fn finite_or_zero(lse: &Tensor) -> Result<Tensor, KernelError> {
    let inf = lse.f_isinf()?;
    Ok(lse.f_masked_fill(&inf, 0.0)?)
}

/// Sizes of one call, validated against the conventions above.
pub(crate) struct Dims {
    pub b: i64,
    pub hq: i64,
    pub hkv: i64,
    pub sq: i64,
    pub sk: i64,
    pub d: i64,
}

pub(crate) fn check_inputs(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask) -> Result<Dims, KernelError> {
    let (qs, ks, vs) = (q.size(), k.size(), v.size());
    if qs.len() != 4 || ks.len() != 4 || vs.len() != 4 {
        return Err(KernelError::Invalid(format!("q, k, v must be 4-D [B, H, S, D]; got {qs:?}, {ks:?}, {vs:?}")));
    }
    if ks != vs || qs[0] != ks[0] || qs[3] != ks[3] {
        return Err(KernelError::Invalid(format!("q {qs:?} and k/v {ks:?}/{vs:?} disagree on B, D or shape")));
    }
    if ks[1] == 0 || qs[1] % ks[1] != 0 {
        return Err(KernelError::Invalid(format!("query heads {} are not a multiple of KV heads {}", qs[1], ks[1])));
    }
    if mask.seqlen_q as i64 != qs[2] || mask.seqlen_k as i64 != ks[2] {
        return Err(KernelError::Invalid(format!("mask is {}×{} but q has {} rows and k {} keys", mask.seqlen_q, mask.seqlen_k, qs[2], ks[2])));
    }
    Ok(Dims { b: qs[0], hq: qs[1], hkv: ks[1], sq: qs[2], sk: ks[2], d: qs[3] })
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Inputs and obviously-correct references shared by the core's tests.
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tch::{Device, Kind, Tensor};

    use crate::mask::{Mask, Slice, SliceKind};

    /// Obviously-correct f64 attention with a dense mask, differentiable through autograd.
    pub fn dense_ref(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask, scale: f64) -> (Tensor, Tensor) {
        let (hq, hkv) = (q.size()[1], k.size()[1]);
        let k = k.repeat_interleave_self_int(hq / hkv, 1, None);
        let v = v.repeat_interleave_self_int(hq / hkv, 1, None);
        let dense: Vec<u8> = mask.to_dense().into_iter().map(u8::from).collect();
        let m = Tensor::from_slice(&dense).reshape([mask.seqlen_q as i64, mask.seqlen_k as i64]).to_kind(Kind::Bool);
        let s = q.matmul(&k.transpose(-1, -2)) * scale;
        let s = s.masked_fill(&m.logical_not(), f64::NEG_INFINITY);
        let lse = s.logsumexp([-1], false);
        let p = (s - lse.masked_fill(&lse.isinf(), 0.0).unsqueeze(-1)).exp();
        (p.matmul(&v), lse)
    }

    pub fn rand_qkv(b: i64, hq: i64, hkv: i64, sq: i64, sk: i64, d: i64, seed: i64) -> (Tensor, Tensor, Tensor) {
        let o = (Kind::Double, Device::Cpu);
        crate::sys::rng::with_seed(seed as u64, || (Tensor::randn([b, hq, sq, d], o), Tensor::randn([b, hkv, sk, d], o), Tensor::randn([b, hkv, sk, d], o)))
    }

    /// A random valid mask built from a random grid: each cell of a random partition of the rectangle
    /// gets a random kind or nothing — several slices of each kind, so several groups.
    pub fn random_mask(sq: usize, sk: usize, seed: u64) -> Mask {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let cuts = |n: usize, rng: &mut ChaCha8Rng| {
            let mut c: Vec<usize> = (0..3).map(|_| rng.gen_range(1..n)).collect();
            c.push(0);
            c.push(n);
            c.sort_unstable();
            c.dedup();
            c
        };
        let (qc, kc) = (cuts(sq, &mut rng), cuts(sk, &mut rng));
        let mut slices = Vec::new();
        for qw in qc.windows(2) {
            for kw in kc.windows(2) {
                let r: usize = rng.gen_range(0..6);
                if r < 4 {
                    slices.push(Slice::new(qw[0]..qw[1], kw[0]..kw[1], SliceKind::ALL[r]));
                }
            }
        }
        Mask::rect(sq, sk, slices).unwrap()
    }

    /// One slice of each kind, two of some, rectangular ones included.
    pub fn mask_all_kinds() -> Mask {
        Mask::rect(
            40,
            44,
            vec![
                Slice::new(0..10, 0..10, SliceKind::Causal),
                Slice::new(10..25, 0..20, SliceKind::Causal),
                Slice::new(0..12, 20..30, SliceKind::InvCausal),
                Slice::new(25..40, 0..9, SliceKind::InvCausal),
                Slice::new(12..20, 20..34, SliceKind::BiCausal),
                Slice::new(30..36, 30..44, SliceKind::Full),
                Slice::new(36..40, 30..40, SliceKind::BiCausal),
            ],
        )
        .unwrap()
    }

    /// The slices of [`mask_all_kinds`] that a memory-efficient or cuDNN varlen call takes (full and
    /// causal, square and rectangular; no inverse- or bi-causal), with rows left empty on purpose.
    pub fn mask_full_and_causal_kinds() -> Mask {
        Mask::rect(
            40,
            44,
            vec![
                Slice::new(0..10, 0..10, SliceKind::Causal),
                Slice::new(10..25, 0..20, SliceKind::Causal),
                Slice::new(30..36, 30..44, SliceKind::Full),
            ],
        )
        .unwrap()
    }

    /// The first head group's mask of a zoo pattern.
    pub fn zoo(name: &str, s: usize, kv: &[(&str, &str)]) -> Mask {
        let p = kv.iter().fold(crate::mask::Params::new(), |p, (k, v)| p.set(k, v));
        crate::mask::build_pattern(name, s, &p).unwrap().groups.remove(0)
    }

    pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }
}
