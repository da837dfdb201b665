//! `usp` (unified sequence parallelism): Ulysses all-to-all of degree U (`--ulysses-degree`) inside
//! groups of consecutive ranks × ring attention of degree R = W/U across the groups; zigzag sharding.
//! With `--inner-ring I` the ring part is itself a double ring — I consecutive ring members form an
//! inner ring, R/I of them an outer ring with prefetch — which is LoongTrain (USP with a double ring
//! inside; the simulator's published `loongtrain` is this strategy). Ring engine with U, R, I
//! (I = R without the option: a plain ring).

use crate::case::{CpOptions, Sharding};
use crate::cp::engine::ring::RingEngine;
use crate::cp::engine::ring_walk::RingDegrees;
use crate::cp::engine::Engine;
use crate::cp::schedule::CpLayout;
use crate::cp::strategy::StrategyDef;
use crate::cp::CpError;

pub const STRATEGY: StrategyDef = StrategyDef {
    name: "usp",
    summary: "Ulysses all-to-all (degree --ulysses-degree U) × ring across groups (W/U); --inner-ring I: LoongTrain's double ring",
    options: &["ulysses_degree", "inner_ring"],
    default_sharding: Sharding::Zigzag,
    resolve,
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

/// The Ulysses degree filled in; the inner ring stays as given (none: a plain ring).
fn resolve(world: usize, layout: &CpLayout, o: &CpOptions) -> CpOptions {
    CpOptions { ulysses_degree: Some(o.ulysses_degree.unwrap_or_else(|| default_ulysses(world, layout))), ..*o }
}

fn engine(world: usize, layout: &CpLayout, o: &CpOptions) -> Result<Box<dyn Engine>, CpError> {
    let u = o.ulysses_degree.unwrap_or_else(|| default_ulysses(world, layout));
    let ring = (world / u.max(1)).max(1);
    Ok(Box::new(RingEngine(RingDegrees::new(world, u, o.inner_ring.unwrap_or(ring), layout)?)))
}
