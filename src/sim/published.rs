//! The figures LongCA-bench's authors published and how their baselines map onto our strategies:
//! digitised data, setup, strategy and mask mapping, the calibration / held-out split. The fitting and
//! statistics are in [`crate::sim::fit`] and [`crate::sim::stats`], the comparison report in
//! [`crate::sim::report`] (`attnbench simulate --compare-published`); docs/SIMULATION.md has the tables.
//!
//! - **Data.** `data/longca-cp-published-h100.csv` (TFLOPS/GPU per mask × pass × strategy × world,
//!   read off the blog's bar charts) and `data/fa3-kernel-published-h100.csv` (the FA3 kernel bars of
//!   the same post); their headers give source, method and reading precision.
//! - **Setup** (MagiAttention `exps/dist_attn`, which produced the figures): 8K tokens per GPU, 64:8
//!   heads, D = 128, bf16, batch 1; full and causal masks, and full/causal document masks packed from
//!   the `magi_default` length table by Sampler B (chunk ¼ of the pack) with numpy seed 42, averaged
//!   over 20 packs — the very packs it drew, rebuilt by `launch/magi-cp-packs` ([`crate::mask::doclen::exact_pack`],
//!   our `docs=magi_exact`; `docs=magi_packed` draws new packs of the same kind at any length); every
//!   baseline on FA3 varlen calls; TFLOPS/GPU =
//!   mask FLOPs / (max over ranks of the time × W). Their baselines are modelled with
//!   [`crate::sim::Implementation::Longca`].
//! - **Kernel parameters** of the FA3 tile model ([`crate::sim::fa3::Fa3Model`]) are fitted to the published dense
//!   (full, causal) FA3 kernel bars; the varlen kernel bars are the kernel-level check.
//! - **CP parameters** ([`crate::sim::comm_model::CpParams`]: the inter-node bandwidth, the glue's memory efficiency and its
//!   per-launch cost) are fitted ONLY to the forward figures at W = 8 and 16 ([`is_calibration`]);
//!   every other point (backward, W = 32 and 64) is held out.

use serde::Serialize;

use crate::case::HeadLayout;
use crate::flops::Pass;
use crate::mask::doclen;
use crate::mask::Params;

// The H100 constants and fitted parameters live with the models that use them; re-exported here for
// the callers that read them as "the published setup's" (advise).
pub use super::comm_model::{CpParams, H100_CP};
pub use super::fa3::{h100_fa3, H100_MEM_TBPS, H100_PEAK_TFLOPS, H100_SMS};

/// Digitised CP figures (see the file's header).
pub const CP_CSV: &str = include_str!("../../data/longca-cp-published-h100.csv");
/// Digitised FA3 kernel figures (see the file's header).
pub const KERNEL_CSV: &str = include_str!("../../data/fa3-kernel-published-h100.csv");

/// Tokens per GPU, heads and head dim of the published CP sweep.
pub const TOKENS_PER_GPU: usize = 8192;
pub const HEADS: HeadLayout = HeadLayout { q: 64, kv: 8 };
pub const HEAD_DIM: usize = 128;
/// Heads of the published kernel sweep (its script: 48:8; the blog's table says 64:8).
pub const KERNEL_HEADS: HeadLayout = HeadLayout { q: 48, kv: 8 };
/// Packs the published figures average for the document masks.
pub const PUBLISHED_PACKS: usize = 20;

/// One published CP bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpPoint {
    pub mask: String,
    pub pass: Pass,
    pub strategy: String,
    pub world: usize,
    pub tflops: f64,
}

/// One published FA3 kernel bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelPoint {
    pub mask: String,
    pub pass: Pass,
    pub seqlen: usize,
    pub tflops: f64,
}

fn data_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).skip(1).map(|l| l.split(',').map(str::trim).collect())
}

fn pass_of(s: &str) -> Pass {
    s.parse().expect("embedded data: pass is fwd or bwd")
}

/// The digitised CP bars, every strategy (including the ones we do not implement).
pub fn cp_points() -> Vec<CpPoint> {
    data_lines(CP_CSV)
        .map(|f| CpPoint {
            mask: f[0].to_string(),
            pass: pass_of(f[1]),
            strategy: f[2].to_string(),
            world: f[3].parse().expect("embedded data: world"),
            tflops: f[4].parse().expect("embedded data: tflops"),
        })
        .collect()
}

/// The digitised FA3 kernel bars.
pub fn kernel_points() -> Vec<KernelPoint> {
    data_lines(KERNEL_CSV)
        .map(|f| KernelPoint {
            mask: f[0].to_string(),
            pass: pass_of(f[1]),
            seqlen: f[2].parse().expect("embedded data: seqlen"),
            tflops: f[3].parse().expect("embedded data: tflops"),
        })
        .collect()
}

