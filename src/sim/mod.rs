//! Projection of CP strategies to many GPUs from one device: **virtual ranks** execute (or model, see
//! [`compute`]) exactly the per-rank attention pieces of a strategy's [`Schedule`] — the same
//! `block_mask(mask, piece.q, piece.k)` sub-masks and tensor shapes the real executor
//! ([`crate::cp::exec`]) hands to `sliced_forward` / `sliced_backward` — and an α–β communication
//! model ([`comm_model`]) costs the schedule's messages; [`predict`] combines both into a timeline.
//! The result is a CSV row of kind `simulated`, timing mode `model`. docs/SIMULATION.md has the model,
//! its assumptions and its measured error.

pub mod calibrate;
pub mod comm_model;
pub mod compute;
pub mod predict;

use serde::Serialize;

use crate::attn::KernelError;
use crate::case::{Case, CaseKind};
use crate::cp::setup::CpSetup;
use crate::cp::shard::{block_mask, imbalance};
use crate::flops::{pass_flops, Pass};
use crate::results::{Row, Status};
use comm_model::Topology;
use compute::{ComputeModel, PieceShape, PieceTimer};
use predict::StepTime;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Bad input (unknown strategy, bad degrees, bad mask); names the flag. Exit 2.
    #[error("{0}")]
    Bad(String),
    #[error("kernel: {0}")]
    Backend(#[from] KernelError),
}

/// One simulated case: what it computes (a CP case; its `world_size` virtual ranks), over which
/// cluster model.
#[derive(Debug, Clone)]
pub struct SimSpec {
    pub case: Case,
    pub topology: Topology,
    /// True when the topology's links were fitted from `attnbench comm` output.
    pub calibrated: bool,
}

/// Everything predicted for one case.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub strategy: String,
    pub world_size: usize,
    pub topology: Topology,
    pub calibrated: bool,
    pub compute_model: String,
    pub steps: Vec<StepTime>,
    /// Per rank: attention compute seconds summed over steps.
    pub rank_compute_s: Vec<f64>,
    /// Per rank: glue seconds (merges, accumulation, copies) summed over steps.
    pub rank_glue_s: Vec<f64>,
    /// max/mean of attended area × heads per rank (the schedule's work; analytic).
    pub imbalance: f64,
    /// max/mean of per-rank compute seconds.
    pub compute_imbalance: f64,
    /// Predicted time of one pass, seconds (sum of step times).
    pub total_s: f64,
    /// Sum over steps of the critical rank's compute-bound (attention + glue) share; the rest is
    /// waiting for comm.
    pub critical_compute_s: f64,
    pub flops: f64,
    pub tflops_per_gpu: f64,
    /// Time of the whole problem on one device under the same compute model, seconds, and how it was
    /// obtained (`measured` / `sum-of-pieces` / `roofline`).
    pub single_s: f64,
    pub single_how: String,
    pub scaling_eff: f64,
    /// Max over ranks of bytes sent in one pass.
    pub bytes_sent: u64,
    pub pieces_requested: usize,
    pub pieces_executed: usize,
    pub mask_area: u64,
    pub density: f64,
    pub note: String,
}

/// The mask, shard, layout, engine and schedule of a spec — the same [`CpSetup::new`] the real
/// ranks start from.
pub fn setup(spec: &SimSpec) -> Result<CpSetup, SimError> {
    CpSetup::new(&spec.case).map_err(SimError::Bad)
}

/// Per step and rank: compute seconds of the rank's pieces (a rank may have several pieces in a step).
pub fn compute_times(p: &CpSetup, timer: &mut PieceTimer) -> Result<Vec<Vec<f64>>, SimError> {
    let hkv = p.engine.piece_heads_kv(&p.layout);
    let world = p.schedule.world;
    let mut out = Vec::with_capacity(p.schedule.steps.len());
    for step in &p.schedule.steps {
        let backward = step.label.starts_with("bwd");
        let mut per = vec![0.0; world];
        for piece in &step.compute {
            let sub = block_mask(&p.mask, &piece.q, &piece.k);
            let shape = PieceShape {
                rank: piece.rank,
                q: &piece.q,
                k: &piece.k,
                batch: p.layout.batch,
                heads_q: piece.heads_q,
                heads_kv: hkv,
                head_dim: p.layout.head_dim,
                backward,
                flops: piece.flops,
            };
            per[piece.rank] += timer.time_s(&shape, &sub)?;
        }
        out.push(per);
    }
    Ok(out)
}

