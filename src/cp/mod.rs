//! Context parallelism: communicators ([`comm`]), sequence sharding ([`shard`]), the schedule data
//! model ([`schedule`]), engines ([`engine`]: the ring engine and the all-gather engine), one file per
//! strategy ([`strategies`]) listed in the [`registry`], the setup of a CP case at its world size
//! ([`setup`]) and the collective benchmark of `attnbench comm` ([`commbench`]). The harness that
//! checks and times one CP case on its ranks is `crate::harness::cp`.
//!
//! Tensor conventions are the attention core's: q `[B, Hq, S, D]`, k/v `[B, Hkv, S, D]`, lse
//! `[B, Hq, S]`. A rank's local tensors hold its shard's token ranges concatenated along S.

pub mod comm;
pub mod commbench;
pub mod engine;
pub mod registry;
pub mod schedule;
pub mod setup;
pub mod shard;
pub mod strategies;
pub mod strategy;

use crate::attn::KernelError;
use comm::CommError;

/// Failure of a CP strategy on one rank.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    #[error("communication: {0}")]
    Comm(#[from] CommError),
    #[error("kernel: {0}")]
    Attn(#[from] KernelError),
    /// The strategy cannot run this configuration (degrees, heads, world size); names the flag.
    #[error("{0}")]
    Config(String),
    #[error("measurement: {0}")]
    Measure(#[from] crate::measure::MeasureError),
}

impl From<crate::sys::SysError> for CpError {
    fn from(e: crate::sys::SysError) -> Self {
        CpError::Attn(e.into())
    }
}

impl From<tch::TchError> for CpError {
    fn from(e: tch::TchError) -> Self {
        CpError::Attn(e.into())
    }
}
