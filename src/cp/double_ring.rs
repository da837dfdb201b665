//! `double-ring` (LoongTrain): the W ranks form O = W/I outer rings of inner rings of size I (inner =
//! consecutive ranks, i.e. inside a node). KV circulates around the inner ring (next block in flight
//! during compute) while the block for the next outer round is prefetched from the outer neighbour
//! for the whole inner round — inter-node traffic hides behind a whole round of compute. `--inner-ring`
//! sets I (default: the largest divisor of W not above √W; I = W is ring-p2p). Zigzag sharding by
//! default. Engine: [`super::usp`] with U = 1.

use super::registry::{Engine, StrategyDef};
use super::schedule::{CpLayout, Schedule};
use super::shard::{Shard, Sharding};
use super::usp::{schedule_plan, UspPlan};
use super::CpError;
use crate::mask::Mask;

pub const STRATEGY: StrategyDef = StrategyDef {
    name: "double-ring",
    summary: "inner ring (intra-node) × outer ring with prefetch (LoongTrain); --inner-ring I",
    default_sharding: Sharding::Zigzag,
    plan,
};

/// Default inner ring size: the largest divisor of `world` not above √world.
pub fn default_inner(world: usize) -> usize {
    (1..=world).filter(|d| world.is_multiple_of(*d) && d * d <= world).max().unwrap_or(1)
}

pub fn plan(world: usize, layout: &CpLayout) -> Result<Engine, CpError> {
    let inner = if layout.inner_ring == 0 { default_inner(world) } else { layout.inner_ring };
    Ok(Engine::Usp(UspPlan::new(world, 1, inner, layout)?))
}

pub fn schedule(world: usize, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Result<Schedule, CpError> {
    let Engine::Usp(p) = plan(world, layout)? else { unreachable!() };
    Ok(schedule_plan(STRATEGY.name, &p, shard, mask, layout))
}
