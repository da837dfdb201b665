//! `usp` (unified sequence parallelism): Ulysses all-to-all of degree U (`--ulysses-degree`) inside
//! groups of consecutive ranks × ring attention of degree W/U across the groups; zigzag sharding.
//! Ring engine with U, R = I = W/U.

use crate::case::{CpOptions, Sharding};
use crate::cp::engine::ring::RingEngine;
use crate::cp::engine::ring_walk::RingDegrees;
use crate::cp::engine::Engine;
use crate::cp::schedule::CpLayout;
use crate::cp::strategy::StrategyDef;
use crate::cp::CpError;

pub const STRATEGY: StrategyDef = StrategyDef {
    name: "usp",
    summary: "Ulysses all-to-all (degree --ulysses-degree U) × ring across groups (W/U); zigzag",
    default_sharding: Sharding::Zigzag,
    engine,
};

/// Default Ulysses degree: the largest divisor of `world` that divides the query and KV heads with
/// U² ≤ W (a balanced 2-D split); 1 (a pure ring) when none does.
pub fn default_ulysses(world: usize, layout: &CpLayout) -> usize {
    (1..=world)
        .filter(|u| world.is_multiple_of(*u) && layout.heads_q.is_multiple_of(*u) && layout.heads_kv.is_multiple_of(*u) && u * u <= world)
        .max()
        .unwrap_or(1)
}

fn engine(world: usize, layout: &CpLayout, o: &CpOptions) -> Result<Box<dyn Engine>, CpError> {
    let u = o.ulysses_degree.unwrap_or_else(|| default_ulysses(world, layout));
    let ring = (world / u.max(1)).max(1);
    Ok(Box::new(RingEngine(RingDegrees::new(world, u, ring, layout)?)))
}
