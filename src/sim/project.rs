//! What `attnbench simulate` projects, built from the command line's choices: the cluster
//! ([`topology`]), the compute model ([`compute_model`]) and a case averaged over mask draws
//! ([`simulate_draws`]). The CLI only parses flags into [`ModelChoice`] and prints; every decision
//! (defaults, the fitted H100 parameters, what a bad value is) is here, in one place.

use std::path::Path;

use super::calibrate::{apply, calibrate_file};
use super::comm_model::{preset, Link, Topology, H100_CP, PRESETS};
use super::compute::{ComputeModel, Fa3Compute, Roofline};
use super::fa3::h100_fa3;
use super::{setup, simulate_with, SimError, SimReport, SimSpec};
use crate::case::{DType, DeviceKind};
use crate::cp::setup::CpSetup;

fn bad(m: impl Into<String>) -> SimError {
    SimError::Bad(m.into())
}

/// The `--topology` preset with `--gpus-per-node`, `--link` and `--calibrate` applied; the flag is
/// true when a `comm --json` measurement replaced a link.
pub fn topology(name: &str, gpus_per_node: Option<usize>, link: Option<Link>, calibrate: Option<&Path>) -> Result<(Topology, bool), SimError> {
    let mut topo = preset(name).ok_or_else(|| bad(format!("--topology: unknown `{name}` (expected h100, h200, a100 or one of {})", PRESETS.join(", "))))?;
    if let Some(g) = gpus_per_node {
        if g == 0 {
            return Err(bad("--gpus-per-node must be at least 1"));
        }
        topo.gpus_per_node = g;
    }
    if let Some(l) = link {
        topo.intra = l;
        topo.inter = l;
        topo.name = format!("{}+link({},{})", topo.name, l.alpha_us, l.beta_gbps);
    }
    let mut calibrated = false;
    if let Some(p) = calibrate {
        let (link, rep, _) = calibrate_file(p).map_err(bad)?;
        apply(&mut topo, link, rep.world_size);
        calibrated = true;
    }
    Ok((topo, calibrated))
}

/// The compute-model flags of `simulate` (see its `--help`).
#[derive(Debug, Clone, Default)]
pub struct ModelChoice {
    /// measured, roofline or fa3.
    pub compute_model: String,
    pub efficiency: Option<f64>,
    pub launch_us: Option<f64>,
    pub mem_efficiency: Option<f64>,
    pub peak_device: Option<String>,
    pub warmup: usize,
    pub repeats: usize,
}

/// The compute model and the device name its rows carry. `measured` runs on `device` (CUDA must be
/// there); `roofline` and `fa3` take the peak of `--peak-device` (default: the topology's device);
/// `fa3` defaults its glue to the parameters fitted to the published figures ([`H100_CP`]).
pub fn compute_model(c: &ModelChoice, dtype: DType, device: DeviceKind, topo: &Topology) -> Result<(ComputeModel, String), SimError> {
    if c.repeats == 0 {
        return Err(bad("--repeats must be at least 1"));
    }
    match c.compute_model.as_str() {
        "measured" => {
            let (dev, name) = match device {
                DeviceKind::Cpu => (tch::Device::Cpu, "cpu".to_string()),
                DeviceKind::Cuda => {
                    crate::sys::ensure_cuda_loaded();
                    if !crate::sys::cuda_available() {
                        return Err(bad("--device cuda: no CUDA device is available on this machine (use --compute-model roofline to project without one)"));
                    }
                    (tch::Device::Cuda(0), crate::envinfo::cuda_device_names().into_iter().next().unwrap_or_else(|| "cuda".into()))
                }
            };
            Ok((ComputeModel::Measured { device: dev, dtype, warmup: c.warmup, repeats: c.repeats }, name))
        }
        "roofline" | "fa3" => {
            let fa3 = c.compute_model == "fa3";
            let cp = H100_CP;
            let efficiency = c.efficiency.unwrap_or(0.6);
            let launch_us = c.launch_us.unwrap_or(if fa3 { cp.launch_us } else { 10.0 });
            let mem_efficiency = c.mem_efficiency.unwrap_or(if fa3 { cp.mem_efficiency } else { 0.8 });
            if !(efficiency > 0.0 && efficiency <= 1.0) {
                return Err(bad(format!("--efficiency: must be in (0, 1], got {efficiency}")));
            }
            if launch_us.is_nan() || launch_us < 0.0 {
                return Err(bad("--launch-us must be ≥ 0"));
            }
            // The fa3 model's glue efficiency is fitted and may exceed 1 (it absorbs over-counted bytes).
            let mem_max = if fa3 { 2.0 } else { 1.0 };
            if !(mem_efficiency > 0.0 && mem_efficiency <= mem_max) {
                return Err(bad(format!("--mem-efficiency: must be in (0, {mem_max}], got {mem_efficiency}")));
            }
            let want = c.peak_device.clone().unwrap_or_else(|| topo.name.split('-').next().unwrap_or("h100").to_string());
            let peak = crate::flops::device_peak(&want)
                .ok_or_else(|| bad(format!("--peak-device: no peak known for `{want}` (see crate::flops::DEVICE_PEAKS: H100, H200, A100, B200)")))?;
            let peak_tflops =
                crate::flops::peak_tflops(peak.name, dtype.name()).ok_or_else(|| bad(format!("--dtype {}: no {} peak for the roofline", dtype, peak.name)))?;
            let glue = Roofline { peak_tflops, efficiency, launch_us, mem_tbps: peak.mem_tbps, mem_efficiency, device: peak.name };
            if fa3 {
                if !(peak.name == "H100" || peak.name == "H200") || dtype != DType::Bf16 {
                    return Err(bad(format!(
                        "--compute-model fa3: the FA3 tile model is fitted to H100 bf16 kernel figures (H100 or H200, --dtype bf16), not {} {dtype}",
                        peak.name
                    )));
                }
                Ok((ComputeModel::Fa3(Fa3Compute { kernel: h100_fa3(), glue }), format!("{} (fa3 model)", peak.name)))
            } else {
                Ok((ComputeModel::Roofline(glue), format!("{} (roofline)", peak.name)))
            }
        }
        other => Err(bad(format!("--compute-model: unknown `{other}` (expected measured, roofline or fa3)"))),
    }
}

/// Simulates `spec` (already set up as `set_up`) and, when its mask is drawn at random (the pattern
/// has a `seed` parameter) and `packs` > 1, `packs − 1` further draws (seed + 1, …): the report is the
/// mean over the draws ([`SimReport::mean_over_draws`]). Masks without a draw run once.
pub fn simulate_draws(spec: &SimSpec, set_up: &CpSetup, model: &ComputeModel, packs: usize) -> Result<SimReport, SimError> {
    let mut rep = simulate_with(spec, set_up, model.clone())?;
    let drawn = crate::mask::find_pattern(&spec.case.pattern).map(|p| p.params.iter().any(|x| x.key == "seed")).unwrap_or(false);
    if packs > 1 && drawn {
        let base = spec.case.params.get("seed").map(|s| s.parse::<u64>()).transpose().map_err(|_| bad("--set seed: expected an integer"))?.unwrap_or(42);
        let mut others = Vec::with_capacity(packs - 1);
        for i in 1..packs as u64 {
            let mut other = spec.clone();
            other.case.params = std::mem::take(&mut other.case.params).set("seed", base + i);
            let other_setup = setup(&other).map_err(|e| bad(e.to_string()))?;
            others.push(simulate_with(&other, &other_setup, model.clone())?);
        }
        rep.mean_over_draws(&others, base..=base + packs as u64 - 1);
    }
    Ok(rep)
}
