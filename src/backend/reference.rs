//! `reference`: obviously-correct attention in f64 on the CPU — a dense boolean mask, `QKᵀ·scale`,
//! `−inf` outside the mask, log-sum-exp, `softmax·V`, GQA by repeating KV heads — differentiated by
//! autograd. It is what the correctness gate compares every backend against, on all rows when the
//! score matrix fits [`SCORE_BUDGET`] and on a deterministic subsample of query rows otherwise.

use tch::{Device, Kind, Tensor};

use super::{Backend, Fwd, Inputs, Kernel};
use crate::attn::KernelError;
use crate::case::{Case, DeviceKind};
use crate::flops::Pass;
use crate::mask::{HeadMasks, Mask};

/// Largest score matrix (B · Hq · rows · S entries, f64) the reference materialises: 2²⁴ = 128 MiB.
pub const SCORE_BUDGET: u64 = 1 << 24;

/// Boolean `[rows.len(), S_k]` rows of a mask, without materialising the whole mask.
pub fn mask_rows(m: &Mask, rows: &[i64]) -> Tensor {
    let sk = m.seqlen_k;
    let mut d = vec![0u8; rows.len() * sk];
    for (r, &i) in rows.iter().enumerate() {
        let i = i as usize;
        for s in m.slices() {
            if s.q.contains(&i) {
                if let Some((lo, hi)) = s.row_keys(i - s.q.start) {
                    d[r * sk + s.k.start + lo..=r * sk + s.k.start + hi].fill(1);
                }
            }
        }
    }
    Tensor::from_slice(&d).reshape([rows.len() as i64, sk as i64]).to_kind(Kind::Bool)
}

/// Reference attention for the query rows `rows` (all when `None`). q, k, v must be f64 on the CPU;
/// differentiable. Returns (out `[B, Hq, R, D]`, lse `[B, Hq, R]`, −inf for empty rows whose out is 0).
pub fn reference_attention(q: &Tensor, k: &Tensor, v: &Tensor, masks: &HeadMasks, scale: f64, rows: Option<&[i64]>) -> Result<(Tensor, Tensor), KernelError> {
    let s = q.size()[2];
    let all: Vec<i64> = (0..s).collect();
    let rows = rows.unwrap_or(&all);
    let qr = q.f_index_select(2, &Tensor::from_slice(rows).f_to_device(q.device())?)?;
    reference_rows(&qr, k, v, masks, scale, rows)
}

/// Reference attention of the query rows `qr` `[B, Hq, R, D]`, which are rows `rows` of the problem,
/// against all keys: the gate calls it chunk by chunk, on the inputs' device. Only an `[R, S_k]` boolean
/// mask per head group is built (never the dense S×S one), and GQA is a broadcast over the KV heads'
/// query groups (K and V are not repeated). q, k, v of one float kind on one device; differentiable.
pub fn reference_rows(qr: &Tensor, k: &Tensor, v: &Tensor, masks: &HeadMasks, scale: f64, rows: &[i64]) -> Result<(Tensor, Tensor), KernelError> {
    let (b, hq, r, d) = (qr.size()[0], qr.size()[1], qr.size()[2], qr.size()[3]);
    let (hkv, sk) = (k.size()[1], k.size()[2]);
    let g = hq / hkv;
    let per = hq as usize / masks.groups.len();
    let m = Tensor::f_stack(&masks.groups.iter().map(|grp| mask_rows(grp, rows)).collect::<Vec<_>>(), 0)?
        .f_to_device(qr.device())?
        .f_repeat_interleave_self_int(per as i64, 0, None)?
        .f_reshape([1, hkv, g, r, sk])?;
    let q5 = qr.f_reshape([b, hkv, g, r, d])?;
    let scores = q5.f_matmul(&k.f_unsqueeze(2)?.f_transpose(-1, -2)?)?.f_mul_scalar(scale)?.f_masked_fill(&m.f_logical_not()?, f64::NEG_INFINITY)?;
    let lse = scores.f_logsumexp([-1], false)?;
    let safe = lse.f_masked_fill(&lse.f_isinf()?, 0.0)?.f_detach()?;
    // exp(s − lse) with the detached finite lse gives the same values; softmax's gradient is kept by
    // normalising explicitly.
    let p = scores.f_sub(&safe.f_unsqueeze(-1)?)?.f_exp()?;
    let denom = p.f_sum_dim_intlist(&[-1i64][..], true, qr.kind())?;
    let denom = denom.f_masked_fill(&denom.f_eq(0.0)?, 1.0)?;
    let out = p.f_div(&denom)?.f_matmul(&v.f_unsqueeze(2)?)?;
    Ok((out.f_reshape([b, hq, r, d])?, lse.f_reshape([b, hq, r])?))
}

pub struct Reference;
pub static REFERENCE: Reference = Reference;

struct RefKernel {
    leaves: Option<(Tensor, Tensor, Tensor, Tensor)>,
}

impl Backend for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }
    fn summary(&self) -> &'static str {
        "f64 dense masked softmax on the CPU, autograd backward (the correctness oracle)"
    }
    fn supports(&self, case: &Case, _m: &HeadMasks) -> Result<(), String> {
        if case.device != DeviceKind::Cpu {
            return Err("reference runs on the CPU only (it is the f64 oracle)".into());
        }
        Ok(())
    }
    fn autograd(&self) -> bool {
        false
    }
    fn prepare(&self, _case: &Case, _x: &Inputs) -> Result<Box<dyn Kernel>, KernelError> {
        Ok(Box::new(RefKernel { leaves: None }))
    }
}

impl Kernel for RefKernel {
    fn forward(&mut self, x: &Inputs) -> Result<Fwd, KernelError> {
        let leaf = |t: &Tensor| -> Result<Tensor, KernelError> { Ok(t.f_detach()?.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?.set_requires_grad(true)) };
        let (q, k, v) = (leaf(&x.q)?, leaf(&x.k)?, leaf(&x.v)?);
        let (out, lse) = reference_attention(&q, &k, &v, &x.masks, x.scale, None)?;
        let res = out.f_detach()?.f_to_kind(x.q.kind())?.f_to_device(x.q.device())?;
        self.leaves = Some((q, k, v, out));
        Ok(Fwd { out: res, lse: Some(lse.f_detach()?.f_to_kind(Kind::Float)?) })
    }
    fn backward(&mut self, x: &Inputs, _f: &Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        let (q, k, v, out) = self.leaves.as_ref().ok_or_else(|| KernelError::Invalid("backward before forward".into()))?;
        let loss = out.f_mul(&x.dout.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?)?.f_sum(Kind::Double)?;
        let g = Tensor::f_run_backward(&[&loss], &[q, k, v], true, false)?;
        let c = |t: &Tensor, like: &Tensor| -> Result<Tensor, KernelError> { Ok(t.f_to_kind(like.kind())?.f_to_device(like.device())?) };
        Ok((c(&g[0], &x.q)?, c(&g[1], &x.k)?, c(&g[2], &x.v)?))
    }
    fn note(&self) -> String {
        "f64 dense mask, GQA by repeating KV heads, autograd backward".into()
    }
    fn cpu_bytes(&self, x: &Inputs, pass: Pass) -> u64 {
        let s = x.q.size();
        let scores = (s[0] * s[1] * s[2] * s[2]) as u64 * 8;
        // scores, masked scores, p, normalised p (+ their gradients in the backward).
        if pass == Pass::Fwd {
            4 * scores
        } else {
            8 * scores
        }
    }
}