/// The published strategies we implement, in the figures' order.
pub const IMPLEMENTED: [&str; 5] = ["ulysses", "ring_p2p", "ring_allgather", "usp", "loongtrain"];

/// Our configuration of a published strategy at `world` GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub strategy: &'static str,
    pub ulysses_degree: usize,
    pub inner_ring: usize,
}

impl Config {
    /// `ulysses`, `ring-p2p-zigzag`, `usp U=8`, `usp U=8 inner=2`, …
    pub fn label(&self) -> String {
        let mut s = self.strategy.to_string();
        if self.ulysses_degree > 0 {
            s.push_str(&format!(" U={}", self.ulysses_degree));
        }
        if self.inner_ring > 0 {
            s.push_str(&format!(" inner={}", self.inner_ring));
        }
        s
    }
}

/// LoongTrain's inner ring over a ring of `ring` members, as `exps/dist_attn/run_benchmark.py` picks
/// its window count (the largest divisor i of the ring with i ≤ ring/i; the inner ring is ring/i).
pub fn loongtrain_inner(ring: usize) -> usize {
    let mut windows = 1;
    for i in 1..=ring {
        if !ring.is_multiple_of(i) {
            continue;
        }
        if i > ring / i {
            break;
        }
        windows = i;
    }
    if windows >= ring {
        windows = 1;
    }
    ring / windows
}

/// Published name → our strategy: Ulysses → `ulysses`; Ring P2P → `ring-p2p-zigzag`; Ring AllGather →
/// `ring-allgather`; USP → `usp` with U = min(W, 8); LoongTrain → `usp` with U = min(W, 8) and its
/// double ring (inner ring per [`loongtrain_inner`]). `None` for MagiAttention and HybridDCP.
pub fn config(published: &str, world: usize) -> Option<Config> {
    let u = world.min(8);
    Some(match published {
        "ulysses" => Config { strategy: "ulysses", ulysses_degree: 0, inner_ring: 0 },
        "ring_p2p" => Config { strategy: "ring-p2p-zigzag", ulysses_degree: 0, inner_ring: 0 },
        "ring_allgather" => Config { strategy: "ring-allgather", ulysses_degree: 0, inner_ring: 0 },
        "usp" => Config { strategy: "usp", ulysses_degree: u, inner_ring: 0 },
        "loongtrain" => Config { strategy: "usp", ulysses_degree: u, inner_ring: loongtrain_inner(world / u) },
        _ => return None,
    })
}

/// Our mask pattern and parameters for a published mask and pack seed.
pub fn mask_of(mask: &str, seed: u64) -> (String, Params) {
    match mask {
        "full_document" | "causal_document" => (mask.to_string(), Params::new().set("docs", doclen::MAGI_EXACT).set("seed", seed)),
        other => (other.to_string(), Params::new()),
    }
}

/// True for the points the CP parameters are fitted on: forward at W = 8 and 16.
pub fn is_calibration(p: &CpPoint) -> bool {
    p.pass == Pass::Fwd && (p.world == 8 || p.world == 16)
}

/// Seeds of the packs a point averages: 42, 43, … (`packs` of them) for document masks, 42 otherwise.
pub fn seeds(mask: &str, packs: usize) -> Vec<u64> {
    let n = if mask.ends_with("_document") { packs.max(1) } else { 1 };
    (0..n as u64).map(|i| 42 + i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn data_parse_and_cover_the_figures() {
        let cp = cp_points();
        // 4 masks × 2 passes × 4 worlds × 8 strategies.
        assert_eq!(cp.len(), 256);
        for s in IMPLEMENTED {
            assert_eq!(cp.iter().filter(|p| p.strategy == s).count(), 32, "{s}");
        }
        assert!(cp.iter().all(|p| p.tflops > 0.0 && p.tflops < 989.0));
        let k = kernel_points();
        assert_eq!(k.len(), 48);
        assert_eq!(cp.iter().filter(|p| is_calibration(p) && IMPLEMENTED.contains(&p.strategy.as_str())).count(), 40);
    }

    #[test]
    fn loongtrain_windows_follow_the_benchmark() {
        assert_eq!([1, 2, 4, 8].map(loongtrain_inner), [1, 2, 2, 4]);
        assert_eq!(config("loongtrain", 64).unwrap(), Config { strategy: "usp", ulysses_degree: 8, inner_ring: 4 });
        assert_eq!(config("usp", 8).unwrap().ulysses_degree, 8);
        assert!(config("magi_attn-native", 8).is_none());
    }
}
