//! `double-ring` (LoongTrain): the W ranks form O = W/I outer rings of inner rings of size I (inner =
//! consecutive ranks, i.e. inside a node). KV circulates around the inner ring (next block in flight
//! during compute) while the block for the next outer round is prefetched from the outer neighbour
//! for the whole inner round — inter-node traffic hides behind a whole round of compute. `--inner-ring`
//! sets I (default: the largest divisor of W not above √W; I = W is ring-p2p). Zigzag sharding by
//! default. Ring engine with U = 1.

use crate::case::{CpOptions, Sharding};
use crate::cp::engine::ring::RingEngine;
use crate::cp::engine::ring_walk::RingDegrees;
use crate::cp::engine::Engine;
use crate::cp::schedule::CpLayout;
use crate::cp::strategy::StrategyDef;
use crate::cp::CpError;

pub const STRATEGY: StrategyDef = StrategyDef {
    name: "double-ring",
    summary: "inner ring (intra-node) × outer ring with prefetch (LoongTrain); --inner-ring I",
    options: &["inner_ring"],
    default_sharding: Sharding::Zigzag,
    resolve,
    engine,
};

/// Default inner ring size: the largest divisor of `world` not above √world.
pub fn default_inner(world: usize) -> usize {
    (1..=world).filter(|d| world.is_multiple_of(*d) && d * d <= world).max().unwrap_or(1)
}

/// The inner ring filled in.
fn resolve(world: usize, _layout: &CpLayout, o: &CpOptions) -> CpOptions {
    CpOptions { inner_ring: Some(o.inner_ring.unwrap_or_else(|| default_inner(world))), ..*o }
}

fn engine(world: usize, layout: &CpLayout, o: &CpOptions) -> Result<Box<dyn Engine>, CpError> {
    let inner = o.inner_ring.unwrap_or_else(|| default_inner(world));
    Ok(Box::new(RingEngine(RingDegrees::new(world, 1, inner, layout)?)))
}
