//! The strategy registry: adding a strategy is one file in [`super::strategies`] plus one line in
//! [`STRATEGIES`].

use super::strategies::{double_ring, ring_allgather, ring_p2p, ulysses, usp};
use super::strategy::StrategyDef;
use super::CpError;

pub const STRATEGIES: &[StrategyDef] =
    &[ring_p2p::STRATEGY, ring_p2p::STRATEGY_ZIGZAG, ring_allgather::STRATEGY, ulysses::STRATEGY, usp::STRATEGY, double_ring::STRATEGY];

pub fn find_strategy(name: &str) -> Result<&'static StrategyDef, CpError> {
    STRATEGIES.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = STRATEGIES.iter().map(|s| s.name).collect();
        CpError::Config(format!("--strategy: unknown strategy `{name}` (expected one of {})", names.join(", ")))
    })
}
