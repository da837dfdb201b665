//! Where a candidate's figure comes from, strongest first: a **measured** row (`--results`, kind `cp`,
//! matched by case), a row **projected from measured pieces** (`simulate --compute-model measured`),
//! or a projection **from the calibrated model** (a `simulate` row made with the FA3 tile model, or the
//! simulator run here, in process). A projection carries the model's held-out error for its mask class,
//! computed from the committed comparison data (see [`held_out_errors`]), never typed in.
//!
//! Matching rows to a candidate: kind, kernel, strategy, mask and its parameters, total tokens, batch
//! 1, heads, head dim, dtype, pass, GPU count, GPU kind (the row's device name contains it), and the
//! implementation (a simulated row's note says `implementation longca`; measured `cp` rows are
//! attnbench's engines). The strategy's degrees are read from the engine's note
//! (`ulysses=U ring=R inner=I outer=O`, written by `cp` and `simulate`); a row without it cannot say
//! which usp / double-ring degrees it ran and is taken for the strategy's default degrees, marked
//! `ambiguous`. A forward+backward candidate takes a `fwdbwd` row, or a `fwd` and a `bwd` row summed.
//! On one GPU (`--world-size 1`) the candidate is a kernel alone and its evidence is a kernel row
//! (`attnbench run`, kind `kernel`, empty strategy) of the same case.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::candidates::Layout;
use super::input::{MaskSpec, Plan};
use crate::case::{CaseKind, CpOptions, DeviceKind};
use crate::cp::schedule::CpLayout;
use crate::error::BadInput;
use crate::flops::Pass;
use crate::mask::Params;
use crate::results::{Row, Status};
use crate::sim::Implementation;

/// The kernel the FA3 tile model stands for: the per-rank kernel of every projection it makes.
pub const FA3_KERNEL: &str = "ext:fa3-varlen";

/// The committed projection of LongCA-bench's CP grid by the calibrated model (`--impl longca`), the
/// evidence [`held_out_errors`] scores against the published figures.
pub const COMMITTED_PROJECTION: &str = include_str!("../../results/simulated-longca-cp-h100/results.csv");
pub const COMMITTED_PROJECTION_PATH: &str = "results/simulated-longca-cp-h100/results.csv";

/// Kinds of evidence, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Measured,
    ProjectedMeasuredPieces,
    ProjectedModel,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Measured => "measured",
            Source::ProjectedMeasuredPieces => "projected-measured-pieces",
            Source::ProjectedModel => "projected-model",
        }
    }
}

/// One figure for one mask of a candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Seconds of one pass (forward+backward: the sum).
    pub step_s: f64,
    /// FLOPs of that pass, whole problem.
    pub flops: f64,
    pub source: Source,
    /// Which rows (file and run id) or which model run.
    pub detail: String,
    /// The row's degrees were not recorded; the strategy's defaults were assumed.
    pub ambiguous: bool,
}

/// Rows of the `--results` files, with the file each came from.
#[derive(Debug, Default)]
pub struct Rows(pub Vec<(Row, PathBuf)>);

/// A path is a CSV file, or a run folder holding `results.csv`.
fn csv_of(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("results.csv")
    } else {
        p.to_path_buf()
    }
}

impl Rows {
    pub fn load(paths: &[PathBuf]) -> Result<Rows, BadInput> {
        let mut out = Vec::new();
        for p in paths {
            let f = csv_of(p);
            let rows =
                crate::results::read_rows(&f).map_err(|e| BadInput::new(format!("--results {}: {}", p.display(), crate::error::one_line(&e.to_string()))))?;
            out.extend(rows.into_iter().map(|r| (r, f.clone())));
        }
        Ok(Rows(out))
    }
}

