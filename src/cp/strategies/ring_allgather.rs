//! `ring-allgather` (Llama 3 style): all-gather K,V to every rank, one local call of the case's kernel;
//! reduce-scatter dK,dV in the backward. The all-gather engine.

use crate::case::{CpOptions, Sharding};
use crate::cp::engine::allgather::AllGatherEngine;
use crate::cp::engine::Engine;
use crate::cp::schedule::CpLayout;
use crate::cp::strategy::{as_given, StrategyDef};
use crate::cp::CpError;

pub const STRATEGY: StrategyDef = StrategyDef {
    name: "ring-allgather",
    summary: "all-gather K,V to every rank, one local call; reduce-scatter dK,dV (Llama 3)",
    options: &[],
    default_sharding: Sharding::Contiguous,
    resolve: as_given,
    engine,
};

fn engine(_world: usize, _layout: &CpLayout, _o: &CpOptions) -> Result<Box<dyn Engine>, CpError> {
    Ok(Box::new(AllGatherEngine))
}
