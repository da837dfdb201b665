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
use crate::sim::calibrate::{apply, calibrate_file};
use crate::sim::comm_model::{preset, Link, PRESETS};
use crate::sim::compute::{ComputeModel, Fa3Compute, Roofline};
use crate::sim::{setup, simulate_with, to_row, Implementation, SimError, SimReport, SimSpec};
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
    /// error).
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
    if a.repeats == 0 {
        return Err(bad("--repeats must be at least 1"));
    }
    let mut topo =
        preset(&a.topology).ok_or_else(|| bad(format!("--topology: unknown `{}` (expected h100, h200, a100 or one of {})", a.topology, PRESETS.join(", "))))?;
    if let Some(g) = a.gpus_per_node {
        if g == 0 {
            return Err(bad("--gpus-per-node must be at least 1"));
        }
        topo.gpus_per_node = g;
    }
    if let Some(l) = &a.link {
        let l = parse_link(l)?;
        topo.intra = l;
        topo.inter = l;
        topo.name = format!("{}+link({},{})", topo.name, l.alpha_us, l.beta_gbps);
    }
    let mut calibrated = false;
    if let Some(p) = &a.calibrate {
        let (link, rep, _) = calibrate_file(p).map_err(bad)?;
        apply(&mut topo, link, rep.world_size);
        calibrated = true;
    }
    let (model, device_name) = match a.compute_model.as_str() {
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
            (ComputeModel::Measured { device: dev, dtype, warmup: a.warmup, repeats: a.repeats }, name)
        }
        "roofline" | "fa3" => {
            let fa3 = a.compute_model == "fa3";
            let cp = crate::sim::published::H100_CP;
            let efficiency = a.efficiency.unwrap_or(0.6);
            let launch_us = a.launch_us.unwrap_or(if fa3 { cp.launch_us } else { 10.0 });
            let mem_efficiency = a.mem_efficiency.unwrap_or(if fa3 { cp.mem_efficiency } else { 0.8 });
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
            let want = a.peak_device.clone().unwrap_or_else(|| topo.name.split('-').next().unwrap_or("h100").to_string());
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
                (ComputeModel::Fa3(Fa3Compute { kernel: crate::sim::published::h100_fa3(), glue }), format!("{} (fa3 model)", peak.name))
            } else {
                (ComputeModel::Roofline(glue), format!("{} (roofline)", peak.name))
            }
        }
        other => return Err(bad(format!("--compute-model: unknown `{other}` (expected measured, roofline or fa3)"))),
    };
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
        let run = |spec: &SimSpec, set_up: &crate::cp::setup::CpSetup| match simulate_with(spec, set_up, model.clone()) {
            Ok(r) => Ok(r),
            Err(SimError::Bad(m)) => Err(bad(m)),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", spec.case.label())),
        };
        let mut rep = run(&spec, &set_up)?;
        // Masks without a random draw (no `seed` parameter) are the same every time: one run.
        let drawn = crate::mask::find_pattern(&spec.case.pattern).map(|p| p.params.iter().any(|x| x.key == "seed")).unwrap_or(false);
        if a.packs > 1 && drawn {
            // Further draws of the mask (seed + 1, …); the row reports the mean over all draws.
            let base = spec.case.params.get("seed").map(|s| s.parse::<u64>()).transpose().map_err(|_| bad("--set seed: expected an integer"))?.unwrap_or(42);
            let mut others = Vec::with_capacity(a.packs - 1);
            for i in 1..a.packs as u64 {
                let mut other = spec.clone();
                other.case.params = std::mem::take(&mut other.case.params).set("seed", base + i);
                others.push(run(&other, &setup(&other).map_err(|e| bad(e.to_string()))?)?);
            }
            rep.mean_over_draws(&others, base..=base + a.packs as u64 - 1);
        }
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
    use crate::sim::published::{self as pb, Variant};
    let packs = if a.packs > 1 { a.packs } else { pb::PUBLISHED_PACKS };
    let known = ["full", "causal", "full_document", "causal_document"];
    if let Some(m) = a.case.mask.iter().find(|m| !known.contains(&m.as_str())) {
        return Err(bad(format!("--mask {m}: the published figures have full, causal, full_document and causal_document")));
    }
    if let Some(w) = a.world_size.iter().find(|w| ![8, 16, 32, 64].contains(*w)) {
        return Err(bad(format!("--world-size {w}: the published figures have 8, 16, 32 and 64 GPUs")));
    }
    let keep = |p: &pb::CpPoint| (a.case.mask.is_empty() || a.case.mask.contains(&p.mask)) && (a.world_size.is_empty() || a.world_size.contains(&p.world));
    let kernel = if a.fit { pb::fit_kernel(&pb::kernel_points()) } else { pb::h100_fa3() };
    if a.fit {
        let t = |p: &crate::sim::fa3::Fa3Pass| format!("({:.4}, {:.2}, {:.1})", p.efficiency, p.item_us, p.launch_us);
        println!(
            "Fitted FA3 kernel parameters (efficiency, µs/item, µs/call): dense fwd {} bwd {}; varlen fwd {} bwd {}\n",
            t(&kernel.fwd),
            t(&kernel.bwd),
            t(&kernel.varlen_fwd),
            t(&kernel.varlen_bwd)
        );
    }
    println!("## FA3 kernel model vs the published FA3 kernel bars\n");
    println!("{}", pb::kernel_markdown(&kernel));
    let points = pb::prepare_points(Variant::Full, packs, &kernel, &keep).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cp = if a.fit {
        let (cp, err) = pb::fit_cp(&points, Variant::Full);
        println!("Fitted on the calibration points (forward, W = 8 and 16): {cp:?}, mean |error| {:.1} %\n", err * 100.0);
        cp
    } else {
        pb::H100_CP
    };
    println!("## CP model vs LongCA-bench's published CP figures (H100)\n");
    let rows = pb::compare(&points, &cp, Variant::Full);
    if a.json {
        println!("{}", serde_json::to_string(&serde_json::json!({ "kernel": kernel, "cp": cp, "rows": rows }))?);
    } else {
        println!("{}", pb::markdown(&rows, &cp, &kernel, packs));
    }
    if a.ablate {
        println!("## Ablations (each refitted on the calibration points; held-out mean |error|)\n");
        println!(
            "| model | inter-node GB/s | glue mem eff | µs/launch | calibration | held-out full/causal | held-out document |\n|:--|--:|--:|--:|--:|--:|--:|"
        );
        for (v, c, sum) in pb::ablations(&points, packs, &kernel, &keep).map_err(|e| anyhow::anyhow!("{e}"))? {
            let get = |cal: bool, g: &str| {
                let xs: Vec<&(f64, usize)> = sum.iter().filter(|((c2, g2), _)| *c2 == cal && (g.is_empty() || *g2 == g)).map(|(_, v)| v).collect();
                let n: usize = xs.iter().map(|x| x.1).sum();
                if n == 0 {
                    "–".to_string()
                } else {
                    format!("{:.1} %", xs.iter().map(|x| x.0 * x.1 as f64).sum::<f64>() / n as f64 * 100.0)
                }
            };
            println!(
                "| {} | {:.1} | {:.2} | {:.0} | {} | {} | {} |",
                v.describe(),
                c.inter_gbps,
                c.mem_efficiency,
                c.launch_us,
                get(true, ""),
                get(false, "full/causal"),
                get(false, "document")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
