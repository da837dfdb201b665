//! The harness: one case end to end — inputs, the correctness gate, the measurement, the row — for a
//! kernel backend ([`kernel`]) or a CP strategy on its ranks ([`cp`]). The nccl-tests idea: the harness
//! owns inputs, checking, timing and the row; a backend or a strategy only computes.

pub mod cp;
pub mod cp_power;
pub mod gate;
pub mod kernel;

use serde::{Deserialize, Serialize};

use crate::case::Case;
use crate::measure::MeasureSettings;

/// One unit of work, as data: the case, how to measure it and the run it belongs to. The runner sends
/// it to its kernel worker (one JSON line) and to the ranks of a CP case (a file every rank reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkItem {
    pub run_id: String,
    pub case: Case,
    pub settings: MeasureSettings,
    /// Workers of `ext:` backends (the suite's `[external]` table).
    #[serde(default)]
    pub external: crate::backend::external::ExternalConfig,
}
