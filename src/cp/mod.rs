//! Context parallelism: communicators ([`comm`]), sequence sharding ([`shard`]), one file per strategy
//! ([`ring_p2p`], [`ring_allgather`], [`ulysses`], [`usp`], [`double_ring`]), their [`registry`], the
//! schedule data model ([`schedule`]) and the executor that checks and times one CP case ([`exec`]).
//!
//! Tensor conventions are the sliced backend's: q `[B, Hq, S, D]`, k/v `[B, Hkv, S, D]`, lse
//! `[B, Hq, S]`. A rank's local tensors hold its shard's token ranges concatenated along S.

pub mod comm;
pub mod commbench;
pub mod def;
pub mod double_ring;
pub mod exec;
pub mod registry;
pub mod ring_allgather;
pub mod ring_p2p;
pub mod schedule;
pub mod shard;
pub mod ulysses;
pub mod usp;

use tch::Kind;

use crate::backend::BackendError;
use crate::mask::Mask;
use comm::CommError;
use schedule::CpLayout;
use shard::Shard;

/// Failure of a CP strategy on one rank.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    #[error("communication: {0}")]
    Comm(#[from] CommError),
    #[error("kernel: {0}")]
    Backend(#[from] BackendError),
    /// The strategy cannot run this configuration (degrees, heads, world size); names the flag.
    #[error("{0}")]
    Config(String),
    #[error("measurement: {0}")]
    Measure(#[from] crate::measure::MeasureError),
}

impl From<crate::attn::AttnError> for CpError {
    fn from(e: crate::attn::AttnError) -> Self {
        CpError::Backend(e.into())
    }
}

impl From<crate::sys::SysError> for CpError {
    fn from(e: crate::sys::SysError) -> Self {
        CpError::Backend(e.into())
    }
}

/// What every rank knows about the case (no tensors).
pub struct Problem<'a> {
    pub mask: &'a Mask,
    pub shard: &'a Shard,
    /// Softmax scale (1/√D by default).
    pub scale: f64,
    pub layout: CpLayout,
}

/// Accumulation kind for partial results and travelling gradients: f64 for f64, else f32.
pub fn acc_kind(k: Kind) -> Kind {
    if k == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}
