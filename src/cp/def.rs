//! What a context-parallel case computes — strategy, mask, shape, dtype, pass, device and the
//! strategy's degrees — independent of how it runs: on real ranks (`cp::exec::CpSpec`, which adds the
//! measurement settings) or on virtual ones (`sim::SimSpec`, which adds the world and the cluster
//! model). Also the expansion of a command line's repeatable `--strategy` / `--mask` into cases,
//! shared by `attnbench cp` and `attnbench simulate`.

use super::registry::{find_strategy, Engine};
use super::schedule::{CpLayout, Schedule};
use super::shard::{Shard, Sharding};
use crate::case::{Case, CaseKind, DType, DeviceKind, HeadLayout};
use crate::error::BadInput;
use crate::flops::Pass;
use crate::mask::{build_pattern, Mask, Params};

#[derive(Debug, Clone)]
pub struct CpDef {
    pub strategy: String,
    pub pattern: String,
    pub params: Params,
    /// Total tokens (all ranks together).
    pub seqlen: usize,
    pub batch: usize,
    pub heads: HeadLayout,
    pub head_dim: usize,
    pub dtype: DType,
    pub pass: Pass,
    pub device: DeviceKind,
    /// Ulysses (head-parallel) degree for `usp`; 0 = the strategy's default.
    pub ulysses_degree: usize,
    /// Inner ring size for `double-ring`; 0 = the strategy's default.
    pub inner_ring: usize,
    /// Overrides the strategy's sharding.
    pub sharding: Option<Sharding>,
}

/// Everything a definition resolves to at a world size, before any tensor exists: the mask, the
/// sharding, the layout, the strategy's engine and its schedule. The real executor and the simulator
/// both start from this, so the virtual ranks plan exactly what the real ones do.
pub struct CpPlan {
    pub mask: Mask,
    pub shard: Shard,
    pub layout: CpLayout,
    pub engine: Engine,
    pub schedule: Schedule,
}

impl CpDef {
    /// The shape of the problem as schedules see it.
    pub fn layout(&self) -> CpLayout {
        CpLayout {
            batch: self.batch,
            heads_q: self.heads.q,
            heads_kv: self.heads.kv,
            head_dim: self.head_dim,
            elem_bytes: self.dtype.size(),
            pass: self.pass,
            ulysses_degree: self.ulysses_degree,
            inner_ring: self.inner_ring,
        }
    }

    /// Resolves the definition at `world` ranks. Errors are bad input, as one line naming the flag
    /// (`--strategy`, `--mask`, `--ulysses-degree`, …).
    pub fn plan(&self, world: usize) -> Result<CpPlan, String> {
        let def = find_strategy(&self.strategy).map_err(|e| e.to_string())?;
        if world == 0 {
            return Err("--world-size must be at least 1".into());
        }
        let hm = build_pattern(&self.pattern, self.seqlen, &self.params).map_err(|e| format!("--mask {}: {e}", self.pattern))?;
        if !hm.is_shared() {
            return Err(format!("--mask {}: per-head masks are not supported by CP strategies yet", self.pattern));
        }
        let mask = hm.groups.into_iter().next().expect("one group");
        let layout = self.layout();
        let engine = (def.plan)(world, &layout).map_err(|e| e.to_string())?;
        let shard = Shard::new(self.sharding.unwrap_or(def.default_sharding), self.seqlen, world).map_err(|e| e.to_string())?;
        let schedule = engine.schedule(def.name, &shard, &mask, &layout);
        Ok(CpPlan { mask, shard, layout, engine, schedule })
    }
    /// The case identity of this definition at `world` ranks: per-rank kernel `sliced`, kind `cp`,
    /// non-default strategy options in `strategy_params`.
    pub fn case(&self, world: usize) -> Case {
        let mut c = Case::kernel("sliced", &self.pattern, self.params.clone(), self.seqlen, self.heads, self.head_dim, self.dtype, self.pass, self.device);
        c.kind = CaseKind::Cp;
        c.strategy = self.strategy.clone();
        c.batch = self.batch;
        c.world_size = world;
        let mut sp = Params::new();
        if self.ulysses_degree > 0 {
            sp = sp.set("ulysses_degree", self.ulysses_degree);
        }
        if self.inner_ring > 0 {
            sp = sp.set("inner_ring", self.inner_ring);
        }
        if let Some(s) = self.sharding {
            sp = sp.set("sharding", s);
        }
        c.strategy_params = sp;
        c
    }

