//! Peak memory per GPU of a candidate: an **estimate** (a formula, nothing measured), of attention's
//! working set only — the model's weights, other activations and optimizer state are not in it, which
//! is why `--mem-per-gpu` is the memory left for attention.
//!
//! Terms: the rank's own q, K, V, out (and dout, dq, dK, dV for a backward), as the suite's memory
//! estimate counts them for a kernel case of the rank's share of tokens
//! ([`crate::suite::memory::estimate`], the correctness gate left out); plus what the strategy holds
//! at its peak:
//! - ring strategies (ring-p2p, zigzag, double-ring, the ring of usp): two K/V blocks in flight (the
//!   one computed on and the one arriving), the f32 running output and LSE; backward: the f32 dq, dK,
//!   dV accumulators and one dK/dV block in flight;
//! - ring-allgather: the gathered K and V of the whole sequence (backward: their f32 gradients);
//! - ulysses / usp (degree U): after the all-to-all a rank holds U × its tokens for Hq/U query heads
//!   and ⌈Hkv/U⌉ K/V heads (K/V repeated when U does not divide Hkv), plus its output (and the
//!   gradients of all of these for a backward).

use super::candidates::Layout;
use super::input::Plan;
use crate::case::{Case, DeviceKind};
use crate::measure::MeasureSettings;

/// Bytes per GPU and the terms, e.g. `rank tensors 96.0 MiB + K/V in flight 64.0 MiB`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemEstimate {
    pub bytes: u64,
    pub detail: String,
}

pub fn estimate(plan: &Plan, layout: &Layout) -> MemEstimate {
    let w = plan.world as u64;
    let local = (plan.seqlen / plan.world) as u64;
    let (hq, hkv, d, e) = (plan.heads.q as u64, plan.heads.kv as u64, plan.head_dim as u64, plan.dtype.size() as u64);
    let bwd = plan.pass.includes_backward();
    // The rank's own tensors, by the suite's estimate for a kernel case of `local` tokens.
    let mask = &plan.masks[0];
    let case = Case::kernel("sliced", &mask.pattern, mask.params.clone(), local as usize, plan.heads, plan.head_dim, plan.dtype, plan.pass, DeviceKind::Cuda);
    let settings = MeasureSettings { check: false, ..MeasureSettings::default() };
    let own = crate::suite::memory::estimate(&case, &settings, 1).device;
    let mut terms: Vec<(&str, u64)> = vec![("rank tensors", own)];
    let f32b = 4u64;
    let ring_terms = |terms: &mut Vec<(&str, u64)>, tokens: u64, qh: u64, kvh: u64| {
        terms.push(("K/V in flight", 2 * 2 * kvh * tokens * d * e));
        terms.push(("f32 out + LSE", qh * tokens * d * f32b + qh * tokens * f32b));
        if bwd {
            terms.push(("f32 dq/dK/dV", (qh + 2 * kvh) * tokens * d * f32b));
            terms.push(("dK/dV in flight", 2 * kvh * tokens * d * e));
        }
    };
    match layout.strategy.as_str() {
        // One GPU, the kernel alone: its own tensors only.
        super::candidates::SINGLE_GPU => {}
        "ring-allgather" => {
            terms.push(("gathered K/V", 2 * hkv * local * w * d * e));
            if bwd {
                terms.push(("f32 gathered dK/dV", 2 * hkv * local * w * d * f32b));
            }
        }
        "ulysses" | "usp" => {
            let u = if layout.strategy == "ulysses" { w } else { layout.options.ulysses_degree.unwrap_or(1) as u64 };
            let tokens = local * u;
            let qh = hq.div_ceil(u);
            let kvh = hkv.div_ceil(u);
            let head_sharded = (2 * qh + 2 * kvh) * tokens * d * e;
            terms.push(("head-sharded q/K/V/out", head_sharded * if bwd { 2 } else { 1 }));
            if layout.strategy == "usp" && u < w {
                ring_terms(&mut terms, tokens, qh, kvh);
            }
        }
        _ => ring_terms(&mut terms, local, hq, hkv),
    }
    let bytes = terms.iter().map(|t| t.1).sum();
    let detail = terms.iter().map(|(n, b)| format!("{n} {}", crate::suite::memory::human(*b))).collect::<Vec<_>>().join(" + ");
    MemEstimate { bytes, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advise::input::Request;
    use crate::case::CpOptions;

    fn plan(pass: &str) -> Plan {
        Request { mask: vec!["causal".into()], world_size: Some(8), seqlen_per_rank: Some(8192), pass: Some(pass.into()), ..Request::default() }.plan().unwrap()
    }
    fn layout(s: &str, u: Option<usize>) -> Layout {
        Layout { strategy: s.into(), options: CpOptions { ulysses_degree: u, ..CpOptions::default() }, invalid: None }
    }

    #[test]
    fn allgather_holds_the_whole_sequence_of_kv_and_backward_costs_more() {
        let p = plan("fwd");
        let ring = estimate(&p, &layout("ring-p2p", None)).bytes;
        let ag = estimate(&p, &layout("ring-allgather", None));
        // 64:8 heads, D 128, bf16, 8K tokens per GPU: the suite's estimate counts q, dout, out and K, V
        // = (3·64 + 2·8)·8192·128·2 B.
        let own = (3 * 64 + 2 * 8) * 8192 * 128 * 2;
        let gathered = 2 * 8 * 8192 * 8 * 128 * 2;
        assert_eq!(ag.bytes, own + gathered, "{}", ag.detail);
        assert!(ag.detail.contains("gathered K/V"));
        assert!(ring > own);
        assert!(estimate(&plan("fwdbwd"), &layout("ring-p2p", None)).bytes > ring);
    }
}
