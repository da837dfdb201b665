//! Tensor files between attnbench and a worker (safetensors, through tch): the inputs a `file`-mode
//! worker reads, the outputs a worker writes for the gate, and the comparisons made on them.

use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::attn::KernelError;
use crate::backend::reference::reference_attention;
use crate::backend::{Fwd, Inputs, Kernel};
use crate::flops::Pass;

/// Writes q, k, v, dout (in the case dtype, on the CPU) for a worker that reads its inputs.
pub fn write_inputs(x: &Inputs, path: &Path) -> Result<(), KernelError> {
    let cpu = |t: &Tensor| -> Result<Tensor, KernelError> { Ok(t.f_detach()?.f_to_device(tch::Device::Cpu)?.f_contiguous()?) };
    let named = [("q", cpu(&x.q)?), ("k", cpu(&x.k)?), ("v", cpu(&x.v)?), ("dout", cpu(&x.dout)?)];
    Ok(Tensor::write_safetensors(&named, path)?)
}

/// Every tensor of a safetensors file, by name.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>, String> {
    Tensor::read_safetensors(path).map(|v| v.into_iter().collect()).map_err(|e| format!("reading the worker's tensor file: {e}"))
}

fn take(ts: &mut HashMap<String, Tensor>, name: &str, shape: &[i64]) -> Result<Tensor, String> {
    let t = ts.remove(name).ok_or_else(|| format!("the worker's output file has no `{name}`"))?;
    if t.size() != shape {
        return Err(format!("the worker's `{name}` has shape {:?}, expected {shape:?}", t.size()));
    }
    if !matches!(t.kind(), Kind::BFloat16 | Kind::Half | Kind::Float | Kind::Double) {
        return Err(format!("the worker's `{name}` is {:?}, expected a floating-point tensor", t.kind()));
    }
    Ok(t)
}

/// A worker's outputs, as the gate wants them: full-size standard-layout tensors (rows the worker did not
/// write, because the gate does not look at them, are zero).
pub struct Outputs {
    pub out: Tensor,
    /// The LSE of the checked rows `[B, Hq, R]`, when the worker returned it.
    pub lse_rows: Option<Tensor>,
    pub grads: Option<(Tensor, Tensor, Tensor)>,
}

/// Reads and validates the outputs file of a `check` request for `rows` (None = all rows).
pub fn read_outputs(path: &Path, x: &Inputs, pass: Pass, rows: Option<&[i64]>) -> Result<Outputs, String> {
    let mut ts = read_tensors(path)?;
    let (q, k) = (x.q.size(), x.k.size());
    let (b, hq, s, d, hkv) = (q[0], q[1], q[2], q[3], k[1]);
    let r = rows.map_or(s, |r| r.len() as i64);
    let full = |t: Tensor| -> Result<Tensor, String> {
        match rows {
            None => Ok(t),
            Some(rows) => {
                let mut shape = t.size();
                shape[2] = s;
                let idx = Tensor::from_slice(rows);
                Tensor::f_zeros(&shape, (t.kind(), tch::Device::Cpu)).and_then(|z| z.f_index_copy(2, &idx, &t)).map_err(|e| e.to_string())
            }
        }
    };
    let out = full(take(&mut ts, "out", &[b, hq, r, d])?)?;
    let lse_rows = if ts.contains_key("lse") { Some(take(&mut ts, "lse", &[b, hq, r])?) } else { None };
    let grads = if pass.includes_backward() {
        let dq = full(take(&mut ts, "dq", &[b, hq, r, d])?)?;
        let (dk, dv) = if rows.is_none() {
            (take(&mut ts, "dk", &[b, hkv, s, d])?, take(&mut ts, "dv", &[b, hkv, s, d])?)
        } else {
            // Not checked on a row subsample (they depend on every row).
            (Tensor::zeros([0], (Kind::Float, tch::Device::Cpu)), Tensor::zeros([0], (Kind::Float, tch::Device::Cpu)))
        };
        Some((dq, dk, dv))
    } else {
        None
    };
    Ok(Outputs { out, lse_rows, grads })
}

