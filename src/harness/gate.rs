//! The correctness gate: before a case is timed, its backend runs once at the real size and is compared
//! with the f64 [`reference`](crate::backend::reference) on the same (rounded) inputs. Failure → status `wrong`
//! with `max_abs_err`, and no timing.
//!
//! Coverage: every query row when B · Hq · S² ≤ [`SCORE_BUDGET`](crate::backend::reference::SCORE_BUDGET),
//! otherwise a deterministic, evenly spaced subsample of query rows (first and last included). Each
//! output row and each dQ row depends only on its own row, so the subsample checks them exactly; dK and
//! dV need all rows and are checked only in the full case (the row's note says so).
//!
//! Tolerance: the max absolute error of each tensor, divided by max(1, max |reference|) of that tensor,
//! must stay below the dtype's bound — out: fp64 1e-7, fp32 2e-3 (room for TF32 and blocked sums),
//! fp16 1e-2, bf16 4e-2 (a few units in the last place of an O(1) value); gradients: twice that, as they
//! sum over many keys or rows.

use tch::{Device, Kind, Tensor};

use crate::attn::KernelError;
use crate::backend::reference::{reference_attention, SCORE_BUDGET};
use crate::backend::{Fwd, Inputs, Kernel};
use crate::case::DType;
use crate::flops::Pass;

/// What the gate found.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub passed: bool,
    /// Max absolute error over out (and dq/dk/dv for a backward), unnormalised.
    pub max_abs_err: f64,
    /// Which tensor was worst and what was covered.
    pub detail: String,
}

/// Normalised bound for (out, gradients) in `dtype`.
pub fn tolerance(dtype: DType) -> (f64, f64) {
    let out = match dtype {
        DType::Fp64 => 1e-7,
        DType::Fp32 => 2e-3,
        DType::Fp16 => 1e-2,
        DType::Bf16 => 4e-2,
    };
    (out, 2.0 * out)
}

/// The query rows checked: all when they fit the budget, else `n` evenly spaced rows.
pub fn check_rows(batch: usize, heads_q: usize, seqlen: usize) -> Option<Vec<i64>> {
    let per_row = (batch * heads_q * seqlen) as u64;
    if per_row * seqlen as u64 <= SCORE_BUDGET {
        return None;
    }
    let n = (SCORE_BUDGET / per_row.max(1)).clamp(2, seqlen as u64) as usize;
    let mut rows: Vec<i64> = (0..n).map(|r| (r * (seqlen - 1) / (n - 1)) as i64).collect();
    rows.dedup();
    Some(rows)
}

fn f64cpu(t: &Tensor) -> Result<Tensor, KernelError> {
    Ok(t.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?)
}

/// Runs `kernel` once (forward, plus backward when `pass` has one) and compares with the reference.
pub fn gate(kernel: &mut dyn Kernel, x: &Inputs, pass: Pass, dtype: DType) -> Result<CheckOutcome, KernelError> {
    let raw = kernel.forward(x)?;
    let grads = if pass.includes_backward() {
        let g = kernel.backward(x, &raw)?;
        Some(kernel.standard_grads(g)?)
    } else {
        None
    };
    let fwd = Fwd { out: kernel.standard_out(&raw)?, lse: None };
    let s = x.q.size();
    let rows = check_rows(s[0] as usize, s[1] as usize, s[2] as usize);
    let (q, k, v) = (f64cpu(&x.q)?.set_requires_grad(true), f64cpu(&x.k)?.set_requires_grad(true), f64cpu(&x.v)?.set_requires_grad(true));
    let (ro, _) = reference_attention(&q, &k, &v, &x.masks, x.scale, rows.as_deref())?;
    let sel = |t: &Tensor| -> Result<Tensor, KernelError> {
        let t = f64cpu(t)?;
        Ok(match &rows {
            Some(r) => t.f_index_select(2, &Tensor::from_slice(r))?,
            None => t,
        })
    };
    let (tol_out, tol_grad) = tolerance(dtype);
    let mut worst = (0.0f64, 0.0f64, "out"); // (abs err, normalised err, which)
    let mut passed = true;
    let mut compare = |name: &'static str, got: &Tensor, want: &Tensor, tol: f64| -> Result<(), KernelError> {
        let err = got.f_sub(want)?.f_abs()?.f_nan_to_num(f64::INFINITY, f64::INFINITY, f64::INFINITY)?.f_max()?.double_value(&[]);
        let scale = want.f_abs()?.f_max()?.double_value(&[]).max(1.0);
        let norm = err / scale;
        if norm.is_nan() || norm > tol {
            passed = false;
        }
        if norm > worst.1 || err.is_nan() {
            worst = (err, norm, name);
        }
        Ok(())
    };
    compare("out", &sel(&fwd.out)?, &ro, tol_out)?;
    let mut covered = "out".to_string();
    if let Some((dq, dk, dv)) = &grads {
        let dout = sel(&x.dout)?;
        let loss = ro.f_mul(&dout)?.f_sum(Kind::Double)?;
        let g = Tensor::f_run_backward(&[&loss], &[&q, &k, &v], false, false)?;
        let rdq = match &rows {
            Some(r) => g[0].f_index_select(2, &Tensor::from_slice(r))?,
            None => g[0].shallow_clone(),
        };
        compare("dq", &sel(dq)?, &rdq, tol_grad)?;
        covered.push_str(", dq");
        if rows.is_none() {
            compare("dk", &f64cpu(dk)?, &g[1], tol_grad)?;
            compare("dv", &f64cpu(dv)?, &g[2], tol_grad)?;
            covered.push_str(", dk, dv");
        }
    }
    let coverage = match &rows {
        Some(r) => format!("checked {covered} on {} of {} query rows", r.len(), s[2]),
        None => format!("checked {covered} on all rows"),
    };
    Ok(CheckOutcome { passed, max_abs_err: worst.0, detail: format!("{coverage}; worst {} (normalised {:.2e})", worst.2, worst.1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_subsample_is_deterministic_and_bounded() {
        assert_eq!(check_rows(1, 8, 1024), None);
        let r = check_rows(1, 8, 8192).unwrap();
        assert_eq!(r.first(), Some(&0));
        assert_eq!(r.last(), Some(&8191));
        assert!((r.len() as u64) * 8 * 8192 <= SCORE_BUDGET);
        assert_eq!(r, check_rows(1, 8, 8192).unwrap());
    }
}
