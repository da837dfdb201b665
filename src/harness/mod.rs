//! The harness: one case end to end — inputs, the correctness gate, the measurement, the row — for a
//! kernel backend ([`kernel`]) or a CP strategy on its ranks ([`cp`]). The nccl-tests idea: the harness
//! owns inputs, checking, timing and the row; a backend or a strategy only computes.

pub mod cp;
pub mod gate;
pub mod kernel;
