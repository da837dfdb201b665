//! α–β (latency–bandwidth) communication model for projecting CP strategies to many GPUs.
//!
//! A message of `n` bytes over a link costs `α + n / β` seconds (α in µs, β in GB/s = 10⁹ bytes/s,
//! per direction). Two link classes: intra-node (NVLink through NVSwitch) and inter-node
//! (InfiniBand/RoCE, one NIC per GPU). A step in which every rank sends one message at the same time
//! (ring P2P, all-to-all rounds) is limited by the slowest link any message crosses; NVSwitch and a
//! non-blocking fat tree are assumed, so concurrent messages on distinct GPU pairs do not contend.
//! Collectives use the ring/pairwise algorithms NCCL uses for large messages, whose costs are the
//! ones nccl-tests' bus-bandwidth factors are derived from.

use serde::{Deserialize, Serialize};

/// One link class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Per-message latency, microseconds.
    pub alpha_us: f64,
    /// Bandwidth per direction, GB/s (10⁹ bytes/s).
    pub beta_gbps: f64,
}

impl Link {
    /// Seconds to move `bytes` in one message.
    pub fn time_s(&self, bytes: f64) -> f64 {
        if bytes <= 0.0 {
            return 0.0;
        }
        self.alpha_us * 1e-6 + bytes / (self.beta_gbps * 1e9)
    }
}

/// A cluster: `gpus_per_node` GPUs share the intra-node link class; ranks are placed node by node
/// (rank r on node r / gpus_per_node), as mpirun and Slurm do by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub name: String,
    pub gpus_per_node: usize,
    pub intra: Link,
    pub inter: Link,
}

/// Named presets. Numbers are datasheet per-direction bandwidths; latencies are typical measured
/// small-message NCCL latencies (a few µs on NVLink, ~10 µs across IB).
pub fn preset(name: &str) -> Option<Topology> {
    let t = |name: &str, g, ia, ib, ea, eb| Topology {
        name: name.to_string(),
        gpus_per_node: g,
        intra: Link { alpha_us: ia, beta_gbps: ib },
        inter: Link { alpha_us: ea, beta_gbps: eb },
    };
    Some(match name {
        // H100 SXM: NVLink 4, 18 links × 25 GB/s = 450 GB/s per direction; 8 GPUs per node;
        // 400 Gb/s NDR InfiniBand per GPU = 50 GB/s.
        "h100-nvlink-ib400" | "h100" => t("h100-nvlink-ib400", 8, 3.0, 450.0, 10.0, 50.0),
        "h200-nvlink-ib400" | "h200" => t("h200-nvlink-ib400", 8, 3.0, 450.0, 10.0, 50.0),
        // h100 with the inter-node bandwidth fitted to LongCA-bench's published CP figures (forward,
        // W = 8 and 16; `attnbench simulate --compare-published --fit`).
        "h100-longca" => return Some(longca_topology(&H100_CP)),
        // A100 SXM: NVLink 3, 300 GB/s per direction; 200 Gb/s HDR per GPU = 25 GB/s.
        "a100-nvlink-ib200" | "a100" => t("a100-nvlink-ib200", 8, 3.0, 300.0, 10.0, 25.0),
        _ => return None,
    })
}

/// The CP-level free parameters of the model behind `h100-longca`: the inter-node link and the cost of
/// the glue work around the attention calls (fitted together to LongCA-bench's published figures).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpParams {
    /// Inter-node bandwidth per GPU and direction, GB/s (the preset's datasheet value is 50).
    pub inter_gbps: f64,
    /// Fraction of HBM bandwidth the glue work (merges, copies, accumulation) sustains. Fitted, so it
    /// also absorbs how far the glue's counted bytes are from the real ones: above 1 means the
    /// implementation moves fewer bytes than counted.
    pub mem_efficiency: f64,
    /// Cost of one glue kernel launch, µs.
    pub launch_us: f64,
}

/// The CP parameters fitted by [`crate::sim::fit::fit_cp`] on the calibration points (W = 8, 16 forward;
/// 20 packs per document point: `attnbench simulate --compare-published --fit`).
pub const H100_CP: CpParams = CpParams { inter_gbps: 40.0, mem_efficiency: 0.45, launch_us: 0.0 };