fn model_name(m: &ComputeModel) -> String {
    match m {
        ComputeModel::Measured { device, .. } => format!("measured on {}", if device.is_cuda() { "cuda" } else { "cpu" }),
        ComputeModel::Roofline(r) => format!(
            "roofline {} {:.0} TFLOPS × {:.2} + {:.0} µs/launch, glue at {:.2} TB/s × {:.2}",
            r.device, r.peak_tflops, r.efficiency, r.launch_us, r.mem_tbps, r.mem_efficiency
        ),
    }
}

/// Largest problem (attended pairs × heads × batch, relative to the largest piece) the measured model
/// still executes as a whole for the single-device baseline; beyond it the baseline is the sum of the
/// per-piece times (what one device would spend on the same pieces).
pub const SINGLE_MAX_PIECES: f64 = 64.0;

/// Per step and rank: seconds of the rank's glue work (merges, accumulation, copies; see `Glue`).
pub fn glue_times(p: &CpSetup, timer: &mut PieceTimer) -> Result<Vec<Vec<f64>>, SimError> {
    let world = p.schedule.world;
    let mut out = Vec::with_capacity(p.schedule.steps.len());
    for step in &p.schedule.steps {
        let mut per = vec![0.0; world];
        for g in &step.glue {
            per[g.rank] += timer.glue_s(&g.op, &p.layout)?;
        }
        out.push(per);
    }
    Ok(out)
}

/// Runs the simulation of `spec` with `model`.
pub fn simulate(spec: &SimSpec, model: ComputeModel) -> Result<SimReport, SimError> {
    simulate_with(spec, &setup(spec)?, model)
}

/// [`simulate`] of a spec already set up with [`setup`] (for callers that also show the schedule).
pub fn simulate_with(spec: &SimSpec, p: &CpSetup, model: ComputeModel) -> Result<SimReport, SimError> {
    let c = &spec.case;
    let mut timer = PieceTimer::new(model, c.head_dim, p.attention);
    let compute = compute_times(p, &mut timer)?;
    let glue = glue_times(p, &mut timer)?;
    let outer_wait = p.engine.outer_prefetch_steps();
    let steps = predict::predict(&spec.topology, &p.schedule, &compute, &glue, outer_wait);
    let world = c.world_size;
    let rank_compute_s: Vec<f64> = (0..world).map(|r| compute.iter().map(|s| s[r]).sum()).collect();
    let rank_glue_s: Vec<f64> = (0..world).map(|r| glue.iter().map(|s| s[r]).sum()).collect();
    let total_s: f64 = steps.iter().map(|s| s.time_s).sum();
    let critical_compute_s: f64 = steps.iter().filter(|s| s.bound == "compute").map(|s| s.time_s).sum();
    let area = p.mask.area();
    let flops = pass_flops(area as u128 * c.heads.q as u128, c.head_dim, c.batch, c.pass);
    let mean_c = rank_compute_s.iter().sum::<f64>() / world as f64;
    let max_c = rank_compute_s.iter().copied().fold(0.0, f64::max);

    // Single-device baseline of the whole problem under the same compute model.
    let sum_pieces: f64 = rank_compute_s.iter().sum();
    let largest_piece = p.schedule.steps.iter().flat_map(|s| s.compute.iter()).map(|pc| pc.area as f64 * pc.heads_q as f64).fold(1.0, f64::max);
    let whole_work = area as f64 * c.heads.q as f64;
    let (single_s, single_how) = match &timer.model {
        ComputeModel::Roofline(_) => {
            let mut s = 0.0;
            if c.pass != Pass::Bwd {
                s += timer.whole_problem_s(&p.mask, c.batch, c.heads.q, c.heads.kv, c.head_dim, false, flops / c.pass.factor())?;
            }
            if c.pass.includes_backward() {
                s += timer.whole_problem_s(&p.mask, c.batch, c.heads.q, c.heads.kv, c.head_dim, true, flops / c.pass.factor() * 2.5)?;
            }
            (s, "roofline")
        }
        ComputeModel::Measured { .. } if whole_work <= SINGLE_MAX_PIECES * largest_piece => {
            let f1 = flops / c.pass.factor();
            let mut s = 0.0;
            if c.pass != Pass::Bwd {
                s += timer.whole_problem_s(&p.mask, c.batch, c.heads.q, c.heads.kv, c.head_dim, false, f1)?;
            }
            if c.pass.includes_backward() {
                s += timer.whole_problem_s(&p.mask, c.batch, c.heads.q, c.heads.kv, c.head_dim, true, f1 * 2.5)?;
            }
            (s, "measured")
        }
        ComputeModel::Measured { .. } => (sum_pieces, "sum-of-pieces"),
    };
    let bytes_sent = p.schedule.bytes_sent().into_iter().max().unwrap_or(0);
    let imb = imbalance(&p.schedule.work());
    let compute_model = model_name(&timer.model);
    let note = format!(
        "projected: topology {}{}; compute {}; {} of {} pieces executed (identical pieces reused); glue {:.1}% of the critical rank's compute; single-device baseline {}; {}; sharding={}",
        spec.topology.name,
        if spec.calibrated { " (calibrated from attnbench comm)" } else { " (uncalibrated preset)" },
        compute_model,
        timer.executed,
        timer.requested,
        glue_share(&rank_compute_s, &rank_glue_s) * 100.0,
        single_how,
        p.engine.note(&p.layout),
        p.shard.kind
    );
    Ok(SimReport {
        strategy: c.strategy.clone(),
        world_size: world,
        topology: spec.topology.clone(),
        calibrated: spec.calibrated,
        compute_model,
        steps,
        rank_compute_s,
        rank_glue_s,
        imbalance: imb,
        compute_imbalance: if mean_c > 0.0 { max_c / mean_c } else { 1.0 },
        total_s,
        critical_compute_s,
        flops,
        tflops_per_gpu: if total_s > 0.0 { flops / total_s / world as f64 / 1e12 } else { 0.0 },
        single_s,
        single_how: single_how.to_string(),
        scaling_eff: if total_s > 0.0 { single_s / (world as f64 * total_s) } else { 0.0 },
        bytes_sent,
        pieces_requested: timer.requested,
        pieces_executed: timer.executed,
        mask_area: area,
        density: p.mask.density(),
        note,
    })
}

