//! The real registries as the plan's [`SupportOracle`]: kernel backends from `crate::backend`,
//! CP strategies from `crate::cp::registry`, plus the test-only fault backends in a `test-hooks` build.

use super::is_fault_backend;
use super::plan::SupportOracle;
use crate::case::{Case, CaseKind};
use crate::mask::HeadMasks;

pub struct Registries;

impl SupportOracle for Registries {
    fn backend_known(&self, name: &str) -> bool {
        crate::backend::find_backend(name).is_ok() || is_fault_backend(name)
    }

    fn strategy_known(&self, name: &str) -> bool {
        crate::cp::registry::find_strategy(name).is_ok()
    }

    fn known_backends(&self) -> Vec<String> {
        crate::backend::registry().iter().map(|b| b.name().to_string()).collect()
    }

    fn known_strategies(&self) -> Vec<String> {
        crate::cp::registry::STRATEGIES.iter().map(|s| s.name.to_string()).collect()
    }

    fn supports(&self, case: &Case, masks: &HeadMasks) -> Result<(), String> {
        if is_fault_backend(&case.backend) {
            return Ok(());
        }
        match case.kind {
            CaseKind::Kernel => {
                let b = crate::backend::find_backend(&case.backend)?;
                // CUDA availability is not checked here: a plan made on a laptop for a GPU machine should
                // show what each backend would run; on a machine without a GPU the case becomes an
                // `unsupported` row when it is executed.
                b.supports(case, masks)
            }
            CaseKind::Cp => cp_supports(case),
            CaseKind::Simulated => Err("simulated cases come from `attnbench simulate`".into()),
        }
    }
}

/// Whether a CP case can run here: the strategy accepts the world size, head layout and options, the
/// per-rank backend can compute CP pieces, and this binary has a communicator for the device (CPU: MPI
/// or the in-process local world; CUDA: NCCL).
fn cp_supports(case: &Case) -> Result<(), String> {
    let def = crate::cp::registry::find_strategy(&case.strategy).map_err(|e| e.to_string())?;
    if case.device == crate::case::DeviceKind::Cuda && !cfg!(feature = "nccl") {
        return Err("CUDA CP cases need a build with `--features nccl`".into());
    }
    let backend = crate::backend::find_backend(&case.backend)?;
    if backend.masked_attention().is_none() {
        return Err(format!("backend `{}` cannot be a CP case's per-rank kernel (it computes no arbitrary sub-mask with its LSE)", case.backend));
    }
    (def.engine)(case.world_size, &crate::cp::setup::layout(case), &case.cp).map(|_| ()).map_err(|e| e.to_string())
}
