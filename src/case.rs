//! One benchmark case: everything that determines what is computed (not how it is timed). A case's
//! `case_id` is a hash of these parameters, so it is stable across runs, machines and suite edits that
//! reorder axes — `--resume` and `compare` join on it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::flops::Pass;
use crate::mask::Params;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum CaseKind {
    /// One device, one backend.
    Kernel,
    /// Context parallel over `world_size` ranks.
    Cp,
    /// Projected by `simulate` (virtual ranks + communication model), never measured end to end.
    Simulated,
}

impl CaseKind {
    pub fn name(self) -> &'static str {
        match self {
            CaseKind::Kernel => "kernel",
            CaseKind::Cp => "cp",
            CaseKind::Simulated => "simulated",
        }
    }
}

impl fmt::Display for CaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Bf16,
    Fp16,
    Fp32,
    Fp64,
}

impl DType {
    pub const ALL: [DType; 4] = [DType::Bf16, DType::Fp16, DType::Fp32, DType::Fp64];

    pub fn name(self) -> &'static str {
        match self {
            DType::Bf16 => "bf16",
            DType::Fp16 => "fp16",
            DType::Fp32 => "fp32",
            DType::Fp64 => "fp64",
        }
    }

    pub fn kind(self) -> tch::Kind {
        match self {
            DType::Bf16 => tch::Kind::BFloat16,
            DType::Fp16 => tch::Kind::Half,
            DType::Fp32 => tch::Kind::Float,
            DType::Fp64 => tch::Kind::Double,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Bf16 | DType::Fp16 => 2,
            DType::Fp32 => 4,
            DType::Fp64 => 8,
        }
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            "fp16" | "f16" | "half" | "float16" => Ok(DType::Fp16),
            "fp32" | "f32" | "float" | "float32" => Ok(DType::Fp32),
            "fp64" | "f64" | "double" | "float64" => Ok(DType::Fp64),
            _ => Err(format!("unknown dtype `{s}` (expected bf16, fp16, fp32 or fp64)")),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    pub fn tch(self) -> tch::Device {
        match self {
            DeviceKind::Cpu => tch::Device::Cpu,
            DeviceKind::Cuda => tch::Device::Cuda(0),
        }
    }
}

impl FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" | "gpu" => Ok(DeviceKind::Cuda),
            // A GPU index is never taken: each process uses GPU (local rank mod visible GPUs), the
            // same rule as the NCCL communicator; which GPUs are visible is CUDA_VISIBLE_DEVICES' job.
            _ if s.strip_prefix("cuda:").is_some_and(|i| i.parse::<u32>().is_ok()) => Err(format!(
                "device `{s}`: attnbench takes no GPU index (expected cpu or cuda); each rank uses GPU local_rank mod the visible count — choose GPUs with CUDA_VISIBLE_DEVICES"
            )),
            _ => Err(format!("unknown device `{s}` (expected cpu or cuda)")),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Query/KV head layout, written `Hq:Hkv` (`64:8` = GQA with 8 query heads per KV head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct HeadLayout {
    pub q: usize,
    pub kv: usize,
}

impl FromStr for HeadLayout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (q, kv) = match s.split_once(':') {
            Some((q, kv)) => (q.trim(), kv.trim()),
            None => (s.trim(), s.trim()),
        };
        let q: usize = q.parse().map_err(|_| format!("head layout `{s}`: expected Hq:Hkv with integers, e.g. 64:8"))?;
        let kv: usize = kv.parse().map_err(|_| format!("head layout `{s}`: expected Hq:Hkv with integers, e.g. 64:8"))?;
        if q == 0 || kv == 0 {
            return Err(format!("head layout `{s}`: head counts must be at least 1"));
        }
        if !q.is_multiple_of(kv) {
            return Err(format!("head layout `{s}`: query heads ({q}) must be a multiple of KV heads ({kv})"));
        }
        Ok(HeadLayout { q, kv })
    }
}

impl fmt::Display for HeadLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.q, self.kv)
    }
}

/// How a CP strategy cuts the sequence over ranks (see `cp::shard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Sharding {
    /// Rank r holds `[r·S/W, (r+1)·S/W)`.
    Contiguous,
    /// The sequence is cut into 2W chunks; rank r holds chunks r and 2W−1−r (balanced causal work).
    Zigzag,
}

impl Sharding {
    pub fn name(self) -> &'static str {
        match self {
            Sharding::Contiguous => "contiguous",
            Sharding::Zigzag => "zigzag",
        }
    }
}

impl fmt::Display for Sharding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Sharding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "contiguous" => Ok(Sharding::Contiguous),
            "zigzag" => Ok(Sharding::Zigzag),
            _ => Err(format!("unknown sharding `{s}` (expected contiguous or zigzag)")),
        }
    }
}