/// The `h100` preset with the calibrated inter-node bandwidth (`h100-longca`).
pub fn longca_topology(cp: &CpParams) -> Topology {
    let mut t = preset("h100").expect("h100 preset");
    t.inter = Link { alpha_us: t.inter.alpha_us, beta_gbps: cp.inter_gbps };
    t.name = "h100-longca".into();
    t
}

pub const PRESETS: &[&str] = &["h100-nvlink-ib400", "h200-nvlink-ib400", "a100-nvlink-ib200", "h100-longca"];

impl Topology {
    pub fn node_of(&self, rank: usize) -> usize {
        rank / self.gpus_per_node.max(1)
    }

    /// The link a message from `a` to `b` crosses.
    pub fn link(&self, a: usize, b: usize) -> Link {
        if self.node_of(a) == self.node_of(b) {
            self.intra
        } else {
            self.inter
        }
    }

    /// All-gather where each of the n ranks contributes `bytes_per_rank`, as NCCL runs it: inside a
    /// node a ring over NVLink (n − 1 steps of one chunk); across nodes one ring per NIC (rail), so a
    /// chunk enters each node once and is forwarded over NVLink — the (n − g) chunks from other nodes
    /// reach a node of g ranks through its g NICs at once. The slower of the NVLink ring and the NIC
    /// share sets the time. (An earlier version ran every chunk through the slowest link, which
    /// charged a 16-GPU all-gather 15 chunks over one NIC, 8× what the NICs carry.)
    pub fn allgather_s(&self, ranks: &[usize], bytes_per_rank: f64) -> f64 {
        let n = ranks.len();
        if n <= 1 {
            return 0.0;
        }
        let mut per_node: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
        for &r in ranks {
            *per_node.entry(self.node_of(r)).or_default() += 1;
        }
        let ring = (n - 1) as f64 * self.intra.time_s(bytes_per_rank);
        if per_node.len() == 1 {
            return ring;
        }
        let hops = (per_node.len() - 1) as f64;
        per_node
            .values()
            .map(|&g| {
                let nic = hops * self.inter.alpha_us * 1e-6 + (n - g) as f64 * bytes_per_rank / (g as f64 * self.inter.beta_gbps * 1e9);
                ring.max(nic)
            })
            .fold(0.0, f64::max)
    }

    /// Reduce-scatter of a `bytes_per_rank`-sized result per rank (same cost shape as all-gather).
    pub fn reduce_scatter_s(&self, ranks: &[usize], bytes_per_rank: f64) -> f64 {
        self.allgather_s(ranks, bytes_per_rank)
    }

    /// All-to-all where each rank holds `bytes_per_rank` and sends 1/n of it to every peer, as NCCL
    /// runs it: all sends and receives of a rank are posted at once, so a rank's NVLink traffic (to
    /// peers on its node) and its NIC traffic (to peers on other nodes) flow in parallel, each at its
    /// link's bandwidth; the slower of the two sets the time. (An earlier version summed n − 1 rounds
    /// each limited by its slowest message, which charged a 16-rank all-to-all 15 inter-node chunks
    /// where the NIC carries 8.)
    pub fn alltoall_s(&self, ranks: &[usize], bytes_per_rank: f64) -> f64 {
        let n = ranks.len();
        if n <= 1 {
            return 0.0;
        }
        let chunk = bytes_per_rank / n as f64;
        ranks
            .iter()
            .map(|&r| {
                let inter = ranks.iter().filter(|&&p| self.node_of(p) != self.node_of(r)).count();
                let intra = n - 1 - inter;
                let t_intra = if intra > 0 { self.intra.time_s(chunk * intra as f64) } else { 0.0 };
                let t_inter = if inter > 0 { self.inter.time_s(chunk * inter as f64) } else { 0.0 };
                t_intra.max(t_inter)
            })
            .fold(0.0, f64::max)
    }
}

/// One measured point: `bytes` in one message took `seconds`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct CalibrationPoint {
    pub bytes: f64,
    pub seconds: f64,
}

