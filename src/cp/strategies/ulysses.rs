//! `ulysses` (DeepSpeed-Ulysses): an all-to-all turns sequence shards into head shards (every rank
//! gets the whole sequence for Hq/W query heads), each rank runs one local call, and an all-to-all
//! turns the output back. Needs W | Hq; when W does not divide the KV heads (cp > kv heads) the KV
//! heads are repeated (by the smallest factor r of Hq/Hkv with W | Hkv·r) before the all-to-all, and
//! the repeated heads' gradients are summed back — the row's note says so. Ring engine with U = W.

use crate::case::{CpOptions, Sharding};
use crate::cp::engine::ring::RingEngine;
use crate::cp::engine::ring_walk::RingDegrees;
use crate::cp::engine::Engine;
use crate::cp::schedule::CpLayout;
use crate::cp::strategy::{as_given, StrategyDef};
use crate::cp::CpError;

pub const STRATEGY: StrategyDef = StrategyDef {
    name: "ulysses",
    summary: "all-to-all sequence↔heads, whole sequence per head group (W | Hq)",
    options: &[],
    default_sharding: Sharding::Contiguous,
    resolve: as_given,
    engine,
};

fn engine(world: usize, layout: &CpLayout, _o: &CpOptions) -> Result<Box<dyn Engine>, CpError> {
    Ok(Box::new(RingEngine(RingDegrees::new(world, world, 1, layout)?)))
}