/// (ulysses, ring, inner) from the engine note `ulysses=U ring=R inner=I outer=O`.
fn note_degrees(note: &str) -> Option<(usize, usize, usize)> {
    let get = |k: &str| -> Option<usize> {
        let at = note.find(&format!("{k}="))?;
        let rest = &note[at + k.len() + 1..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Some((get("ulysses")?, get("ring")?, get("inner")?))
}

/// The degrees a row ran, as strategy options; `None` when the row does not say (ambiguous).
pub fn row_options(row: &Row) -> Option<CpOptions> {
    let none = CpOptions::default();
    if let Some(o) = params_options(row) {
        // The row's own column (issue 29); an inner ring of 1 or of the whole ring is a plain ring.
        let ring = row.world_size / o.ulysses_degree.unwrap_or(1).max(1);
        let inner = o.inner_ring.filter(|&i| row.strategy != "usp" || (i > 1 && i < ring));
        return Some(CpOptions { inner_ring: inner, sharding: None, ..o });
    }
    match row.strategy.as_str() {
        "usp" => {
            let (u, ring, inner) = note_degrees(&row.note)?;
            Some(CpOptions { ulysses_degree: Some(u), inner_ring: (inner < ring && inner > 1).then_some(inner), sharding: None })
        }
        "double-ring" => {
            let (_, _, inner) = note_degrees(&row.note)?;
            Some(CpOptions { inner_ring: Some(inner), ..none })
        }
        _ => Some(none),
    }
}

/// The options in a row's `strategy_params` column as written (no normalisation); `None` without it.
fn params_options(row: &Row) -> Option<CpOptions> {
    if row.strategy_params.is_empty() {
        return None;
    }
    let items: Vec<&str> = row.strategy_params.split(';').collect();
    let o = CpOptions::from_params(&crate::mask::Params::parse_kv(&items).ok()?).ok()?;
    Some(CpOptions { sharding: None, ..o })
}

/// The degrees a CP run takes when none are given (what a row without its degrees most likely ran).
fn default_options(strategy: &str, plan: &Plan) -> CpOptions {
    match strategy {
        "usp" => {
            let layout =
                CpLayout { batch: 1, heads_q: plan.heads.q, heads_kv: plan.heads.kv, head_dim: plan.head_dim, elem_bytes: plan.dtype.size(), pass: plan.pass };
            CpOptions { ulysses_degree: Some(crate::cp::strategies::usp::default_ulysses(plan.world, &layout)), ..CpOptions::default() }
        }
        "double-ring" => CpOptions { inner_ring: Some(crate::cp::strategies::double_ring::default_inner(plan.world)), ..CpOptions::default() },
        _ => CpOptions::default(),
    }
}

fn row_implementation(row: &Row) -> Implementation {
    if row.note.contains("implementation longca") {
        Implementation::Longca
    } else {
        Implementation::Attnbench
    }
}

/// The kernel a row stands for: the FA3 model's rows are FA3's, whatever their `backend` column says
/// (the simulator's per-rank backend is only executed by the measured model).
fn row_kernel(row: &Row) -> &str {
    if row.kind == CaseKind::Simulated && row.note.contains("compute fa3") {
        FA3_KERNEL
    } else {
        &row.backend
    }
}

fn row_source(row: &Row) -> Option<Source> {
    match row.kind {
        // A kernel row (`attnbench run`) is evidence for the single-GPU layout only: `matches` asks
        // for the layout's strategy (empty) and the GPU count (1).
        CaseKind::Cp | CaseKind::Kernel => Some(Source::Measured),
        CaseKind::Simulated if row.note.contains("compute fa3") || row.note.contains("compute roofline") => Some(Source::ProjectedModel),
        CaseKind::Simulated => Some(Source::ProjectedMeasuredPieces),
    }
}

fn params_of(s: &str) -> Params {
    let kv: Vec<&str> = s.split(';').filter(|x| !x.is_empty()).collect();
    Params::parse_kv(&kv).unwrap_or_default()
}

/// Does `row` report this candidate (kernel, layout) on this mask and pass?
fn matches(row: &Row, plan: &Plan, kernel: &str, layout: &Layout, mask: &MaskSpec, pass: Pass) -> Option<bool> {
    let ok = row.status == Status::Ok
        && row.ms_median.is_some()
        && row.strategy == layout.strategy
        && row_kernel(row) == kernel
        && row.mask == mask.pattern
        && params_of(&row.mask_params) == mask.params
        && row.seqlen == plan.seqlen
        && row.batch == 1
        && row.heads_q == plan.heads.q
        && row.heads_kv == plan.heads.kv
        && row.head_dim == plan.head_dim
        && row.dtype == plan.dtype.name()
        && row.pass == pass.name()
        && row.world_size == plan.world
        && row_implementation(row) == plan.implementation
        && row.device.to_ascii_uppercase().contains(plan.gpu);
    if !ok {
        return None;
    }
    let want = CpOptions { sharding: None, ..layout.options };
    match row_options(row) {
        Some(o) => (o == want).then_some(false),
        None => (default_options(&layout.strategy, plan) == want).then_some(true),
    }
}

/// The best-sourced row for one pass: (time s, FLOPs, source, detail, ambiguous).
fn best_row(rows: &Rows, plan: &Plan, kernel: &str, layout: &Layout, mask: &MaskSpec, pass: Pass) -> Option<Figure> {
    let mut best: Option<(Source, bool, &Row, &PathBuf)> = None;
    for (r, f) in &rows.0 {
        let Some(ambiguous) = matches(r, plan, kernel, layout, mask, pass) else { continue };
        let Some(src) = row_source(r) else { continue };
        // Strongest source first, unambiguous before ambiguous, then the last row in file order (a
        // resumed or repeated run's newest figure).
        if best.as_ref().is_none_or(|(s, a, _, _)| (src, ambiguous) <= (*s, *a)) {
            best = Some((src, ambiguous, r, f));
        }
    }
    best.map(|(source, ambiguous, r, f)| Figure {
        step_s: r.ms_median.unwrap_or(f64::NAN) / 1e3,
        flops: r.flops,
        source,
        detail: format!("{} row {} of {}", r.pass, r.run_id, f.display()),
        ambiguous,
    })
}

/// A figure from the rows for the plan's pass (forward+backward: a `fwdbwd` row, or `fwd` + `bwd`).
pub fn from_rows(rows: &Rows, plan: &Plan, kernel: &str, layout: &Layout, mask: &MaskSpec) -> Option<Figure> {
    if let Some(f) = best_row(rows, plan, kernel, layout, mask, plan.pass) {
        return Some(f);
    }
    if plan.pass != Pass::Fwdbwd {
        return None;
    }
    let f = best_row(rows, plan, kernel, layout, mask, Pass::Fwd)?;
    let b = best_row(rows, plan, kernel, layout, mask, Pass::Bwd)?;
    Some(Figure {
        step_s: f.step_s + b.step_s,
        flops: f.flops + b.flops,
        source: f.source.max(b.source),
        detail: format!("{} + {}", f.detail, b.detail),
        ambiguous: f.ambiguous || b.ambiguous,
    })
}

/// The simulator run here with the calibrated FA3 tile model (H100/H200 bf16) on the plan's topology.
pub fn simulate(plan: &Plan, layout: &Layout, mask: &MaskSpec) -> Result<Figure, String> {
    use crate::sim::compute::{ComputeModel, Fa3Compute, Roofline};
    use crate::sim::{published, setup, simulate_with, SimSpec};
    let peak = crate::flops::device_peak(plan.gpu).ok_or_else(|| format!("no peak known for {}", plan.gpu))?;
    if !(peak.name == "H100" || peak.name == "H200") || plan.dtype != crate::case::DType::Bf16 {
        return Err(format!("no calibrated model for {} {} (the FA3 tile model is fitted to H100 bf16)", plan.gpu, plan.dtype));
    }
    // As `simulate --compute-model fa3` builds it: the fitted kernel, the fitted glue parameters, the
    // device's datasheet bandwidth.
    let cp = published::H100_CP;
    let glue = Roofline {
        peak_tflops: crate::flops::peak_tflops(peak.name, "bf16").unwrap_or(published::H100_PEAK_TFLOPS),
        efficiency: 0.6,
        launch_us: cp.launch_us,
        mem_tbps: peak.mem_tbps,
        mem_efficiency: cp.mem_efficiency,
        device: peak.name,
    };
    let model = ComputeModel::Fa3(Fa3Compute { kernel: published::h100_fa3(), glue });
    let kernel_case =
        crate::case::Case::kernel("sliced", &mask.pattern, mask.params.clone(), plan.seqlen, plan.heads, plan.head_dim, plan.dtype, plan.pass, DeviceKind::Cpu);
    let case = crate::case::Case::cp(&layout.strategy, "sliced", plan.world, layout.options, kernel_case);
    let spec = SimSpec { case, topology: plan.topology.clone(), calibrated: false, implementation: plan.implementation };
    let run = |spec: &SimSpec| -> Result<crate::sim::SimReport, String> {
        let s = setup(spec).map_err(|e| e.to_string())?;
        simulate_with(spec, &s, model.clone()).map_err(|e| e.to_string())
    };
    let mut rep = run(&spec)?;
    let drawn = crate::mask::find_pattern(&mask.pattern).map(|p| p.params.iter().any(|x| x.key == "seed")).unwrap_or(false);
    if plan.packs > 1 && drawn {
        let base = mask.params.get("seed").and_then(|s| s.parse::<u64>().ok()).unwrap_or(42);
        let mut others = Vec::new();
        for i in 1..plan.packs as u64 {
            let mut o = spec.clone();
            o.case.params = std::mem::take(&mut o.case.params).set("seed", base + i);
            others.push(run(&o)?);
        }
        rep.mean_over_draws(&others, base..=base + plan.packs as u64 - 1);
    }
    Ok(Figure {
        step_s: rep.total_s,
        flops: rep.flops,
        source: Source::ProjectedModel,
        detail: format!(
            "attnbench simulate --compute-model fa3 --impl {} --topology {} ({} draw(s))",
            plan.implementation.name(),
            plan.topology.name,
            if drawn { plan.packs } else { 1 }
        ),
        ambiguous: false,
    })
}

/// The mask classes the held-out error is reported for.
pub fn mask_class(mask: &MaskSpec) -> Option<&'static str> {
    match mask.pattern.as_str() {
        "full" | "causal" => Some("full/causal"),
        "full_document" | "causal_document" => Some("document"),
        _ => None,
    }
}

/// The calibrated model's error against LongCA-bench's published CP figures on the points it was not
/// fitted to, per mask class.
#[derive(Debug, Clone, Serialize)]
pub struct ModelError {
    pub class: &'static str,
    /// Mean |projected / published − 1| over the held-out points, percent.
    pub mean_abs_pct: f64,
    pub max_abs_pct: f64,
    pub points: usize,
}

/// Computed from the published figures (`data/longca-cp-published-h100.csv`) and the committed
/// projection of the same grid ([`COMMITTED_PROJECTION`]): every published bar of a strategy the
/// projection has (published name → our strategy and degrees by `sim::published::config`), not one of
/// the calibration points (forward at 8 and 16 GPUs).
pub fn held_out_errors() -> Vec<ModelError> {
    use crate::sim::published::{config, cp_points, is_calibration};
    let rows =
        crate::results::csvio::parse_rows(COMMITTED_PROJECTION, Path::new(COMMITTED_PROJECTION_PATH)).expect("committed projection parses (a test checks it)");
    let mut acc: Vec<(&'static str, Vec<f64>)> = vec![("full/causal", vec![]), ("document", vec![])];
    for p in cp_points().iter().filter(|p| !is_calibration(p)) {
        let Some(cfg) = config(&p.strategy, p.world) else { continue };
        // LoongTrain's row is the one with its inner ring (the baselines' double ring moves dK/dV its
        // own way even when the whole ring is one window, as at 16 GPUs); rows written without it
        // (an inner ring as long as the ring is no split in our engines) are the fallback.
        let ring = p.world / cfg.ulysses_degree.max(1);
        let degrees =
            |inner: Option<usize>| CpOptions { ulysses_degree: (cfg.ulysses_degree > 0).then_some(cfg.ulysses_degree), inner_ring: inner, sharding: None };
        let exact = degrees((cfg.inner_ring > 1).then_some(cfg.inner_ring));
        let fallback = degrees((cfg.inner_ring > 1 && cfg.inner_ring < ring).then_some(cfg.inner_ring));
        let find = |want: &CpOptions, options: &dyn Fn(&Row) -> Option<CpOptions>| {
            rows.iter().find(|r| {
                r.mask == p.mask
                    && r.pass == p.pass.name()
                    && r.world_size == p.world
                    && r.strategy == cfg.strategy
                    && options(r).is_some_and(|o| o == *want)
                    && r.status == Status::Ok
            })
        };
        let hit = find(&exact, &params_options).or_else(|| find(&fallback, &row_options));
        let Some(r) = hit else { continue };
        let Some(proj) = r.tflops_per_gpu else { continue };
        let class = if p.mask.ends_with("_document") { "document" } else { "full/causal" };
        if let Some(a) = acc.iter_mut().find(|a| a.0 == class) {
            a.1.push((proj / p.tflops - 1.0).abs() * 100.0);
        }
    }
    acc.into_iter()
        .map(|(class, v)| ModelError {
            class,
            mean_abs_pct: v.iter().sum::<f64>() / v.len().max(1) as f64,
            max_abs_pct: v.iter().copied().fold(0.0, f64::max),
            points: v.len(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrees_come_from_the_engine_note() {
        let mut r = crate::results::csvio::parse_rows(COMMITTED_PROJECTION, Path::new("x")).unwrap().remove(0);
        r.strategy = "usp".into();
        r.note = "projected: …; ulysses=8 ring=4 inner=2 outer=2; sharding=zigzag".into();
        assert_eq!(row_options(&r), Some(CpOptions { ulysses_degree: Some(8), inner_ring: Some(2), sharding: None }));
        r.note = "ulysses=8 ring=4 inner=4 outer=1".into();
        assert_eq!(row_options(&r), Some(CpOptions { ulysses_degree: Some(8), ..CpOptions::default() }));
        r.note = "no degrees here".into();
        assert_eq!(row_options(&r), None);
        r.strategy = "ring-p2p".into();
        assert_eq!(row_options(&r), Some(CpOptions::default()));
    }

    #[test]
    fn measured_beats_measured_pieces_and_rows_are_matched_by_kernel_and_implementation() {
        use crate::advise::input::Request;
        let committed = crate::results::csvio::parse_rows(COMMITTED_PROJECTION, Path::new("x")).unwrap();
        let base = committed.iter().find(|r| r.mask == "causal" && r.world_size == 8 && r.strategy == "ulysses" && r.pass == "fwd").unwrap().clone();
        let plan = |imp: &str| {
            Request {
                mask: vec!["causal".into()],
                world_size: Some(8),
                seqlen_per_rank: Some(8192),
                pass: Some("fwd".into()),
                implementation: Some(imp.into()),
                ..Request::default()
            }
            .plan()
            .unwrap()
        };
        let layout = Layout { strategy: "ulysses".into(), options: CpOptions::default(), invalid: None };
        let mask = plan("attnbench").masks[0].clone();
        let mut pieces = base.clone();
        pieces.backend = "sliced".into();
        pieces.note = "projected: implementation attnbench; compute measured on cuda; ulysses=8 ring=1 inner=1 outer=1".into();
        pieces.device = "NVIDIA H100 80GB HBM3".into();
        pieces.ms_median = Some(3.0);
        let mut measured = pieces.clone();
        measured.kind = CaseKind::Cp;
        measured.ms_median = Some(5.0);
        let p = PathBuf::from("r.csv");
        let one = Rows(vec![(pieces.clone(), p.clone())]);
        let f = from_rows(&one, &plan("attnbench"), "sliced", &layout, &mask).unwrap();
        assert_eq!((f.source, f.step_s), (Source::ProjectedMeasuredPieces, 0.003));
        assert!(from_rows(&one, &plan("attnbench"), FA3_KERNEL, &layout, &mask).is_none());
        let both = Rows(vec![(measured, p.clone()), (pieces, p.clone())]);
        let f = from_rows(&both, &plan("attnbench"), "sliced", &layout, &mask).unwrap();
        assert_eq!((f.source, f.step_s), (Source::Measured, 0.005));
        // The committed FA3-model row is FA3's, and only for the baselines' implementation.
        let fa3 = Rows(vec![(base.clone(), p)]);
        assert!(from_rows(&fa3, &plan("attnbench"), FA3_KERNEL, &layout, &mask).is_none());
        let f = from_rows(&fa3, &plan("longca"), FA3_KERNEL, &layout, &mask).unwrap();
        assert_eq!(f.source, Source::ProjectedModel);
        assert!((f.step_s - base.ms_median.unwrap() / 1e3).abs() < 1e-12);
    }

    const COMPARISON: &str = include_str!("../../results/simulated-longca-cp-h100/comparison.md");

    #[test]
    fn held_out_error_is_computed_from_the_committed_comparison() {
        let e = held_out_errors();
        let doc = e.iter().find(|x| x.class == "document").unwrap();
        let fc = e.iter().find(|x| x.class == "full/causal").unwrap();
        // 2 masks × (bwd at 4 sizes + fwd at 2) × 5 strategies: every held-out point of the published
        // grid, LoongTrain's split ring at 32 and 64 GPUs included (the projection has its rows).
        assert_eq!((doc.points, fc.points), (60, 60));
        // The same points and the same model as the committed comparison, which reports the means
        // to 0.1 % in lines such as "| held-out | document | 60 | 10.1 % |".
        let reported = |class: &str| -> f64 {
            let line = COMPARISON.lines().find(|l| l.starts_with(&format!("| held-out | {class} | 60 |"))).expect("held-out line in comparison.md");
            line.split('|').nth(4).unwrap().trim().trim_end_matches('%').trim().parse().unwrap()
        };
        assert!((doc.mean_abs_pct - reported("document")).abs() <= 0.051, "{doc:?} vs {}", reported("document"));
        assert!((fc.mean_abs_pct - reported("full/causal")).abs() <= 0.051, "{fc:?} vs {}", reported("full/causal"));
    }
}
