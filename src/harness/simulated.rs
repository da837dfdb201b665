//! A simulated case as a unit of work: [`super::run`] hands it to the simulator's public entry point
//! (`sim::simulate`, `sim::to_row`) with what `attnbench simulate` uses by default — the `h100`
//! cluster preset, attnbench's own implementation, the pieces measured on the case's device with the
//! item's warm-up and repeats. Only a call site: the model lives in `sim`, and `attnbench simulate`
//! (its topologies, compute models, draws) stays the way to choose anything else.

use crate::case::{Case, DeviceKind};
use crate::measure::MeasureSettings;
use crate::results::Row;
use crate::sim::compute::ComputeModel;
use crate::sim::{simulate, to_row, Implementation, SimSpec};

/// The cluster model a work item's projection uses (`attnbench simulate`'s default `--topology`).
pub const TOPOLOGY: &str = "h100";

/// The projected row of `case` (its `world_size` virtual ranks); `Err`: why it cannot be projected.
pub fn execute(case: &Case, settings: &MeasureSettings, run_id: &str) -> Result<Row, String> {
    let topology = crate::sim::comm_model::preset(TOPOLOGY).ok_or_else(|| format!("no `{TOPOLOGY}` cluster preset"))?;
    let device = match case.device {
        DeviceKind::Cpu => tch::Device::Cpu,
        DeviceKind::Cuda if crate::sys::cuda_available() => tch::Device::Cuda(0),
        DeviceKind::Cuda => return Err("no CUDA device available on this machine to measure the pieces on".into()),
    };
    let model = ComputeModel::Measured { device, dtype: case.dtype, warmup: settings.warmup, repeats: settings.repeats.max(1) };
    let spec = SimSpec { case: case.clone(), topology, calibrated: false, implementation: Implementation::Attnbench };
    let rep = simulate(&spec, model).map_err(|e| format!("{}: {e}", case.label()))?;
    Ok(to_row(&spec, &rep, run_id, &super::row::device_name(case.device)))
}
