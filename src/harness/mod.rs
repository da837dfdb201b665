//! The harness: one case end to end — inputs, the correctness gate, the measurement, the row — for a
//! kernel backend ([`kernel`]), an external kernel's worker ([`external`]), a CP strategy on its ranks
//! ([`cp`], and [`ranks`]: a job's list of cases on one rank) or a projection ([`simulated`]). The
//! nccl-tests idea: the harness owns inputs, checking, timing and the row; a backend or a strategy
//! only computes. [`run`] is the one entry for a unit of work; [`gate`] the one comparer and tolerance
//! table; [`row`] the one row set-up of a one-device case; [`pass::one_pass`] the one fwd/bwd/fwd+bwd dispatch; `measure::repeats` the one repeat policy.

pub mod cp;
pub mod cp_power;
pub mod external;
pub mod gate;
pub mod kernel;
pub mod pass;
pub mod ranks;
pub mod row;
pub mod simulated;

use serde::{Deserialize, Serialize};

use crate::case::{Case, CaseKind};
use crate::measure::MeasureSettings;
use crate::results::{Row, Status};

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

/// Runs one unit of work in this process and returns its row, whatever the case's kind: a built-in
/// kernel ([`kernel`]), an `ext:` kernel through its worker ([`external`]), a CP case on a world of
/// `world_size` threads ([`cp`] through [`ranks::run_local`]; `attnbench run` starts real ranks under
/// mpirun instead, which run the same [`cp::run_case`]), or a projection ([`simulated`]). Never an
/// `Err`: bad input reaching here (the plan validates it first) is an `error` row.
pub fn run(item: &WorkItem) -> Row {
    let (case, settings, run_id) = (&item.case, &item.settings, item.run_id.as_str());
    let result = match case.kind {
        CaseKind::Kernel if crate::backend::external::is_external(&case.backend) => Ok(external::execute(case, settings, run_id, &item.external)),
        CaseKind::Kernel => kernel::execute_kernel_case(case, settings, run_id).map_err(|e| e.to_string()),
        CaseKind::Cp => ranks::run_local(case, settings, run_id),
        CaseKind::Simulated => simulated::execute(case, settings, run_id),
    };
    result.unwrap_or_else(|e| {
        let mut row = Row::for_case(run_id, case, "");
        row.fail(Status::Error, e);
        row
    })
}
