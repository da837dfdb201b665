//! The strategy registry: adding a strategy is one file plus one line in [`STRATEGIES`]. Each file
//! declares a [`StrategyDef`] whose `plan` maps (world, layout) to an [`Engine`]; the engines run the
//! forward, backward and pure schedule.

use tch::Tensor;

use super::comm::Comm;
use super::schedule::{CpLayout, Schedule};
use super::shard::{Shard, Sharding};
use super::usp::UspPlan;
use super::{double_ring, ring_allgather, ring_p2p, ulysses, usp, CpError, Problem};
use crate::mask::Mask;

pub struct StrategyDef {
    pub name: &'static str,
    pub summary: &'static str,
    /// Sharding used unless `--sharding` overrides it.
    pub default_sharding: Sharding,
    pub plan: fn(usize, &CpLayout) -> Result<Engine, CpError>,
}

/// How a strategy runs: the head × double-ring engine with its degrees, or the all-gather engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Usp(UspPlan),
    AllGather,
}

pub const STRATEGIES: &[StrategyDef] =
    &[ring_p2p::STRATEGY, ring_p2p::STRATEGY_ZIGZAG, ring_allgather::STRATEGY, ulysses::STRATEGY, usp::STRATEGY, double_ring::STRATEGY];

pub fn find_strategy(name: &str) -> Result<&'static StrategyDef, CpError> {
    STRATEGIES.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = STRATEGIES.iter().map(|s| s.name).collect();
        CpError::Config(format!("--strategy: unknown strategy `{name}` (expected one of {})", names.join(", ")))
    })
}

impl Engine {
    /// A note for the row: degrees, and KV head repetition when Ulysses needed it.
    pub fn note(&self, layout: &CpLayout) -> String {
        match self {
            Engine::AllGather => String::new(),
            Engine::Usp(p) => {
                let mut n = format!("ulysses={} ring={} inner={} outer={}", p.ulysses, p.ring, p.inner, p.outer());
                let r = p.kv_repeat(layout);
                if r > 1 {
                    n.push_str(&format!(
                        "; kv heads repeated {r}× ({}→{}) because ulysses degree {} does not divide {} kv heads",
                        layout.heads_kv,
                        layout.heads_kv * r,
                        p.ulysses,
                        layout.heads_kv
                    ));
                }
                n
            }
        }
    }

    pub fn forward(&self, comm: &dyn Comm, p: &Problem, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor), CpError> {
        match self {
            Engine::Usp(plan) => usp::forward(comm, p, plan, q, k, v),
            Engine::AllGather => ring_allgather::forward(comm, p, q, k, v),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        comm: &dyn Comm,
        p: &Problem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor), CpError> {
        match self {
            Engine::Usp(plan) => usp::backward(comm, p, plan, q, k, v, out, lse, dout),
            Engine::AllGather => ring_allgather::backward(comm, p, q, k, v, out, lse, dout),
        }
    }

    /// The pure schedule (see [`Schedule`]).
    pub fn schedule(&self, name: &str, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Schedule {
        match self {
            Engine::Usp(plan) => usp::schedule_plan(name, plan, shard, mask, layout),
            Engine::AllGather => ring_allgather::schedule_allgather(name, shard, mask, layout),
        }
    }
}

/// Schedule of strategy `name` at `world` ranks (pure): resolves the plan, then the engine's schedule.
pub fn schedule(name: &str, world: usize, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Result<Schedule, CpError> {
    let def = find_strategy(name)?;
    Ok((def.plan)(world, layout)?.schedule(def.name, shard, mask, layout))
}
