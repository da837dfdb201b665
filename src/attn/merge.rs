//! The one LSE merge. Partial attention results over disjoint key sets of the same query rows combine
//! exactly: lse = logaddexp(lse₁, lse₂), out = out₁·exp(lse₁ − lse) + out₂·exp(lse₂ − lse). Used by the
//! dense path (pieces of a mask), the varlen path (groups of slices) and every CP strategy (blocks of a
//! ring) — always through [`merge_into`].
//!
//! −inf-safe: a row empty in both stays (0, −inf); a row empty in one takes the other.

use tch::{Kind, Tensor};

use super::{acc_kind, finite_or_zero, KernelError};

/// Merges `part_out` / `part_lse` into `out` / `lse` in place. `out` and `lse` are in the accumulation
/// dtype (f32, f64 for f64) and may be views (rows of a larger result); `part_out` may be in any float
/// dtype (read once by `addcmul_`), `part_lse` in the accumulation dtype. Shapes: `lse` is `out`
/// without its last dimension (`[B, H, S]` for `[B, H, S, D]`, or `[T, H]` for packed `[T, H, D]`).
///
/// Traffic per output element: `mul_` (2a) and `addcmul_` (2a + e) — (4a + e) bytes for accumulation
/// size a and partial size e (18 for bf16, 20 for f32), plus O(1) per row for the LSE.
pub fn merge_into(out: &mut Tensor, lse: &mut Tensor, part_out: &Tensor, part_lse: &Tensor) -> Result<(), KernelError> {
    let merged = lse.f_logaddexp(part_lse)?;
    let safe = finite_or_zero(&merged)?;
    let w_run = lse.f_sub(&safe)?.f_exp()?.f_unsqueeze(-1)?;
    let w_part = part_lse.f_sub(&safe)?.f_exp()?.f_unsqueeze(-1)?;
    let _ = out.f_mul_(&w_run)?;
    let _ = out.f_addcmul_(part_out, &w_part)?;
    lse.f_copy_(&merged)?;
    Ok(())
}

/// Two partial results merged into a new one: out in `o1`'s dtype, lse in the accumulation dtype.
pub fn merge_partials(o1: &Tensor, lse1: &Tensor, o2: &Tensor, lse2: &Tensor) -> Result<(Tensor, Tensor), KernelError> {
    let acc = acc_kind(o1.kind());
    // Copies (never the inputs themselves): the merge is in place.
    let (mut out, mut lse) = (o1.f_to_dtype(acc, false, true)?, lse1.f_to_dtype(acc, false, true)?);
    merge_into(&mut out, &mut lse, o2, &lse2.f_to_kind(acc)?)?;
    Ok((out.f_to_kind(o1.kind())?, lse))
}

