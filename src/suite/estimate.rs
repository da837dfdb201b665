//! The `run --dry-run` time estimate (issue 26): per kernel case, the calls the measurement makes at an
//! assumed throughput, plus the untimed seconds every row records — `setup_s` (mask, inputs, prepare),
//! `gate_s` (the backend's call and the chunked f64 reference) and the measurement's own overhead
//! (`measure_s` beyond the kernel time: L2 flushes, clock reads, the peak-memory call's bookkeeping).
//!
//! Each of those is an *estimate*: a formula whose constants are either the defaults below (written
//! from measured CPU runs and, for CUDA, from the device's data sheet — see each constant) or, with
//! `--overheads-from RUN/results.csv`, fitted to the untimed seconds an earlier run recorded on the
//! same device kind. The dry-run says which.

use crate::case::DeviceKind;
use crate::flops::Pass;
use crate::harness::gate::check_rows;
use crate::measure::MeasureSettings;
use crate::results::{Row, Status};

use super::PlannedCase;

/// Per-case untimed costs of one device kind. Seconds, and 10¹² FLOP/s for the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Overheads {
    /// Seconds per case before the gate that do not scale with size: the worker round trip, the mask,
    /// the backend's `prepare`.
    pub setup_s: f64,
    /// Seconds to draw 10⁹ bytes of inputs (once per shape: backends of one shape share the draw).
    pub draw_s_per_gb: f64,
    /// Seconds per gate that do not scale with size (mask rows, comparisons, launches).
    pub gate_fixed_s: f64,
    /// Throughput of the f64 reference, TFLOPS.
    pub reference_tflops: f64,
    /// Seconds per case the measurement costs beyond its calls' kernel time.
    pub measure_fixed_s: f64,
    /// Median TFLOPS per backend measured by the earlier run (empty for the defaults): the dry-run
    /// uses them instead of the assumed rate for those backends, unless `--assume-tflops` is given.
    pub tflops_by_backend: std::collections::BTreeMap<String, f64>,
    /// Where the numbers come from, for the dry-run's last line.
    pub source: String,
}

impl Overheads {
    /// Defaults. CPU: fitted (as [`Overheads::from_rows`] does) to the 44 ok rows of one `quick-cpu`
    /// run on the 2-core development machine under load (test-profile binary; issue 26), except the
    /// draw rate, which that suite's small shapes do not pin down (an estimate). CUDA: per-case costs of
    /// a worker on an H200 assumed at 20 ms, the device `randn` at 1 TB/s (HBM-bound Philox) and the f64
    /// reference at 30 TFLOPS (under half the H200's 67 TFLOPS FP64 tensor-core peak) — data-sheet
    /// estimates until a GPU run's rows replace them through `--overheads-from`.
    pub fn default_for(device: DeviceKind) -> Overheads {
        match device {
            DeviceKind::Cpu => Overheads {
                setup_s: 0.023,
                draw_s_per_gb: 2.0,
                gate_fixed_s: 0.2,
                reference_tflops: 0.0017,
                measure_fixed_s: 0.001,
                tflops_by_backend: Default::default(),
                source: "defaults (CPU: fitted to quick-cpu on 2 cores)".into(),
            },
            DeviceKind::Cuda => Overheads {
                setup_s: 0.02,
                draw_s_per_gb: 0.001,
                gate_fixed_s: 0.02,
                reference_tflops: 30.0,
                measure_fixed_s: 0.005,
                tflops_by_backend: Default::default(),
                source: "defaults (CUDA: data-sheet estimates, no GPU run yet)".into(),
            },
        }
    }

    /// Fitted to an earlier run's `ok`/`wrong` kernel rows on `device`: setup and measurement overhead
    /// are medians over cases; the gate is its smallest recorded time (the fixed part) plus the
    /// reference work at the throughput the rest of the recorded gate seconds imply. `None` when no
    /// row of that device kind recorded untimed seconds.
    pub fn from_rows(rows: &[Row], device: DeviceKind, settings: &MeasureSettings) -> Option<Overheads> {
        let on = |r: &&Row| (r.device == "cpu") == (device == DeviceKind::Cpu) && matches!(r.status, Status::Ok | Status::Wrong);
        let rows: Vec<&Row> = rows.iter().filter(on).filter(|r| r.setup_s.is_some()).collect();
        if rows.is_empty() {
            return None;
        }
        let mut d = Overheads::default_for(device);
        d.setup_s = median(rows.iter().filter_map(|r| r.setup_s).collect());
        let extra = |r: &Row| calls_per_measure(settings, pass_of(&r.pass)) - settings.repeats as f64;
        let over: Vec<f64> = rows.iter().filter_map(|r| Some(r.measure_s? - r.ms_median? * (r.repeats? as f64 + extra(r)) / 1e3)).map(|x| x.max(0.0)).collect();
        if !over.is_empty() {
            d.measure_fixed_s = median(over);
        }
        let gates: Vec<(f64, f64)> =
            rows.iter().filter_map(|r| Some((r.gate_s?, reference_flops(r.batch, r.heads_q, r.seqlen, r.head_dim, pass_of(&r.pass))))).collect();
        if !gates.is_empty() {
            let fixed = gates.iter().map(|g| g.0).fold(f64::INFINITY, f64::min);
            let (work, secs) = gates.iter().fold((0.0, 0.0), |(w, s), g| (w + g.1, s + (g.0 - fixed).max(0.0)));
            d.gate_fixed_s = fixed;
            if secs > 0.0 && work > 0.0 {
                d.reference_tflops = work / secs / 1e12;
            }
        }
        let mut by: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        for r in &rows {
            if let Some(t) = r.tflops.filter(|t| *t > 0.0) {
                by.entry(r.backend.clone()).or_default().push(t);
            }
        }
        d.tflops_by_backend = by.into_iter().map(|(b, v)| (b, median(v))).collect();
        d.source = format!("fitted to {} rows of an earlier run (with its median TFLOPS per backend)", rows.len());
        Some(d)
    }
}

