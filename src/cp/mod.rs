//! Context parallelism: communicators ([`comm`]), sequence sharding ([`shard`]), one file per strategy,
//! their registry, and the executor that checks and times one CP case.

pub mod comm;
pub mod shard;
