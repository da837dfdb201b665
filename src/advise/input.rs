//! What `attnbench advise` is asked: the request (flags or an `[advise]` TOML section, the same keys)
//! and its validation into a [`Plan`]. Every refusal is one line naming the key (exit 2 at the CLI).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::case::{DType, HeadLayout};
use crate::error::BadInput;
use crate::flops::Pass;
use crate::mask::Params;
use crate::sim::comm_model::{preset, Topology, PRESETS};
use crate::sim::Implementation;

/// The request as written: every key optional here, defaults applied by [`Request::plan`]. TOML keys
/// are these field names (`seqlen_per_rank`, `world_size`, …); flags are the same with dashes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Mask patterns, each `name` or `name?key=value&key=value` (repeatable: a mix).
    #[serde(default)]
    pub mask: Vec<String>,
    /// Weight of each mask in the mix (share of steps); default equal weights.
    #[serde(default)]
    pub weight: Vec<f64>,
    /// Mask parameters `key=value` applied to every mask (`docs=prolong64k`, `doc_lens=…`).
    #[serde(default)]
    pub set: Vec<String>,
    /// `Hq:Hkv` [64:8].
    pub heads: Option<String>,
    /// [128]
    pub head_dim: Option<usize>,
    /// [bf16]
    pub dtype: Option<String>,
    /// fwd, bwd or fwdbwd [fwdbwd: a training step].
    pub pass: Option<String>,
    /// Total tokens (all GPUs together), or `seqlen_per_rank`.
    pub seqlen: Option<usize>,
    pub seqlen_per_rank: Option<usize>,
    pub world_size: Option<usize>,
    /// GPU kind and interconnect: a `simulate` topology preset (h100, h200, a100, h100-longca) [h100].
    pub topology: Option<String>,
    pub gpus_per_node: Option<usize>,
    /// Memory per GPU available to attention (`80GiB`, `12G`) [the GPU kind's HBM].
    pub mem_per_gpu: Option<String>,
    /// attnbench (our CP engines) or longca (the baselines of LongCA-bench's figures) [attnbench].
    #[serde(rename = "impl")]
    pub implementation: Option<String>,
    /// Result CSVs or run folders (their `results.csv`) to take evidence from.
    #[serde(default)]
    pub results: Vec<PathBuf>,
    /// Only these strategies (default: every one the simulator knows).
    #[serde(default)]
    pub strategy: Vec<String>,
    /// Only these kernel backends (default: every backend that supports the masks on the GPU).
    #[serde(default)]
    pub backend: Vec<String>,
    /// Only this Ulysses degree for usp (must divide the GPU count and the query heads).
    pub ulysses_degree: Option<usize>,
    /// Only this inner ring (double-ring; usp under --impl longca).
    pub inner_ring: Option<usize>,
    /// Mask draws per projection of a drawn (document) mask [1].
    pub packs: Option<usize>,
    /// Run the simulator for candidates without rows [true].
    pub simulate: Option<bool>,
}

/// The TOML file form: the request is the `[advise]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    advise: Request,
}

impl Request {
    /// The `[advise]` section of a TOML file; errors name the file (and the key, as toml reports it).
    pub fn from_toml_file(path: &Path) -> Result<Request, BadInput> {
        let text = std::fs::read_to_string(path).map_err(|e| BadInput::new(format!("{}: {e}", path.display())))?;
        let f: File = toml::from_str(&text).map_err(|e| BadInput::new(format!("{}: {}", path.display(), crate::error::one_line(&e.to_string()))))?;
        Ok(f.advise)
    }

    /// `other`'s keys over this request's (flags over the file): a list replaces, a value overrides.
    pub fn overlay(mut self, o: Request) -> Request {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f; } )* };
        }
        macro_rules! take_vec {
            ($($f:ident),*) => { $( if !o.$f.is_empty() { self.$f = o.$f; } )* };
        }
        take!(
            heads,
            head_dim,
            dtype,
            pass,
            seqlen,
            seqlen_per_rank,
            world_size,
            topology,
            gpus_per_node,
            mem_per_gpu,
            implementation,
            ulysses_degree,
            inner_ring,
            packs,
            simulate
        );
        take_vec!(mask, weight, set, results, strategy, backend);
        self
    }
}

/// One mask of the mix.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskSpec {
    pub pattern: String,
    pub params: Params,
    pub weight: f64,
}

impl MaskSpec {
    /// `pattern` or `pattern?k=v;k=v` (the CSV's `mask_params` form).
    pub fn label(&self) -> String {
        if self.params.0.is_empty() {
            self.pattern.clone()
        } else {
            format!("{}?{}", self.pattern, self.params)
        }
    }
}

