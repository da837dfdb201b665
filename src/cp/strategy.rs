//! What a CP strategy is: a name, the options it takes, a default sharding, and how it resolves to an
//! engine for a world size and the case's options. One small file per strategy in
//! [`super::strategies`], one line in [`super::registry`].

use super::engine::Engine;
use super::schedule::CpLayout;
use super::CpError;
use crate::case::{CpOptions, Sharding};

/// Resolves a strategy at `world` ranks for a layout and the case's options.
pub type EngineFor = fn(usize, &CpLayout, &CpOptions) -> Result<Box<dyn Engine>, CpError>;

/// The case's options with the strategy's defaults filled in (the degrees that run).
pub type ResolveFor = fn(usize, &CpLayout, &CpOptions) -> CpOptions;

pub struct StrategyDef {
    pub name: &'static str,
    pub summary: &'static str,
    /// The [`CpOptions::KEYS`] this strategy takes besides `sharding` (which every strategy takes).
    /// Any other option given is bad input, so it never reaches (or changes the id of) a case.
    pub options: &'static [&'static str],
    /// Sharding used unless the case's options override it.
    pub default_sharding: Sharding,
    /// The options that run: the given ones, the strategy's defaults for the others it takes.
    pub resolve: ResolveFor,
    /// The engine at `world` ranks for this layout and these (resolved) options (errors name the flag
    /// to change).
    pub engine: EngineFor,
}

impl StrategyDef {
    /// Whether the strategy takes option `key` (a [`CpOptions::KEYS`] name).
    pub fn takes(&self, key: &str) -> bool {
        key == "sharding" || self.options.contains(&key)
    }

    /// The options set in `o` that this strategy does not take (empty: all are taken).
    pub fn not_taken(&self, o: &CpOptions) -> Vec<&'static str> {
        o.keys_set().into_iter().filter(|k| !self.takes(k)).collect()
    }

    /// `o` restricted to the options this strategy takes.
    pub fn keep_taken(&self, o: &CpOptions) -> CpOptions {
        o.only(|k| self.takes(k))
    }

    /// What the strategy takes, for messages: `ulysses_degree, inner_ring, sharding` or `sharding`.
    pub fn takes_list(&self) -> String {
        self.options.iter().copied().chain(["sharding"]).collect::<Vec<_>>().join(", ")
    }
}

/// [`ResolveFor`] of a strategy without defaults to fill: the options as given.
pub fn as_given(_world: usize, _layout: &CpLayout, o: &CpOptions) -> CpOptions {
    *o
}