/// Glue seconds over glue + attention seconds of the busiest rank.
pub fn glue_share(compute: &[f64], glue: &[f64]) -> f64 {
    let busiest = (0..compute.len()).max_by(|&a, &b| (compute[a] + glue[a]).total_cmp(&(compute[b] + glue[b])));
    busiest.map(|r| if compute[r] + glue[r] > 0.0 { glue[r] / (compute[r] + glue[r]) } else { 0.0 }).unwrap_or(0.0)
}

/// The CSV row of a simulated case: kind `simulated`, timing mode `model`, times from the prediction.
pub fn to_row(spec: &SimSpec, rep: &SimReport, run_id: &str, device_name: &str) -> Row {
    let case = Case { kind: CaseKind::Simulated, ..spec.case.clone() };
    let mut row = Row::for_case(run_id, &case, device_name);
    row.status = Status::Ok;
    row.mask_area = rep.mask_area as f64;
    row.density = rep.density;
    row.flops = rep.flops;
    let ms = rep.total_s * 1e3;
    row.ms_median = Some(ms);
    row.ms_p20 = Some(ms);
    row.ms_p80 = Some(ms);
    row.cv = Some(0.0);
    row.tflops = Some(rep.tflops_per_gpu * spec.case.world_size as f64);
    row.tflops_per_gpu = Some(rep.tflops_per_gpu);
    row.mfu = crate::flops::mfu(rep.tflops_per_gpu, device_name, spec.case.dtype.name());
    row.timing_mode = "model".into();
    row.imbalance = Some(rep.imbalance);
    row.bytes_sent = Some(rep.bytes_sent);
    row.bandwidth_gbps = Some(rep.bytes_sent as f64 / rep.total_s.max(1e-30) / 1e9);
    row.scaling_eff = Some(rep.scaling_eff);
    row.note = rep.note.clone();
    row
}

#[cfg(test)]
mod tests;