/// The GPU kind a topology preset stands for, and its HBM per GPU in bytes (datasheet).
pub fn gpu_kind(topology: &Topology) -> (&'static str, u64) {
    let n = topology.name.to_ascii_lowercase();
    if n.starts_with("h200") {
        ("H200", 141_000_000_000)
    } else if n.starts_with("a100") {
        ("A100", 80 * (1 << 30))
    } else {
        ("H100", 80 * (1 << 30))
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub masks: Vec<MaskSpec>,
    pub heads: HeadLayout,
    pub head_dim: usize,
    pub dtype: DType,
    pub pass: Pass,
    /// Total tokens.
    pub seqlen: usize,
    pub world: usize,
    pub topology: Topology,
    pub gpu: &'static str,
    pub mem_per_gpu: u64,
    /// Where the budget came from (`--mem-per-gpu 12G`, `H100 HBM`).
    pub mem_source: String,
    pub implementation: Implementation,
    pub results: Vec<PathBuf>,
    pub strategies: Vec<String>,
    pub backends: Vec<String>,
    pub ulysses_degree: Option<usize>,
    pub inner_ring: Option<usize>,
    pub packs: usize,
    pub simulate: bool,
}

fn bad(m: impl Into<String>) -> BadInput {
    BadInput::new(m)
}

impl Request {
    /// Validates and applies defaults. Names the key of anything wrong.
    pub fn plan(&self) -> Result<Plan, BadInput> {
        let heads: HeadLayout = self.heads.as_deref().unwrap_or("64:8").parse().map_err(|e| bad(format!("--heads: {e}")))?;
        let dtype: DType = self.dtype.as_deref().unwrap_or("bf16").parse().map_err(|e: String| bad(format!("--dtype: {e}")))?;
        let pass: Pass = self.pass.as_deref().unwrap_or("fwdbwd").parse().map_err(|e: String| bad(format!("--pass: {e}")))?;
        let head_dim = self.head_dim.unwrap_or(128);
        if head_dim == 0 {
            return Err(bad("--head-dim must be at least 1"));
        }
        let world = self.world_size.ok_or_else(|| bad("--world-size (the GPU count) is required"))?;
        if world == 0 {
            return Err(bad("--world-size must be at least 1"));
        }
        let seqlen = match (self.seqlen, self.seqlen_per_rank) {
            (Some(s), None) => s,
            (None, Some(r)) => r * world,
            (None, None) => return Err(bad("give --seqlen (total tokens) or --seqlen-per-rank")),
            (Some(_), Some(_)) => return Err(bad("give one of --seqlen (total tokens) or --seqlen-per-rank, not both")),
        };
        if seqlen == 0 {
            return Err(bad("--seqlen must be at least 1"));
        }
        if !seqlen.is_multiple_of(world) {
            return Err(bad(format!("--world-size {world} does not divide --seqlen {seqlen}: every GPU must hold the same number of tokens")));
        }
        let topo_name = self.topology.as_deref().unwrap_or("h100");
        let mut topology = preset(topo_name).ok_or_else(|| {
            bad(format!("--topology: unknown GPU kind / interconnect `{topo_name}` (expected h100, h200, a100 or one of {})", PRESETS.join(", ")))
        })?;
        if let Some(g) = self.gpus_per_node {
            if g == 0 {
                return Err(bad("--gpus-per-node must be at least 1"));
            }
            topology.gpus_per_node = g;
        }
        if world > topology.gpus_per_node && !world.is_multiple_of(topology.gpus_per_node) {
            return Err(bad(format!("--world-size {world} is not a whole number of nodes of {} GPUs (--gpus-per-node)", topology.gpus_per_node)));
        }
        let (gpu, hbm) = gpu_kind(&topology);
        let (mem_per_gpu, mem_source) = match &self.mem_per_gpu {
            Some(s) => (crate::suite::memory::parse_bytes(s).map_err(|e| bad(format!("--mem-per-gpu: {e}")))?, format!("--mem-per-gpu {s}")),
            None => (hbm, format!("{gpu} HBM")),
        };
        let implementation: Implementation = self.implementation.as_deref().unwrap_or("attnbench").parse().map_err(|e: String| bad(format!("--impl: {e}")))?;
        for s in &self.strategy {
            crate::cp::registry::find_strategy(s).map_err(|e| bad(e.to_string()))?;
        }
        for b in &self.backend {
            crate::backend::find_backend(b).map_err(|e| bad(format!("--backend: {e}")))?;
        }
        if let Some(u) = self.ulysses_degree {
            if u == 0 || !world.is_multiple_of(u) {
                return Err(bad(format!("--ulysses-degree {u} does not divide --world-size {world}")));
            }
            if !heads.q.is_multiple_of(u) {
                return Err(bad(format!("--ulysses-degree {u} does not divide the {} query heads (--heads {heads})", heads.q)));
            }
        }
        if let Some(i) = self.inner_ring {
            if i == 0 || !world.is_multiple_of(i) {
                return Err(bad(format!("--inner-ring {i} does not divide --world-size {world}")));
            }
        }
        let packs = self.packs.unwrap_or(1);
        if packs == 0 {
            return Err(bad("--packs must be at least 1"));
        }
        let masks = self.masks(seqlen)?;
        Ok(Plan {
            masks,
            heads,
            head_dim,
            dtype,
            pass,
            seqlen,
            world,
            topology,
            gpu,
            mem_per_gpu,
            mem_source,
            implementation,
            results: self.results.clone(),
            strategies: self.strategy.clone(),
            backends: self.backend.clone(),
            ulysses_degree: self.ulysses_degree,
            inner_ring: self.inner_ring,
            packs,
            simulate: self.simulate.unwrap_or(true),
        })
    }

    fn masks(&self, seqlen: usize) -> Result<Vec<MaskSpec>, BadInput> {
        if self.mask.is_empty() {
            return Err(bad("--mask is required (a pattern, see `attnbench list`; repeat it for a mix)"));
        }
        if !self.weight.is_empty() && self.weight.len() != self.mask.len() {
            return Err(bad(format!("--weight: {} weights for {} masks (give one per --mask, or none)", self.weight.len(), self.mask.len())));
        }
        if self.weight.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
            return Err(bad("--weight: every weight must be a positive number"));
        }
        let common = Params::parse_kv(&self.set).map_err(|e| bad(format!("--set: {e}")))?;
        let mut out = Vec::new();
        for (i, m) in self.mask.iter().enumerate() {
            let (name, own) = m.split_once('?').unwrap_or((m.as_str(), ""));
            let mut params = common.clone();
            if !own.is_empty() {
                let kv: Vec<&str> = own.split(['&', ';']).collect();
                params.0.extend(Params::parse_kv(&kv).map_err(|e| bad(format!("--mask {m}: {e}")))?.0);
            }
            // The mask must build at this length (unknown pattern, bad parameter, lengths not summing).
            crate::mask::build_pattern(name, seqlen, &params).map_err(|e| bad(format!("--mask {m}: {e}")))?;
            out.push(MaskSpec { pattern: name.to_string(), params, weight: self.weight.get(i).copied().unwrap_or(1.0) });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request { mask: vec!["causal".into()], world_size: Some(8), seqlen_per_rank: Some(1024), ..Request::default() }
    }

    #[test]
    fn defaults_are_a_training_step_of_longca_shape_on_h100() {
        let p = req().plan().unwrap();
        assert_eq!((p.heads, p.head_dim, p.dtype, p.pass, p.seqlen, p.gpu), (HeadLayout { q: 64, kv: 8 }, 128, DType::Bf16, Pass::Fwdbwd, 8192, "H100"));
        assert_eq!(p.mem_per_gpu, 80 << 30);
    }

    #[test]
    fn bad_inputs_name_the_key() {
        let cases: Vec<(Request, &str)> = vec![
            (Request { ulysses_degree: Some(3), world_size: Some(6), ..req() }, "--ulysses-degree 3 does not divide the 64 query heads"),
            (Request { ulysses_degree: Some(16), ..req() }, "--ulysses-degree 16 does not divide --world-size 8"),
            (Request { seqlen: Some(1001), seqlen_per_rank: None, ..req() }, "does not divide --seqlen 1001"),
            (Request { topology: Some("tpu".into()), ..req() }, "--topology: unknown GPU kind"),
            (Request { mask: vec!["nosuch".into()], ..req() }, "--mask nosuch"),
            (Request { world_size: Some(12), ..req() }, "not a whole number of nodes"),
            (Request { weight: vec![1.0, 2.0], ..req() }, "2 weights for 1 masks"),
        ];
        for (r, want) in cases {
            let e = r.plan().unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn flags_override_the_toml_section() {
        let dir = std::env::temp_dir().join(format!("advise-toml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.toml");
        std::fs::write(
            &f,
            "[advise]\nmask = [\"causal_document?docs=prolong64k\", \"causal\"]\nweight = [3.0, 1.0]\nheads = \"32:8\"\nworld_size = 8\nseqlen = 131072\n",
        )
        .unwrap();
        let file = Request::from_toml_file(&f).unwrap();
        let p = file.clone().overlay(Request { world_size: Some(16), ..Request::default() }).plan().unwrap();
        assert_eq!((p.world, p.heads.q, p.masks.len(), p.masks[0].weight), (16, 32, 2, 3.0));
        assert_eq!(p.masks[0].params.get("docs"), Some("prolong64k"));
        std::fs::write(&f, "[advise]\nmask = [\"causal\"]\nworld = 8\n").unwrap();
        let e = Request::from_toml_file(&f).unwrap_err().to_string();
        assert!(e.contains("world") && e.contains("a.toml"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