fn pass_of(name: &str) -> Pass {
    name.parse().unwrap_or(Pass::Fwd)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Calls of the pass the measurement makes: warmup, repeats, the peak-memory call, and for `bwd` the
/// forward it differentiates.
fn calls_per_measure(s: &MeasureSettings, pass: Pass) -> f64 {
    (s.warmup + s.repeats) as f64 + 1.0 + if pass == Pass::Bwd { 0.5 } else { 0.0 }
}

/// FLOPs of the gate's f64 reference: scores and `P·V` of the checked rows against every key (the
/// reference does not skip masked blocks), ×3 with its backward.
pub fn reference_flops(batch: usize, heads_q: usize, seqlen: usize, head_dim: usize, pass: Pass) -> f64 {
    let rows = check_rows(batch, heads_q, seqlen).map(|r| r.len()).unwrap_or(seqlen) as f64;
    let fwd = 4.0 * batch as f64 * heads_q as f64 * rows * seqlen as f64 * head_dim as f64;
    if pass.includes_backward() {
        3.0 * fwd
    } else {
        fwd
    }
}

/// One case's estimate, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CaseEstimate {
    /// The measurement's calls at the assumed throughput, plus its fixed overhead.
    pub measure_s: f64,
    pub setup_s: f64,
    pub gate_s: f64,
}

impl CaseEstimate {
    pub fn total(&self) -> f64 {
        self.measure_s + self.setup_s + self.gate_s
    }
}

/// The estimate of `pc` at `tflops`; `new_shape` when its inputs are drawn (the previous case had
/// another shape). A case the plan already knows is unsupported costs nothing.
pub fn estimate_case(pc: &PlannedCase, s: &MeasureSettings, tflops: f64, ov: &Overheads, new_shape: bool) -> CaseEstimate {
    if pc.support.is_err() {
        return CaseEstimate::default();
    }
    let c = &pc.case;
    let call_s = pc.flops / (tflops * 1e12);
    let elems = (c.batch * c.seqlen * c.head_dim * 2 * (c.heads.q + c.heads.kv)) as f64;
    let draw = if new_shape { elems * 4.0 / 1e9 * ov.draw_s_per_gb } else { 0.0 };
    let gate = if s.check {
        let call = if c.pass == Pass::Bwd { call_s * 1.5 } else { call_s };
        ov.gate_fixed_s + call + reference_flops(c.batch, c.heads.q, c.seqlen, c.head_dim, c.pass) / (ov.reference_tflops * 1e12)
    } else {
        0.0
    };
    CaseEstimate { measure_s: call_s * calls_per_measure(s, c.pass) + ov.measure_fixed_s, setup_s: ov.setup_s + draw, gate_s: gate }
}

/// Shape key of a case's inputs (what [`crate::backend::shared_inputs`] shares).
pub fn shape_key(pc: &PlannedCase) -> (usize, usize, usize, usize, usize, String, DeviceKind) {
    let c = &pc.case;
    (c.batch, c.heads.q, c.heads.kv, c.seqlen, c.head_dim, c.dtype.to_string(), c.device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fitting to rows recovers the per-case constants those rows were made with.
    #[test]
    fn overheads_fitted_from_rows_reproduce_the_recorded_seconds() {
        let case = crate::case::Case::kernel(
            "sdpa-flash",
            "causal",
            Default::default(),
            4096,
            crate::case::HeadLayout { q: 8, kv: 2 },
            64,
            crate::case::DType::Fp32,
            Pass::Fwd,
            DeviceKind::Cpu,
        );
        let s = MeasureSettings { warmup: 1, repeats: 3, ..Default::default() };
        let mut rows = Vec::new();
        for (i, setup) in [0.01, 0.02, 0.03].into_iter().enumerate() {
            let mut r = Row::for_case("r", &case, "cpu");
            r.status = Status::Ok;
            r.setup_s = Some(setup);
            r.ms_median = Some(10.0);
            r.repeats = Some(3);
            r.measure_s = Some(0.05 + 10.0 * 5.0 / 1e3);
            let work = reference_flops(1, 8, 4096, 64, Pass::Fwd);
            r.gate_s = Some(0.1 + i as f64 * work / 1e12);
            rows.push(r);
        }
        let o = Overheads::from_rows(&rows, DeviceKind::Cpu, &s).unwrap();
        assert!((o.setup_s - 0.02).abs() < 1e-12);
        assert!((o.measure_fixed_s - 0.05).abs() < 1e-9, "{}", o.measure_fixed_s);
        assert!((o.gate_fixed_s - 0.1).abs() < 1e-12);
        // Extra gate seconds of 0, 1, 2 units of work → 3 units over 3 units' worth of seconds at 1 TFLOPS.
        assert!((o.reference_tflops - 1.0).abs() < 1e-9, "{}", o.reference_tflops);
        assert!(Overheads::from_rows(&rows, DeviceKind::Cuda, &s).is_none(), "CPU rows must not calibrate CUDA");
    }
}
