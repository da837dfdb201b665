//! `ring-p2p` (Ring Attention): KV blocks travel around a ring of all W ranks; at each of the W steps a
//! rank computes its queries against the block it holds while the next block is already in flight
//! (non-blocking send/recv). `ring-p2p-zigzag` is the same schedule on zigzag sharding (rank r holds
//! chunks r and 2W−1−r), which balances causal masks. Engine: [`super::usp`] with U = 1, I = W.

use super::registry::{Engine, StrategyDef};
use super::schedule::{CpLayout, Schedule};
use super::shard::{Shard, Sharding};
use super::usp::{schedule_plan, UspPlan};
use super::CpError;
use crate::mask::Mask;

pub const STRATEGY: StrategyDef =
    StrategyDef { name: "ring-p2p", summary: "KV ring over all ranks, next block in flight during compute", default_sharding: Sharding::Contiguous, plan };

pub const STRATEGY_ZIGZAG: StrategyDef = StrategyDef {
    name: "ring-p2p-zigzag",
    summary: "ring-p2p on zigzag sharding (chunks r and 2W−1−r): balanced causal work",
    default_sharding: Sharding::Zigzag,
    plan,
};

pub fn plan(world: usize, layout: &CpLayout) -> Result<Engine, CpError> {
    Ok(Engine::Usp(UspPlan::new(world, 1, world, layout)?))
}

/// Pure schedule of this strategy on `shard` (contiguous or zigzag).
pub fn schedule(world: usize, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Result<Schedule, CpError> {
    let Engine::Usp(p) = plan(world, layout)? else { unreachable!() };
    Ok(schedule_plan(if shard.kind == Sharding::Zigzag { STRATEGY_ZIGZAG.name } else { STRATEGY.name }, &p, shard, mask, layout))
}