/// A CP strategy's options, typed. Each one set is part of the case's identity; `None` means the
/// strategy's default (resolved when the case is set up, see `cp::setup`). Adding a knob: a field
/// here (with its name in [`CpOptions::KEYS`], `from_params` and `to_params`), its flag in
/// `cli::args::CpArgs`, and in the strategy's file its key in `options` and its use. A strategy
/// never gets an option it does not take (bad input), so an unset field leaves every id unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpOptions {
    /// Ulysses (head-parallel) degree of `usp`; must divide the world size and the query heads.
    #[serde(default)]
    pub ulysses_degree: Option<usize>,
    /// Inner ring size of `double-ring` (must divide the world size) and of `usp`'s double ring
    /// (LoongTrain: must divide the ring degree W/U).
    #[serde(default)]
    pub inner_ring: Option<usize>,
    /// Overrides the strategy's sharding.
    #[serde(default)]
    pub sharding: Option<Sharding>,
}

impl CpOptions {
    /// The option names, as written in suites (`strategy_params`) and as flags (`--ulysses-degree`).
    pub const KEYS: [&'static str; 3] = ["ulysses_degree", "inner_ring", "sharding"];

    /// From `key = value` pairs (a suite's `strategy_params`); errors name the key.
    pub fn from_params(p: &Params) -> Result<CpOptions, String> {
        let mut o = CpOptions::default();
        for (k, v) in &p.0 {
            let count = |v: &str| v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| format!("{k}: expected a positive integer, got `{v}`"));
            match k.as_str() {
                "ulysses_degree" => o.ulysses_degree = Some(count(v)?),
                "inner_ring" => o.inner_ring = Some(count(v)?),
                "sharding" => o.sharding = Some(v.parse::<Sharding>().map_err(|e| format!("{k}: {e}"))?),
                _ => return Err(format!("unknown strategy option `{k}` (expected {})", Self::KEYS.join(", "))),
            }
        }
        Ok(o)
    }

    /// The names of the options that are set, in [`CpOptions::KEYS`] order.
    pub fn keys_set(&self) -> Vec<&'static str> {
        let p = self.to_params();
        Self::KEYS.iter().copied().filter(|k| p.get(k).is_some()).collect()
    }

    /// Only the options whose key `keep` accepts (the others unset).
    pub fn only(&self, keep: impl Fn(&str) -> bool) -> CpOptions {
        let kept = self.to_params().0.into_iter().filter(|(k, _)| keep(k)).fold(Params::new(), |p, (k, v)| p.set(&k, v));
        // A subset of this value's own `key = value` text always reads back.
        CpOptions::from_params(&kept).unwrap_or(*self)
    }

    /// The options that are set, as `key = value` pairs (the case's canonical text and labels).
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        if let Some(u) = self.ulysses_degree {
            p = p.set("ulysses_degree", u);
        }
        if let Some(i) = self.inner_ring {
            p = p.set("inner_ring", i);
        }
        if let Some(s) = self.sharding {
            p = p.set("sharding", s);
        }
        p
    }
}

/// Everything that defines what a case computes — the one case definition every subcommand, the
/// runner, its kernel worker and the CP ranks share. `backend` is the kernel backend (for CP cases,
/// the per-rank attention kernel), `strategy` the CP strategy (empty for kernel cases), `cp` the
/// strategy's options.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Case {
    pub kind: CaseKind,
    pub backend: String,
    pub strategy: String,
    pub pattern: String,
    pub params: Params,
    pub seqlen: usize,
    pub batch: usize,
    pub heads: HeadLayout,
    pub head_dim: usize,
    pub dtype: DType,
    pub pass: Pass,
    pub device: DeviceKind,
    pub world_size: usize,
    /// Strategy options (part of the identity of a CP case).
    #[serde(default)]
    pub cp: CpOptions,
}

