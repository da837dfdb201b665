//! `ulysses` (DeepSpeed-Ulysses): an all-to-all turns sequence shards into head shards (every rank
//! gets the whole sequence for Hq/W query heads), each rank runs one local call, and an all-to-all
//! turns the output back. Needs W | Hq; when W does not divide the KV heads (cp > kv heads) the KV
//! heads are repeated (by the smallest factor r of Hq/Hkv with W | Hkv·r) before the all-to-all, and
//! the repeated heads' gradients are summed back — the row's note says so. Engine: [`super::usp`]
//! with U = W.

use super::registry::{Engine, StrategyDef};
use super::schedule::{CpLayout, Schedule};
use super::shard::{Shard, Sharding};
use super::usp::{schedule_plan, UspPlan};
use super::CpError;
use crate::mask::Mask;

pub const STRATEGY: StrategyDef =
    StrategyDef {
        name: "ulysses", summary: "all-to-all sequence↔heads, whole sequence per head group (W | Hq)", default_sharding: Sharding::Contiguous, plan
    };

pub fn plan(world: usize, layout: &CpLayout) -> Result<Engine, CpError> {
    Ok(Engine::Usp(UspPlan::new(world, world, 1, layout)?))
}

pub fn schedule(world: usize, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Result<Schedule, CpError> {
    let Engine::Usp(p) = plan(world, layout)? else { unreachable!() };
    Ok(schedule_plan(STRATEGY.name, &p, shard, mask, layout))
}