/// Least-squares fit of `t = α + bytes/β` to measured points (e.g. `attnbench comm` send/recv times).
/// Needs at least two distinct sizes; returns `None` otherwise or if the fit is non-physical (β ≤ 0),
/// in which case α is clamped at 0 and β refitted through the origin.
pub fn fit_link(points: &[CalibrationPoint]) -> Option<Link> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), p| (a + p.bytes, b + p.seconds));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|p| (p.bytes - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.bytes - mx) * (p.seconds - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    if slope <= 0.0 {
        return None;
    }
    if intercept < 0.0 {
        // Through the origin: slope = Σxy / Σx².
        let s = points.iter().map(|p| p.bytes * p.seconds).sum::<f64>() / points.iter().map(|p| p.bytes * p.bytes).sum::<f64>();
        return Some(Link { alpha_us: 0.0, beta_gbps: 1.0 / s / 1e9 });
    }
    Some(Link { alpha_us: intercept * 1e6, beta_gbps: 1.0 / slope / 1e9 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_time() {
        let l = Link { alpha_us: 10.0, beta_gbps: 50.0 };
        assert!((l.time_s(50e9) - (1.0 + 10e-6)).abs() < 1e-12);
        assert_eq!(l.time_s(0.0), 0.0);
    }

    #[test]
    fn placement_and_links() {
        let t = preset("h100").unwrap();
        assert_eq!(t.link(0, 7), t.intra);
        assert_eq!(t.link(7, 8), t.inter);
        // 16 ranks on 2 nodes: the 8 chunks of the other node enter through 8 NICs (1 chunk each,
        // 20 ms) while the NVLink ring forwards 15 chunks (33 ms): NVLink sets the time.
        let ranks: Vec<usize> = (0..16).collect();
        assert!((t.allgather_s(&ranks, 1e9) - 15.0 * t.intra.time_s(1e9)).abs() < 1e-12);
        // 1 rank per node (16 nodes): 15 chunks through one NIC.
        let spread = Topology { gpus_per_node: 1, ..t.clone() };
        assert!((spread.allgather_s(&ranks, 1e9) - (15.0 * t.inter.alpha_us * 1e-6 + 15e9 / 50e9)).abs() < 1e-12);
        let ranks: Vec<usize> = (0..8).collect();
        assert!((t.allgather_s(&ranks, 1e9) - 7.0 * t.intra.time_s(1e9)).abs() < 1e-12);
    }

    #[test]
    fn alltoall_within_and_across_nodes() {
        let t = preset("h100").unwrap();
        let r8: Vec<usize> = (0..8).collect();
        // 7 chunks of 1/8 of the data leave each rank over NVLink, posted together.
        assert!((t.alltoall_s(&r8, 8e9) - t.intra.time_s(7e9)).abs() < 1e-12);
        let r16: Vec<usize> = (0..16).collect();
        // 16 ranks on 2 nodes: 8 chunks over the NIC (the slower), 7 over NVLink at the same time.
        assert!((t.alltoall_s(&r16, 16e9) - t.inter.time_s(8e9)).abs() < 1e-9);
        assert!(t.alltoall_s(&r16, 16e9) > t.intra.time_s(7e9));
        // Two ranks on different nodes: one chunk over the NIC.
        assert!((t.alltoall_s(&[3, 9], 2e9) - t.inter.time_s(1e9)).abs() < 1e-12);
    }

    #[test]
    fn fit_reproduces_its_calibration_points() {
        let truth = Link { alpha_us: 7.5, beta_gbps: 120.0 };
        let pts: Vec<CalibrationPoint> = [1e3, 1e5, 1e6, 1e7, 1e8].iter().map(|&b| CalibrationPoint { bytes: b, seconds: truth.time_s(b) }).collect();
        let fit = fit_link(&pts).unwrap();
        assert!((fit.alpha_us - 7.5).abs() < 1e-6, "{fit:?}");
        assert!((fit.beta_gbps - 120.0).abs() < 1e-6, "{fit:?}");
        for p in &pts {
            assert!((fit.time_s(p.bytes) - p.seconds).abs() / p.seconds < 1e-9);
        }
        assert!(fit_link(&pts[..1]).is_none());
    }
}
