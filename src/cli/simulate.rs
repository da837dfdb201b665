//! `attnbench simulate`: project a CP strategy to N GPUs from one device. Virtual ranks execute (or
//! model with `--compute-model roofline`) exactly the per-rank attention pieces of the strategy's
//! schedule; an α–β model of `--topology` (optionally `--calibrate`d from `attnbench comm --json`)
//! costs its messages. Prints per-step times (per-rank compute, comm, the critical rank), imbalance
//! and TFLOPS/GPU; `--json` prints one JSON object per case; `--out` appends rows of kind `simulated`
//! (timing mode `model`) and writes `meta.json` beside the CSV when none is there. `--strategy`,
//! `--mask` and `--world-size` may repeat: every combination is one case. See docs/SIMULATION.md.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::{CaseArgs, CpArgs, LONGCA_CP_SHAPE};
use crate::case::{DType, DeviceKind};
use crate::error::BadInput;
use crate::results::RunFolder;
use crate::sim::comm_model::Link;
use crate::sim::project::{self, ModelChoice};
use crate::sim::published::CpPoint;
use crate::sim::report::{self, CompareOptions};
use crate::sim::{setup, to_row, Implementation, SimError, SimReport, SimSpec};
use crate::suite::identity::command_meta;

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub case: CaseArgs,
    #[command(flatten)]
    pub cp: CpArgs,
    /// Number of virtual ranks (repeatable). With --compare-published: only these world sizes.
    #[arg(long = "world-size", required_unless_present = "compare_published")]
    pub world_size: Vec<usize>,
    /// Cluster preset: h100, h200, a100 (per-direction NVLink / InfiniBand bandwidths, latencies), or
    /// h100-longca (h100 with the inter-node bandwidth fitted to LongCA-bench's published figures).
    #[arg(long, default_value = "h100")]
    pub topology: String,
    /// GPUs per node (ranks are placed node by node).
    #[arg(long)]
    pub gpus_per_node: Option<usize>,
    /// Override both link classes: ALPHA_US,BETA_GBPS (latency µs, bandwidth GB/s per direction).
    #[arg(long, value_name = "ALPHA_US,BETA_GBPS")]
    pub link: Option<String>,
    /// Fit the intra-node link (and the inter-node one when the measurement spanned nodes) to the
    /// send/recv results of `attnbench comm --json` output.
    #[arg(long, value_name = "COMM.json")]
    pub calibrate: Option<PathBuf>,
    /// measured (execute every distinct piece on --device), roofline (FLOPs / (peak × efficiency) +
    /// launches × launch overhead) or fa3 (FlashAttention-3 varlen calls costed tile by tile, with the
    /// parameters fitted to published FA3 and CP figures; see docs/SIMULATION.md).
    #[arg(long, default_value = "measured")]
    pub compute_model: String,
    /// Roofline: fraction of the dense peak sustained by the attention kernel [0.6].
    #[arg(long)]
    pub efficiency: Option<f64>,
    /// Roofline and fa3 glue: microseconds per kernel launch [roofline 10; fa3: the calibrated value].
    #[arg(long)]
    pub launch_us: Option<f64>,
    /// Roofline and fa3: fraction of the device's datasheet memory bandwidth that the glue work (LSE
    /// merges, gradient accumulation, re-layout copies) sustains [roofline 0.8; fa3: calibrated].
    #[arg(long)]
    pub mem_efficiency: Option<f64>,
    /// Whose CP implementation the virtual ranks follow: attnbench (our engines) or longca (the
    /// baselines of LongCA-bench's published figures: per-document zigzag sharding, all-gather in two
    /// calls, autograd backward; `usp` honours --inner-ring). Needs a document mask for longca.
    #[arg(long = "impl", default_value = "attnbench")]
    pub implementation: String,
    /// Average every case whose mask is drawn at random (it has a `seed` parameter: documents, …) over
    /// N draws (seeds seed, seed+1, …; 42 by default): TFLOPS/GPU is the mean of the draws' TFLOPS, as
    /// the published figures average packs. Masks without a draw run once.
    #[arg(long, default_value_t = 1)]
    pub packs: usize,
    /// Print projected vs published TFLOPS/GPU for LongCA-bench's CP figures (every implemented
    /// strategy × mask × pass × world size, calibration and held-out points, orderings and trends);
    /// --packs sets the packs per document point (default 20, as published).
    #[arg(long)]
    pub compare_published: bool,
    /// With --compare-published: refit the CP parameters on the calibration points (forward, W = 8
    /// and 16) and the FA3 kernel parameters on the dense kernel figures, and use the fits.
    #[arg(long, requires = "compare_published")]
    pub fit: bool,
    /// With --compare-published: also print the ablations (each model part removed, refitted, held-out
    /// error) and the sensitivity table (inter-node bandwidth, glue bandwidth, glue and FA3 fixed
    /// costs each moved by ±20 %, not refitted).
    #[arg(long, requires = "compare_published")]
    pub ablate: bool,
    /// Roofline: device whose peak is used (a name in the peak table); default from --topology.
    #[arg(long)]
    pub peak_device: Option<String>,
    /// Measured model: untimed calls per distinct piece.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Measured model: timed repeats per distinct piece (the median is used).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Append rows (kind simulated) to this CSV.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// One JSON object per case: {"row": …, "report": …} (plus "schedule" with --schedule).
    #[arg(long)]
    pub json: bool,
    /// Also print the strategy's schedule: per step, every rank's pieces (query × key tokens), every
    /// message (who sends what to whom, bytes, overlapped or blocking) and the glue work.
    #[arg(long)]
    pub schedule: bool,
}

