//! The one row set-up of a one-device case, built-in kernel or external worker: the row with the
//! case's columns, the device's name and what the mask alone determines.

use crate::case::{Case, DeviceKind};
use crate::flops::pass_flops;
use crate::mask::{build_pattern, HeadMasks, MaskError};
use crate::results::{Row, Status};

/// Device name for rows: `cpu`, or the CUDA device's name.
pub fn device_name(device: DeviceKind) -> String {
    match device {
        DeviceKind::Cpu => "cpu".into(),
        DeviceKind::Cuda => crate::envinfo::cuda_device_names().into_iter().next().unwrap_or_else(|| "cuda".into()),
    }
}

/// The one row set-up of a one-device case (built-in and external kernels): the case's columns, the
/// device's name, and the mask's area, density and FLOPs. `Err`: the mask cannot be built.
pub fn kernel_row(case: &Case, run_id: &str) -> Result<(Row, HeadMasks), MaskError> {
    let masks = build_pattern(&case.pattern, case.seqlen, &case.params)?;
    masks.check_heads(case.heads.q)?;
    let mut row = Row::for_case(run_id, case, &device_name(case.device));
    row.mask_area = masks.mean_area();
    row.density = masks.density();
    row.flops = pass_flops(masks.area_over_heads(case.heads.q), case.head_dim, case.batch, case.pass);
    Ok((row, masks))
}

/// Fails `row` as `unsupported` (and says so) when its case wants CUDA and this machine has none.
pub fn no_cuda(case: &Case, row: &mut Row) -> bool {
    let missing = case.device == DeviceKind::Cuda && !crate::sys::cuda_available();
    if missing {
        row.fail(Status::Unsupported, "no CUDA device available on this machine");
    }
    missing
}