/// The worker's outputs behind the [`Kernel`] interface, so the harness's unchanged correctness gate
/// judges an external kernel exactly as it judges a built-in one.
pub struct Recorded(pub Outputs);

impl Kernel for Recorded {
    fn forward(&mut self, _x: &Inputs) -> Result<Fwd, KernelError> {
        Ok(Fwd { out: self.0.out.shallow_clone(), lse: None })
    }
    fn backward(&mut self, _x: &Inputs, _fwd: &Fwd) -> Result<(Tensor, Tensor, Tensor), KernelError> {
        let (a, b, c) = self.0.grads.as_ref().ok_or_else(|| KernelError::Invalid("the worker returned no gradients".into()))?;
        Ok((a.shallow_clone(), b.shallow_clone(), c.shallow_clone()))
    }
    fn note(&self) -> String {
        String::new()
    }
    fn cpu_bytes(&self, _x: &Inputs, _pass: Pass) -> u64 {
        0
    }
}

/// Compares the worker's LSE of the checked rows with the f64 reference's: −∞ exactly where the
/// reference row attends nothing, elsewhere max |error| / max(1, max |reference|) ≤ `tol`. Returns
/// (passed, max abs error over finite entries).
pub fn check_lse(x: &Inputs, rows: Option<&[i64]>, lse: &Tensor, tol: f64) -> Result<(bool, f64), KernelError> {
    let f64cpu = |t: &Tensor| -> Result<Tensor, KernelError> { Ok(t.f_detach()?.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Double)?) };
    let (_, want) = reference_attention(&f64cpu(&x.q)?, &f64cpu(&x.k)?, &f64cpu(&x.v)?, &x.masks, x.scale, rows)?;
    let got = f64cpu(lse)?;
    let want_empty = want.f_isneginf()?;
    let got_empty = got.f_isneginf()?;
    let same_empty = want_empty.f_eq_tensor(&got_empty)?.f_all()?.int64_value(&[]) == 1;
    let finite = want_empty.f_logical_not()?;
    let diff = got.f_sub(&want)?.f_abs()?.f_nan_to_num(f64::INFINITY, f64::INFINITY, f64::INFINITY)?.f_masked_fill(&want_empty, 0.0)?;
    let err = diff.f_max()?.double_value(&[]);
    let scale = want.f_masked_fill(&want_empty, 0.0)?.f_abs()?.f_max()?.double_value(&[]).max(1.0);
    let any_finite = finite.f_any()?.int64_value(&[]) == 1;
    let err = if any_finite { err } else { 0.0 };
    Ok((same_empty && !(err / scale).is_nan() && err / scale <= tol, err))
}

/// Bitwise equality of two tensors (same shape, dtype and bytes). `Err` says what differs.
pub fn bitwise_equal(name: &str, ours: &Tensor, theirs: &Tensor) -> Result<(), String> {
    if ours.size() != theirs.size() || ours.kind() != theirs.kind() {
        return Err(format!("{name}: attnbench {:?} {:?}, worker {:?} {:?}", ours.size(), ours.kind(), theirs.size(), theirs.kind()));
    }
    let bytes = |t: &Tensor| -> Result<Vec<u8>, String> {
        let t = t.f_to_device(tch::Device::Cpu).and_then(|t| t.f_contiguous()).map_err(|e| e.to_string())?;
        let n = t.numel() * t.kind().elt_size_in_bytes();
        let mut v = vec![0u8; n];
        t.f_copy_data_u8(&mut v, t.numel()).map_err(|e| e.to_string())?;
        Ok(v)
    };
    let (a, b) = (bytes(ours)?, bytes(theirs)?);
    if a == b {
        return Ok(());
    }
    let es = ours.kind().elt_size_in_bytes();
    let differ = a.chunks(es).zip(b.chunks(es)).filter(|(x, y)| x != y).count();
    let first = a.chunks(es).zip(b.chunks(es)).position(|(x, y)| x != y).unwrap_or(0);
    Err(format!("{name}: {differ} of {} elements differ (first at flat index {first})", ours.numel()))
}