    /// One definition per strategy × mask of a command line, in that order, from `self` (whose
    /// strategy and pattern are ignored). `all` among the strategies means every registered one; a
    /// mask may carry its own parameters as `name?key=value&key=value`, added to `--set`'s.
    pub fn expand(&self, strategies: &[String], masks: &[String]) -> Result<Vec<CpDef>, BadInput> {
        let strategies: Vec<String> =
            if strategies.iter().any(|s| s == "all") { super::registry::STRATEGIES.iter().map(|s| s.name.to_string()).collect() } else { strategies.to_vec() };
        let mut out = Vec::with_capacity(strategies.len() * masks.len());
        for st in &strategies {
            for m in masks {
                let (name, own) = m.split_once('?').unwrap_or((m.as_str(), ""));
                let mut d = self.clone();
                d.strategy = st.clone();
                d.pattern = name.to_string();
                if !own.is_empty() {
                    let kv: Vec<&str> = own.split('&').collect();
                    let extra = Params::parse_kv(&kv).map_err(|e| BadInput(format!("--mask {m}: {e}")))?;
                    d.params.0.extend(extra.0);
                }
                out.push(d);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
impl CpDef {
    /// A small CPU case for tests: batch 1, D = 16, fp32, the strategy's default degrees and sharding.
    pub(crate) fn for_test(strategy: &str, pattern: &str, params: &[(&str, &str)], seqlen: usize, heads: HeadLayout, pass: Pass) -> CpDef {
        CpDef {
            strategy: strategy.into(),
            pattern: pattern.into(),
            params: params.iter().fold(Params::new(), |p, (k, v)| p.set(k, v)),
            seqlen,
            batch: 1,
            heads,
            head_dim: 16,
            dtype: DType::Fp32,
            pass,
            device: DeviceKind::Cpu,
            ulysses_degree: 0,
            inner_ring: 0,
            sharding: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> CpDef {
        CpDef::for_test("", "", &[("doc_lens", "3,5")], 64, HeadLayout { q: 8, kv: 2 }, Pass::Fwd)
    }

    #[test]
    fn expand_is_strategies_times_masks_with_own_parameters() {
        let v = base().expand(&["ring-p2p".into(), "ulysses".into()], &["causal".into(), "sliding_window?window_left=4&window_right=2".into()]).unwrap();
        let names: Vec<(String, String)> = v.iter().map(|d| (d.strategy.clone(), d.pattern.clone())).collect();
        assert_eq!(
            names,
            [("ring-p2p", "causal"), ("ring-p2p", "sliding_window"), ("ulysses", "causal"), ("ulysses", "sliding_window")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(v[1].params, Params::new().set("doc_lens", "3,5").set("window_left", "4").set("window_right", "2"));
        assert_eq!(v[0].params, base().params);
        let all = base().expand(&["all".into()], &["full".into()]).unwrap();
        assert_eq!(all.len(), super::super::registry::STRATEGIES.len());
        assert!(base().expand(&["ring-p2p".into()], &["causal?oops".into()]).unwrap_err().0.starts_with("--mask causal?oops"));
    }

    #[test]
    fn case_identity_names_non_default_options_only() {
        let mut d = base();
        d.strategy = "usp".into();
        d.pattern = "causal".into();
        assert!(d.case(4).strategy_params.0.is_empty());
        d.ulysses_degree = 2;
        d.sharding = Some(Sharding::Contiguous);
        let c = d.case(4);
        assert_eq!((c.kind, c.world_size, c.backend.as_str()), (CaseKind::Cp, 4, "sliced"));
        assert_eq!(c.strategy_params, Params::new().set("ulysses_degree", 2).set("sharding", Sharding::Contiguous));
    }
}
