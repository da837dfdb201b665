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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{DType, DeviceKind, HeadLayout};
    use crate::cp::setup::fixtures::cp_case;
    use crate::flops::Pass;

    fn item(case: Case) -> WorkItem {
        WorkItem {
            run_id: "t".into(),
            case,
            settings: MeasureSettings { warmup: 0, repeats: 2, check: true, seed: 7, ..Default::default() },
            external: Default::default(),
        }
    }

    /// One entry for every kind of case: a built-in kernel (the same row as the kernel harness gives,
    /// timing aside), an external kernel (its worker's failure is a row, not a panic), a CP case on
    /// threads (checked against one device), a projection (the simulator's row, `model` timing).
    #[test]
    fn run_takes_every_kind_of_work_item_to_a_row() {
        let kernel = Case::kernel("naive", "causal", Default::default(), 32, HeadLayout { q: 2, kv: 1 }, 16, DType::Fp32, Pass::Fwdbwd, DeviceKind::Cpu);
        let row = run(&item(kernel.clone()));
        let direct = kernel::execute_kernel_case(&kernel, &item(kernel.clone()).settings, "t").unwrap();
        assert_eq!((row.kind, row.status), (CaseKind::Kernel, Status::Ok), "{}", row.error);
        assert_eq!(
            (row.case_id.as_str(), row.flops, row.max_abs_err, row.note.as_str()),
            (direct.case_id.as_str(), direct.flops, direct.max_abs_err, direct.note.as_str())
        );
        assert_eq!(row.repeats, Some(2));

        let mut ext = item(Case { backend: "ext:nosuchworker".into(), ..kernel.clone() });
        ext.external.workers.insert("nosuchworker".into(), crate::backend::external::config::WorkerCommand::Line("/nonexistent/worker".into()));
        let row = run(&ext);
        assert_eq!(row.status, Status::Error, "{row:?}");
        assert!(row.error.contains("/nonexistent/worker"), "{}", row.error);
        assert_eq!(row.flops, direct.flops, "the one row set-up fills the mask's columns for external kernels too");

        let cp = cp_case("ring-p2p", "causal", &[], 32, 2, HeadLayout { q: 2, kv: 1 }, Pass::Fwd);
        let row = run(&item(cp.clone()));
        assert_eq!((row.kind, row.status, row.world_size), (CaseKind::Cp, Status::Ok, 2), "{}", row.error);
        assert!(row.max_abs_err.is_some() && row.scaling_eff.is_some());

        let sim = Case { kind: CaseKind::Simulated, ..cp };
        let row = run(&item(sim));
        assert_eq!((row.kind, row.status, row.timing_mode.as_str()), (CaseKind::Simulated, Status::Ok, "model"), "{}", row.error);
        assert!(row.ms_median.is_some_and(|m| m > 0.0));

        // Bad input that slipped past the plan is an `error` row.
        let row = run(&item(Case { pattern: "no_such_mask".into(), ..kernel }));
        assert_eq!(row.status, Status::Error);
    }
}
