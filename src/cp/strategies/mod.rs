//! One file per CP strategy: its [`StrategyDef`](super::strategy::StrategyDef) and the engine degrees
//! it resolves to. Listed in [`super::registry`].

pub mod double_ring;
pub mod ring_allgather;
pub mod ring_p2p;
pub mod ulysses;
pub mod usp;
