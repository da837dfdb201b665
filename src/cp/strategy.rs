//! What a CP strategy is: a name, a default sharding, and how it resolves to an engine for a world
//! size and the case's options. One small file per strategy in [`super::strategies`], one line in
//! [`super::registry`].

use super::engine::Engine;
use super::schedule::CpLayout;
use super::CpError;
use crate::case::{CpOptions, Sharding};

/// Resolves a strategy at `world` ranks for a layout and the case's options.
pub type EngineFor = fn(usize, &CpLayout, &CpOptions) -> Result<Box<dyn Engine>, CpError>;

pub struct StrategyDef {
    pub name: &'static str,
    pub summary: &'static str,
    /// Sharding used unless the case's options override it.
    pub default_sharding: Sharding,
    /// The engine at `world` ranks for this layout and these options (errors name the flag to change).
    pub engine: EngineFor,
}