fn bad(m: impl Into<String>) -> anyhow::Error {
    BadInput::new(m).into()
}

fn parse_link(s: &str) -> Result<Link, anyhow::Error> {
    let (a, b) = s.split_once(',').ok_or_else(|| bad(format!("--link: expected ALPHA_US,BETA_GBPS, got `{s}`")))?;
    let alpha_us: f64 = a.trim().parse().map_err(|_| bad(format!("--link: bad latency `{a}` (µs)")))?;
    let beta_gbps: f64 = b.trim().parse().map_err(|_| bad(format!("--link: bad bandwidth `{b}` (GB/s)")))?;
    if !(alpha_us >= 0.0 && beta_gbps > 0.0) {
        return Err(bad("--link: latency must be ≥ 0 and bandwidth > 0"));
    }
    Ok(Link { alpha_us, beta_gbps })
}

pub fn run(a: SimulateArgs) -> anyhow::Result<ExitCode> {
    if a.compare_published {
        return compare_published(&a);
    }
    // Every case of the command line (strategies × world sizes × masks), validated before anything runs.
    let cases = a.cp.cases(&a.case, &LONGCA_CP_SHAPE, &a.world_size)?;
    let (dtype, device): (DType, DeviceKind) = (cases[0].dtype, cases[0].device);
    let link = a.link.as_deref().map(parse_link).transpose()?;
    let (topo, calibrated) = project::topology(&a.topology, a.gpus_per_node, link, a.calibrate.as_deref()).map_err(sim_err)?;
    let choice = ModelChoice {
        compute_model: a.compute_model.clone(),
        efficiency: a.efficiency,
        launch_us: a.launch_us,
        mem_efficiency: a.mem_efficiency,
        peak_device: a.peak_device.clone(),
        warmup: a.warmup,
        repeats: a.repeats,
    };
    let (model, device_name) = project::compute_model(&choice, dtype, device, &topo).map_err(sim_err)?;
    let implementation: Implementation = a.implementation.parse().map_err(|e| bad(format!("--impl: {e}")))?;
    if a.packs == 0 {
        return Err(bad("--packs must be at least 1"));
    }

    let run_id = format!("simulate-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    // `--out`: the results folder's owner (locked; meta.json saying these rows are projections and by
    // which model; this command as a segment).
    let model_desc = serde_json::json!({
        "simulated": true, "timing_mode": "model", "compute_model": a.compute_model, "topology": topo, "calibrated": calibrated,
        "efficiency": a.efficiency, "launch_us": a.launch_us, "mem_efficiency": a.mem_efficiency, "warmup": a.warmup, "repeats": a.repeats,
        "implementation": implementation.name(), "packs": a.packs, "model": crate::sim::model_name(&model),
    });
    let mut folder = match &a.out {
        Some(p) => Some(
            RunFolder::for_appending(p, command_meta("simulate", None, Some(model_desc)))
                .map_err(|e| e.into_cli().context(format!("--out {}", p.display())))?,
        ),
        None => None,
    };
    for case in cases {
        let spec = SimSpec { case, topology: topo.clone(), calibrated, implementation };
        let set_up = setup(&spec).map_err(|e| bad(e.to_string()))?;
        let rep = project::simulate_draws(&spec, &set_up, &model, a.packs).map_err(|e| match e {
            SimError::Bad(m) => bad(m),
            e => anyhow::anyhow!("{}: {e}", spec.case.label()),
        })?;
        let mut row = to_row(&spec, &rep, &run_id, &device_name);
        if let Some(f) = folder.as_mut() {
            f.append(&mut row).map_err(|e| e.into_cli())?;
        }
        let schedule = a.schedule.then_some(&set_up.schedule);
        if a.json {
            let mut v = serde_json::json!({ "row": row, "report": rep });
            if let Some(s) = &schedule {
                v["schedule"] = serde_json::to_value(s)?;
            }
            println!("{}", serde_json::to_string(&v)?);
        } else {
            print_report(&spec, &rep);
            if let Some(s) = &schedule {
                print_schedule(s, &set_up.layout);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Bad input from the simulator (names the flag) → one line, exit 2.
fn sim_err(e: SimError) -> anyhow::Error {
    match e {
        SimError::Bad(m) => bad(m),
        e => anyhow::anyhow!("{e}"),
    }
}

fn print_report(spec: &SimSpec, r: &SimReport) {
    println!(
        "{} {} S={} ({} per rank) ws={} {} {}: predicted {:.4} ms, {:.2} TFLOPS/GPU, scaling eff {:.3}, imbalance {:.3} (compute time {:.3}), bytes sent/rank {}",
        spec.case.strategy,
        spec.case.pattern,
        spec.case.seqlen,
        spec.case.seqlen / spec.case.world_size,
        spec.case.world_size,
        spec.case.heads,
        spec.case.pass,
        r.total_s * 1e3,
        r.tflops_per_gpu,
        r.scaling_eff,
        r.imbalance,
        r.compute_imbalance,
        r.bytes_sent
    );
    println!("  {}", r.note);
    let show_ranks = spec.case.world_size <= 8;
    println!(
        "  {:<26} {:>10} {:>6} {:>8}  {}",
        "step",
        "ms",
        "crit",
        "bound",
        if show_ranks {
            "compute+glue ms per rank | comm ms (overlapped+blocking) on the critical rank"
        } else {
            "compute+glue ms min/mean/max | comm ms on the critical rank"
        }
    );
    for s in &r.steps {
        let c: Vec<f64> = s.compute_s.iter().zip(&s.glue_s).map(|(a, g)| a + g).collect();
        let comp = if show_ranks {
            c.iter().map(|x| format!("{:.3}", x * 1e3)).collect::<Vec<_>>().join(" ")
        } else {
            let mean = c.iter().sum::<f64>() / c.len() as f64;
            format!("{:.3}/{:.3}/{:.3}", c.iter().copied().fold(f64::INFINITY, f64::min) * 1e3, mean * 1e3, c.iter().copied().fold(0.0, f64::max) * 1e3)
        };
        let cr = s.critical_rank;
        println!(
            "  {:<26} {:>10.4} {:>6} {:>8}  {} | {:.3}+{:.3}",
            s.label,
            s.time_s * 1e3,
            cr,
            s.bound,
            comp,
            s.comm_overlapped_s[cr] * 1e3,
            s.comm_blocking_s[cr] * 1e3
        );
    }
    println!(
        "  critical path: {:.4} ms = {:.4} ms compute-bound + {:.4} ms waiting for communication; per-rank attention ms: max {:.4} mean {:.4}; glue ms: max {:.4} mean {:.4}",
        r.total_s * 1e3,
        r.critical_compute_s * 1e3,
        (r.total_s - r.critical_compute_s) * 1e3,
        r.rank_compute_s.iter().copied().fold(0.0, f64::max) * 1e3,
        r.rank_compute_s.iter().sum::<f64>() / r.rank_compute_s.len() as f64 * 1e3,
        r.rank_glue_s.iter().copied().fold(0.0, f64::max) * 1e3,
        r.rank_glue_s.iter().sum::<f64>() / r.rank_glue_s.len() as f64 * 1e3
    );
}

fn ranges(r: &[std::ops::Range<usize>]) -> String {
    r.iter().map(|x| format!("{}..{}", x.start, x.end)).collect::<Vec<_>>().join("+")
}

/// The schedule as text: one line per piece, message and glue operation, grouped by step.
fn print_schedule(s: &crate::cp::schedule::Schedule, layout: &crate::cp::schedule::CpLayout) {
    use crate::cp::schedule::GlueOp;
    println!("  schedule of {} on {} ranks ({} steps):", s.strategy, s.world, s.steps.len());
    for st in &s.steps {
        println!("  [{}]", st.label);
        for p in &st.compute {
            println!("    compute r{:<3} q {} × k {}  {} heads, {} pairs, {:.3e} FLOPs", p.rank, ranges(&p.q), ranges(&p.k), p.heads_q, p.area, p.flops);
        }
        for m in &st.messages {
            println!("    send    r{:<3} → r{:<3} {:<20} {:>12} B  {}", m.src, m.dst, m.what, m.bytes, if m.overlapped { "overlapped" } else { "blocking" });
        }
        for g in &st.glue {
            let what = match g.op {
                GlueOp::Merge { batch, heads, rows, head_dim } => format!("merge [{batch}, {heads}, {rows}, {head_dim}]"),
                GlueOp::Accumulate { elems } => format!("accumulate {elems} elements"),
                GlueOp::Copy { elems, elem_bytes } => format!("copy {elems} × {elem_bytes} B"),
                GlueOp::Cast { elems } => format!("cast {elems} elements"),
            };
            let (bytes, launches) = g.op.traffic(layout);
            println!("    glue    r{:<3} {what}: {bytes} B of HBM traffic, {launches} kernels", g.rank);
        }
    }
}

/// `--compare-published`: projected vs published TFLOPS/GPU (docs/SIMULATION.md shows the output).
fn compare_published(a: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let packs = if a.packs > 1 { a.packs } else { crate::sim::published::PUBLISHED_PACKS };
    let known = ["full", "causal", "full_document", "causal_document"];
    if let Some(m) = a.case.mask.iter().find(|m| !known.contains(&m.as_str())) {
        return Err(bad(format!("--mask {m}: the published figures have full, causal, full_document and causal_document")));
    }
    if let Some(w) = a.world_size.iter().find(|w| ![8, 16, 32, 64].contains(*w)) {
        return Err(bad(format!("--world-size {w}: the published figures have 8, 16, 32 and 64 GPUs")));
    }
    let keep = |p: &CpPoint| (a.case.mask.is_empty() || a.case.mask.contains(&p.mask)) && (a.world_size.is_empty() || a.world_size.contains(&p.world));
    let opts = CompareOptions { keep: &keep, packs, fit: a.fit, json: a.json, ablate: a.ablate };
    report::compare_published(&opts, &mut |s| println!("{s}")).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}