#[cfg(feature = "test-hooks")]
thread_local! {
    /// (calls, output elements) of `RunningMerge::add` on this thread: lets tests compare the merges a
    /// rank (one thread of a local world) really ran with the simulator's glue model of them.
    pub static MERGES_ON_THIS_THREAD: std::cell::Cell<(usize, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// The running result of a block of rows over successive disjoint key blocks (a ring's steps). It
/// stays in the accumulation dtype between steps and each partial is merged in place
/// ([`merge_into`]); the cast to the input dtype happens once, in [`RunningMerge::finish`]. (Casting up,
/// merging and casting back at every step would move 3e + 10a bytes per element: 46 for bf16.)
pub struct RunningMerge {
    out: Tensor,
    lse: Tensor,
}

impl RunningMerge {
    /// Empty result (out 0, lse −inf) for `[b, h, s, d]` rows of inputs of `kind`.
    pub fn new(b: i64, h: i64, s: i64, d: i64, kind: Kind, device: tch::Device) -> Result<Self, KernelError> {
        let acc = acc_kind(kind);
        Ok(RunningMerge { out: Tensor::f_zeros([b, h, s, d], (acc, device))?, lse: Tensor::f_full([b, h, s], f64::NEG_INFINITY, (acc, device))? })
    }

    /// Merges one partial (out `[b, h, s, d]` in any float dtype, lse `[b, h, s]` in the
    /// accumulation dtype) into the running result.
    pub fn add(&mut self, part_out: &Tensor, part_lse: &Tensor) -> Result<(), KernelError> {
        #[cfg(feature = "test-hooks")]
        MERGES_ON_THIS_THREAD.with(|c| {
            let (n, e) = c.get();
            c.set((n + 1, e + part_out.numel() as u64));
        });
        merge_into(&mut self.out, &mut self.lse, part_out, part_lse)
    }

    /// The result: out in `kind` (one cast), lse in the accumulation dtype.
    pub fn finish(self, kind: Kind) -> Result<(Tensor, Tensor), KernelError> {
        Ok((self.out.f_to_kind(kind)?, self.lse))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// The in-place running merge equals pairwise `merge_partials` (f64 exactly; bf16 partials with an
    /// f32 accumulator to f32 rounding, better than re-rounding to bf16 each step), empty rows included.
    #[test]
    fn running_merge_matches_pairwise_merges() {
        for kind in [Kind::Double, Kind::BFloat16] {
            let acc = acc_kind(kind);
            let parts: Vec<(Tensor, Tensor)> = (0..4)
                .map(|i| {
                    let o = crate::sys::rng::randn([2, 3, 5, 8], (Kind::Double, Device::Cpu)).unwrap().to_kind(kind);
                    let l = crate::sys::rng::randn([2, 3, 5], (Kind::Double, Device::Cpu)).unwrap().to_kind(acc);
                    // Row 4 is empty in every block, row 3 in all but the last.
                    let _ = l.narrow(2, 4, 1).fill_(f64::NEG_INFINITY);
                    if i < 3 {
                        let _ = l.narrow(2, 3, 1).fill_(f64::NEG_INFINITY);
                    }
                    (o, l)
                })
                .collect();
            let mut run = RunningMerge::new(2, 3, 5, 8, kind, Device::Cpu).unwrap();
            for (o, l) in &parts {
                run.add(o, l).unwrap();
            }
            let (ro, rl) = run.finish(acc).unwrap();
            let (mut po, mut pl) = (parts[0].0.to_kind(acc), parts[0].1.shallow_clone());
            for (o, l) in &parts[1..] {
                (po, pl) = merge_partials(&po, &pl, &o.to_kind(acc), l).unwrap();
            }
            let tol = if kind == Kind::Double { 1e-12 } else { 1e-5 };
            assert!(max_diff(&ro, &po) < tol && max_diff(&rl.nan_to_num(0.0, None, None), &pl.nan_to_num(0.0, None, None)) < tol, "{kind:?}");
            assert!(rl.narrow(2, 4, 1).isinf().all().int64_value(&[]) == 1);
            assert_eq!(ro.narrow(2, 4, 1).abs().sum(Kind::Double).double_value(&[]), 0.0);
        }
    }

    #[test]
    fn merge_partials_handles_empty_rows() {
        let o1 = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 0.0, 0.0]).reshape([1, 1, 3, 2]);
        let o2 = Tensor::from_slice(&[5.0f32, 6.0, 0.0, 0.0, 0.0, 0.0]).reshape([1, 1, 3, 2]);
        let ninf = f32::NEG_INFINITY;
        let l1 = Tensor::from_slice(&[0.0f32, 1.0, ninf]).reshape([1, 1, 3]);
        let l2 = Tensor::from_slice(&[0.0f32, ninf, ninf]).reshape([1, 1, 3]);
        let (o, l) = merge_partials(&o1, &l1, &o2, &l2).unwrap();
        let o: Vec<f32> = o.flatten(0, -1).try_into().unwrap();
        let l: Vec<f32> = l.flatten(0, -1).try_into().unwrap();
        // Row 0: equal weights → mean; row 1: only block 1; row 2: empty in both → (0, −inf).
        assert_eq!(o, vec![3.0, 4.0, 3.0, 4.0, 0.0, 0.0]);
        assert!((l[0] - 2f32.ln()).abs() < 1e-6 && l[1] == 1.0 && l[2] == ninf);
        // The inputs are untouched (merge_partials works on copies).
        assert_eq!(Vec::<f32>::try_from(o1.flatten(0, -1)).unwrap(), vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0]);
    }
}