impl Case {
    /// A single-device case with the common defaults (batch 1, fp32 unless changed by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn kernel(
        backend: &str,
        pattern: &str,
        params: Params,
        seqlen: usize,
        heads: HeadLayout,
        head_dim: usize,
        dtype: DType,
        pass: Pass,
        device: DeviceKind,
    ) -> Case {
        Case {
            kind: CaseKind::Kernel,
            backend: backend.to_string(),
            strategy: String::new(),
            pattern: pattern.to_string(),
            params,
            seqlen,
            batch: 1,
            heads,
            head_dim,
            dtype,
            pass,
            device,
            world_size: 1,
            cp: CpOptions::default(),
        }
    }

    /// A CP case: `world_size` ranks running `strategy`, each rank's attention on `backend`.
    pub fn cp(strategy: &str, backend: &str, world_size: usize, options: CpOptions, kernel: Case) -> Case {
        Case { kind: CaseKind::Cp, backend: backend.to_string(), strategy: strategy.to_string(), world_size, cp: options, ..kernel }
    }

    /// Canonical text of the case's identity; `case_id` hashes it.
    pub fn canonical(&self) -> String {
        format!(
            "kind={};backend={};strategy={};sp={};mask={};params={};S={};b={};h={};d={};dtype={};pass={};device={};ws={}",
            self.kind,
            self.backend,
            self.strategy,
            self.cp.to_params(),
            self.pattern,
            self.params,
            self.seqlen,
            self.batch,
            self.heads,
            self.head_dim,
            self.dtype,
            self.pass,
            self.device,
            self.world_size
        )
    }

    /// First 16 hex digits of SHA-256 of [`Case::canonical`].
    pub fn case_id(&self) -> String {
        let digest = Sha256::digest(self.canonical().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// A short human label, e.g. `sdpa-flash causal S=4096 8:2 d64 fp32 fwd`.
    pub fn label(&self) -> String {
        let what = if self.strategy.is_empty() {
            self.backend.clone()
        } else {
            format!("{}×{} ({})", strategy_label(&self.strategy, &self.cp.to_params().to_string()), self.world_size, self.backend)
        };
        let p = if self.params.is_empty() { String::new() } else { format!("[{}]", self.params) };
        format!("{what} {}{p} S={} b={} {} d{} {} {}", self.pattern, self.seqlen, self.batch, self.heads, self.head_dim, self.dtype, self.pass)
    }
}

/// THE label of a strategy with its options, `usp[ulysses_degree=4]` (`ring-p2p` when it has none):
/// what [`Case::label`] and a row's `strategy_label` (tables, plots, compare) both show.
pub fn strategy_label(strategy: &str, params: &str) -> String {
    if params.is_empty() {
        strategy.to_string()
    } else {
        format!("{strategy}[{params}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_layout_parse() {
        assert_eq!("64:8".parse::<HeadLayout>().unwrap(), HeadLayout { q: 64, kv: 8 });
        assert_eq!("16".parse::<HeadLayout>().unwrap(), HeadLayout { q: 16, kv: 16 });
        assert!("64:7".parse::<HeadLayout>().unwrap_err().contains("multiple"));
        assert!("0:0".parse::<HeadLayout>().is_err());
        assert!("a:b".parse::<HeadLayout>().is_err());
    }

    #[test]
    fn case_id_is_stable_and_param_sensitive() {
        let h = HeadLayout { q: 8, kv: 2 };
        let a = Case::kernel("naive", "causal", Params::new(), 1024, h, 64, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
        let mut b = a.clone();
        assert_eq!(a.case_id(), b.case_id());
        assert_eq!(a.case_id().len(), 16);
        b.seqlen = 2048;
        assert_ne!(a.case_id(), b.case_id());
        // Pinned: changing the canonical form would break resume and compare against old CSVs.
        assert_eq!(a.canonical(), "kind=kernel;backend=naive;strategy=;sp=;mask=causal;params=;S=1024;b=1;h=8:2;d=64;dtype=fp32;pass=fwd;device=cpu;ws=1");
        // A CP case's typed options render as the `key=value` list earlier versions wrote.
        let o = CpOptions { ulysses_degree: Some(2), sharding: Some(Sharding::Zigzag), ..Default::default() };
        let c = Case::cp("usp", "sliced", 4, o, a.clone());
        assert!(c.canonical().starts_with("kind=cp;backend=sliced;strategy=usp;sp=sharding=zigzag;ulysses_degree=2;mask=causal;"), "{}", c.canonical());
        assert_eq!(CpOptions::from_params(&o.to_params()).unwrap(), o);
        assert!(CpOptions::from_params(&Params::new().set("ulysses", 2)).unwrap_err().contains("unknown strategy option `ulysses`"));
        assert!(CpOptions::from_params(&Params::new().set("inner_ring", 0)).unwrap_err().starts_with("inner_ring:"));
    }

    #[test]
    fn options_set_and_kept_by_key() {
        let o = CpOptions { ulysses_degree: Some(2), inner_ring: Some(4), sharding: Some(Sharding::Zigzag) };
        assert_eq!(o.keys_set(), vec!["ulysses_degree", "inner_ring", "sharding"]);
        assert_eq!(CpOptions::default().keys_set(), Vec::<&str>::new());
        assert_eq!(o.only(|k| k == "sharding"), CpOptions { sharding: Some(Sharding::Zigzag), ..Default::default() });
        assert_eq!(o.only(|k| k != "inner_ring"), CpOptions { inner_ring: None, ..o });
        // A case without options keeps its pinned id text: `sp=` empty.
        let k = Case::kernel("naive", "causal", Params::new(), 64, HeadLayout { q: 8, kv: 2 }, 64, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
        assert!(Case::cp("ring-p2p", "sliced", 4, o.only(|_| false), k).canonical().contains(";strategy=ring-p2p;sp=;mask="));
    }
}
