//! `ring-p2p` (Ring Attention): KV blocks travel around a ring of all W ranks; at each of the W steps a
//! rank computes its queries against the block it holds while the next block is already in flight
//! (non-blocking send/recv). `ring-p2p-zigzag` is the same schedule on zigzag sharding (rank r holds
//! chunks r and 2W−1−r), which balances causal masks. Ring engine with U = 1, I = W.

use crate::case::{CpOptions, Sharding};
use crate::cp::engine::ring::RingEngine;
use crate::cp::engine::ring_walk::RingDegrees;
use crate::cp::engine::Engine;
use crate::cp::schedule::CpLayout;
use crate::cp::strategy::{as_given, StrategyDef};
use crate::cp::CpError;

pub const STRATEGY: StrategyDef = StrategyDef {
    name: "ring-p2p",
    summary: "KV ring over all ranks, next block in flight during compute",
    options: &[],
    default_sharding: Sharding::Contiguous,
    resolve: as_given,
    engine,
};

pub const STRATEGY_ZIGZAG: StrategyDef = StrategyDef {
    name: "ring-p2p-zigzag",
    summary: "ring-p2p on zigzag sharding (chunks r and 2W−1−r): balanced causal work",
    options: &[],
    default_sharding: Sharding::Zigzag,
    resolve: as_given,
    engine,
};

fn engine(world: usize, layout: &CpLayout, _o: &CpOptions) -> Result<Box<dyn Engine>, CpError> {
    Ok(Box::new(RingEngine(RingDegrees::new(world, 1, world, layout)?)))
}
