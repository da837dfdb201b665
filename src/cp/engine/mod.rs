//! Engines: how a strategy moves data and calls the attention kernel. A strategy (one small file in
//! `cp::strategies`) only chooses an engine and its degrees; the engine runs the forward and the
//! backward on a rank and produces the pure [`Schedule`] the simulator and the tests read.
//!
//! - [`ring::RingEngine`]: Ulysses all-to-all inside groups × a (double) ring across them — ring P2P,
//!   zigzag, Ulysses, USP and double ring are all degrees of it ([`ring_walk::RingDegrees`]).
//! - [`allgather::AllGatherEngine`]: all-gather K/V, one local call, reduce-scatter dK/dV.

pub mod allgather;
pub mod ring;
pub mod ring_schedule;
pub mod ring_walk;

use tch::Tensor;

use super::comm::Comm;
use super::schedule::{CpLayout, Schedule};
use super::shard::Shard;
use super::CpError;
use crate::attn::MaskedAttention;
use crate::mask::Mask;

/// What every rank knows about the case (no tensors).
pub struct Problem<'a> {
    pub mask: &'a Mask,
    pub shard: &'a Shard,
    /// Softmax scale (1/√D by default).
    pub scale: f64,
    pub layout: CpLayout,
    /// The case's per-rank attention kernel.
    pub attention: &'a dyn MaskedAttention,
}

/// A CP engine with its degrees resolved for one world size.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// Degrees and adaptations for the row's note (e.g. KV heads repeated for Ulysses).
    fn note(&self, layout: &CpLayout) -> String;
    /// This rank's forward: local q `[B, Hq, S_r, D]`, k/v `[B, Hkv, S_r, D]` (the rank's shard, ranges
    /// concatenated) → (out `[B, Hq, S_r, D]`, lse `[B, Hq, S_r]`).
    fn forward(&self, comm: &dyn Comm, p: &Problem, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor), CpError>;
    /// This rank's backward given the FINAL out / lse of its rows and dout → (dq, dk, dv) of its shard.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        comm: &dyn Comm,
        p: &Problem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        lse: &Tensor,
        dout: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor), CpError>;
    /// The pure schedule of strategy `name`: every rank's pieces, messages and glue work per step.
    fn schedule(&self, name: &str, shard: &Shard, mask: &Mask, layout: &CpLayout) -> Schedule;
    /// KV heads of the tensors a rank holds when it computes a piece (after any all-to-all).
    fn piece_heads_kv(&self, layout: &CpLayout) -> usize;
    /// Steps an outer-ring prefetch stays in flight after the step that posts it (0 without one).
    fn outer_prefetch_steps(&self) -> usize;
}
