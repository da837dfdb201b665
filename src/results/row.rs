//! The CSV row: one per case, appended and flushed as soon as the case finishes. Column order is the
//! struct's field order. Units are in the names: `ms_*` milliseconds, `*_bytes` bytes, `tflops` 10¹²
//! FLOP/s, `mfu` a fraction in [0, 1], `bandwidth_gbps` 10⁹ bytes/s.
//!
//! Rule: a `status` other than `ok` leaves every timing-derived column empty — never a number for a
//! kernel that failed or computed the wrong thing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::case::{Case, CaseKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// The backend/strategy cannot run this case (answered before running); `error` says why.
    Unsupported,
    /// Out of memory (allocator error), or skipped because a smaller length already ran out of memory.
    Oom,
    /// Ran, but the correctness check against the reference failed; `max_abs_err` says by how much.
    Wrong,
    /// Any other failure (including a panic inside the case); `error` has the message.
    Error,
    /// Exceeded the per-case time limit.
    Timeout,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Unsupported => "unsupported",
            Status::Oom => "oom",
            Status::Wrong => "wrong",
            Status::Error => "error",
            Status::Timeout => "timeout",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ok" => Status::Ok,
            "unsupported" => Status::Unsupported,
            "oom" => Status::Oom,
            "wrong" => Status::Wrong,
            "error" => Status::Error,
            "timeout" => Status::Timeout,
            _ => return Err(format!("unknown status `{s}`")),
        })
    }
}

/// One result row. See the module doc for units and the empty-on-failure rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub run_id: String,
    pub case_id: String,
    pub kind: CaseKind,
    pub backend: String,
    pub strategy: String,
    pub mask: String,
    pub mask_params: String,
    pub seqlen: usize,
    pub batch: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    pub dtype: String,
    pub pass: String,
    /// Device name as reported (`cpu`, `NVIDIA H200`, …).
    pub device: String,
    pub world_size: usize,
    pub status: Status,
    pub error: String,
    /// Attended (query, key) pairs per head (mean over head groups for heterogeneous masks).
    pub mask_area: f64,
    pub density: f64,
    /// FLOPs of the pass for the whole case (all heads, batch), per the model in `flops.rs`.
    pub flops: f64,
    pub ms_median: Option<f64>,
    pub ms_p20: Option<f64>,
    pub ms_p80: Option<f64>,
    /// Coefficient of variation (stddev / mean) of the repeat times.
    pub cv: Option<f64>,
    pub tflops: Option<f64>,
    /// Total FLOPs / max-rank time / world size (equals `tflops` for kernel cases).
    pub tflops_per_gpu: Option<f64>,
    pub mfu: Option<f64>,
    /// Peak bytes of tensor storage the backend allocates for one call of the pass: inputs excluded,
    /// what its prepare keeps (packed copies, repeated K/V, masks) and the call's own peak included
    /// (src/measure/memory.rs), read from an allocator: see `mem_source`.
    pub peak_mem_bytes: Option<u64>,
    /// Max |out − reference| (over outputs and, for bwd, gradients); empty when the check was off.
    pub max_abs_err: Option<f64>,
    /// How times were taken (the clock that ran, `measure::Clock::mode`): `cpu-instant`,
    /// `cuda-event-l2flush`, `cuda-event-back2back`, `rank-max-cpu-instant` /
    /// `rank-max-cuda-sync-instant[-l2flush]` (CP: barrier, host clock, device synchronised, slowest
    /// rank — includes launch and sync latency that CUDA events exclude), `model` (simulated rows).
    pub timing_mode: String,
    /// Timed repeats that ran (after warmup).
    pub repeats: Option<usize>,
    /// CP: max/mean attended area over ranks (1.0 = perfect balance).
    pub imbalance: Option<f64>,
    /// CP: bytes sent per rank (max over ranks) for one pass.
    pub bytes_sent: Option<u64>,
    /// CP: bytes_sent / time of the pass, 10⁹ bytes/s.
    pub bandwidth_gbps: Option<f64>,
    /// CP: single-device time of the same total problem / (world size × max-rank time).
    pub scaling_eff: Option<f64>,
    /// Free-form details: GQA handling, launches per call, skipped reasons.
    pub note: String,
    /// Where `peak_mem_bytes` came from: `cuda-allocator` (the caching allocator's peak statistics),
    /// `cpu-allocator` (the counting CPU allocator attnbench installs in front of libtorch's) or
    /// `estimate` (a formula, nothing measured); empty when there is no memory figure.
    #[serde(default)]
    pub mem_source: String,
    /// `attnbench run`: hash of the measure settings and machine the row was measured with, and the
    /// run segment it belongs to (see `meta.json`; empty / 0 outside a run). Resume matches on both.
    #[serde(default)]
    pub measure_id: String,
    #[serde(default)]
    pub segment: u32,
    // issue 33: power, energy and clocks, sampled while the timed repeats ran (`measure::power`);
    // docs/ENERGY.md says how each is obtained. Empty when the source read nothing, and on failed rows.
    /// Mean power over the timed repeats, W: energy of the sampled interval / its length (energy from
    /// the device's counter where it has one, else trapezoids of the power readings). CP: summed over
    /// the ranks' devices.
    #[serde(default)]
    pub avg_power_w: Option<f64>,
    /// Energy of one call, J: `avg_power_w` × `ms_median`.
    #[serde(default)]
    pub energy_j: Option<f64>,
    /// `tflops` / `avg_power_w` (10¹² FLOP per joule).
    #[serde(default)]
    pub tflops_per_watt: Option<f64>,
    /// Median SM clock over the readings where the GPU was not idle, MHz (CP: the lowest rank's).
    #[serde(default)]
    pub sm_clock_mhz: Option<f64>,
    /// Clock limits seen while timing, `+`-joined: `sw_power_cap`, `hw_slowdown`, `sw_thermal`,
    /// `hw_thermal`, `hw_power_brake` (NVML's reasons) and `sm_clock_drop` (the busy SM clock fell
    /// more than 10 % below its maximum). Empty: none seen. A non-empty value flags the row.
    #[serde(default)]
    pub throttle: String,
    /// What was read: `nvml`, `rapl` or `unavailable`; empty when nothing was sampled (failed rows,
    /// simulated rows, external workers).
    #[serde(default)]
    pub power_source: String,
    // ---- issue 26 ----
    /// Whether TF32 was allowed for fp32 work (cuBLAS matmuls, cuDNN) while the case ran, read back
    /// from libtorch after attnbench set it (`sys::precision`); empty on the CPU, where it does not
    /// apply. An fp32 row with `true` has its MFU against the TF32 tensor-core peak.
    #[serde(default)]
    pub tf32: Option<bool>,
    // Issue 26: the untimed seconds of a kernel case, host wall clock (`Instant`), so the harness's own
    // cost is visible next to the kernels'. Empty for rows that did not get that far (and for CP and
    // simulated rows).
    /// Seconds before the gate: mask, inputs (drawn, or shared with the previous case of the same
    /// shape), the backend's `prepare`.
    #[serde(default)]
    pub setup_s: Option<f64>,
    /// Seconds of the correctness gate (the backend's call plus the reference); empty when it was off.
    #[serde(default)]
    pub gate_s: Option<f64>,
    /// Seconds of the measurement: the peak-memory call, warmup and repeats with their L2 flushes and
    /// clock reads — the wall time the timed calls cost, of which `ms_median × repeats` is kernel time.
    #[serde(default)]
    pub measure_s: Option<f64>,
    // ---- issue 29 ----
    /// CP strategy options, `key=value` joined by `;` in key order (`inner_ring=2;ulysses_degree=4`):
    /// the degrees the strategy ran with (its defaults filled in once the case was set up; the
    /// options as given on a row that failed before) and `sharding` when it was overridden. Empty for
    /// kernel cases and strategies without options. Labels, tables, plots and `compare` tell cases
    /// apart by it.
    #[serde(default)]
    pub strategy_params: String,
}

impl Row {
    /// A row for `case` with identity columns filled and everything measured empty.
    pub fn for_case(run_id: &str, case: &Case, device: &str) -> Row {
        Row {
            run_id: run_id.to_string(),
            case_id: case.case_id(),
            kind: case.kind,
            backend: case.backend.clone(),
            strategy: case.strategy.clone(),
            mask: case.pattern.clone(),
            mask_params: case.params.to_string(),
            seqlen: case.seqlen,
            batch: case.batch,
            heads_q: case.heads.q,
            heads_kv: case.heads.kv,
            head_dim: case.head_dim,
            dtype: case.dtype.to_string(),
            pass: case.pass.to_string(),
            device: device.to_string(),
            world_size: case.world_size,
            status: Status::Error,
            error: String::new(),
            mask_area: 0.0,
            density: 0.0,
            flops: 0.0,
            ms_median: None,
            ms_p20: None,
            ms_p80: None,
            cv: None,
            tflops: None,
            tflops_per_gpu: None,
            mfu: None,
            peak_mem_bytes: None,
            max_abs_err: None,
            timing_mode: String::new(),
            repeats: None,
            imbalance: None,
            bytes_sent: None,
            bandwidth_gbps: None,
            scaling_eff: None,
            note: String::new(),
            mem_source: String::new(),
            measure_id: String::new(),
            segment: 0,
            avg_power_w: None,
            energy_j: None,
            tflops_per_watt: None,
            sm_clock_mhz: None,
            throttle: String::new(),
            power_source: String::new(),
            tf32: None,
            setup_s: None,
            gate_s: None,
            measure_s: None,
            strategy_params: case.cp.to_params().to_string(),
        }
    }

    /// The strategy with its options, `usp[ulysses_degree=4]` (`ring-p2p` when it has none); empty
    /// for kernel rows.
    pub fn strategy_label(&self) -> String {
        crate::case::strategy_label(&self.strategy, &self.strategy_params)
    }

    /// Fills the timing columns of an `ok` row from a measurement: the statistics are the one
    /// [`crate::measure::Summary`] every row kind uses, TFLOPS = `flops` / median, per GPU divided by
    /// the world size, MFU against the device's dense peak (`flops::mfu`; for fp32 with `tf32` set
    /// before this call, the TF32 peak).
    pub fn set_timing(&mut self, t: &crate::measure::Timing, dtype: &str) {
        let s = t.summary;
        self.status = Status::Ok;
        self.ms_median = Some(s.median);
        self.ms_p20 = Some(s.p20);
        self.ms_p80 = Some(s.p80);
        self.cv = Some(s.cv);
        let tf = crate::flops::tflops(self.flops, s.median);
        let per_gpu = tf / self.world_size.max(1) as f64;
        self.tflops = Some(tf);
        self.tflops_per_gpu = Some(per_gpu);
        self.mfu = crate::flops::mfu(per_gpu, &self.device, crate::flops::peak_dtype(dtype, self.tf32 == Some(true)));
        self.repeats = Some(t.times_ms.len());
        self.timing_mode = t.mode.clone();
    }

    /// Records a peak-memory figure and where it came from.
    pub fn set_memory(&mut self, bytes: u64, source: crate::measure::MemSource) {
        self.peak_mem_bytes = Some(bytes);
        self.mem_source = source.name().to_string();
    }

    /// Records the power figures of the timed repeats (after [`Row::set_timing`]: the energy per call
    /// is the average power over the median call time). Where the source read no energy, the power
    /// columns stay empty and the note says why.
    pub fn set_power(&mut self, p: &crate::measure::PowerReading) {
        self.power_source = p.source.to_string();
        self.avg_power_w = p.avg_power_w;
        self.energy_j = p.avg_power_w.zip(self.ms_median).map(|(w, ms)| w * ms / 1e3);
        self.tflops_per_watt = p.avg_power_w.zip(self.tflops).filter(|(w, _)| *w > 0.0).map(|(w, tf)| tf / w);
        self.sm_clock_mhz = p.sm_clock_mhz;
        self.throttle = p.throttle_text();
        // A machine without any source is the normal case on CPUs and needs no note; anything else
        // that left the columns empty (too short, a CP rank without a figure) is said.
        if p.avg_power_w.is_none() && !p.why_empty.is_empty() && !p.why_empty.starts_with("no power source") {
            self.note.push_str(&format!("; no energy figure: {}", p.why_empty));
        }
    }

    /// Whether the clocks were limited (power/thermal) or dropped while this row was timed.
    pub fn throttled(&self) -> bool {
        !self.throttle.is_empty()
    }

    /// Marks the row failed with `status` and clears every timing-derived column (the invariant).
    pub fn fail(&mut self, status: Status, error: impl Into<String>) {
        self.status = status;
        self.error = crate::error::one_line(&error.into());
        self.ms_median = None;
        self.ms_p20 = None;
        self.ms_p80 = None;
        self.cv = None;
        self.tflops = None;
        self.tflops_per_gpu = None;
        self.mfu = None;
        self.peak_mem_bytes = None;
        self.mem_source.clear();
        self.repeats = None;
        self.bandwidth_gbps = None;
        self.scaling_eff = None;
        self.avg_power_w = None;
        self.energy_j = None;
        self.tflops_per_watt = None;
        self.sm_clock_mhz = None;
        self.throttle.clear();
        self.power_source.clear();
    }

    /// Column names in CSV order.
    pub fn header() -> Vec<String> {
        let mut w = csv::Writer::from_writer(vec![]);
        w.serialize(Row::for_case(
            "",
            &crate::case::Case::kernel(
                "",
                "",
                Default::default(),
                1,
                crate::case::HeadLayout { q: 1, kv: 1 },
                1,
                crate::case::DType::Fp32,
                crate::flops::Pass::Fwd,
                crate::case::DeviceKind::Cpu,
            ),
            "",
        ))
        .unwrap();
        let bytes = w.into_inner().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        text.lines().next().unwrap().split(',').map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::power::{testing::at, PowerReading};

    fn ok_row() -> Row {
        let c = crate::case::Case::kernel(
            "sdpa",
            "causal",
            Default::default(),
            1024,
            crate::case::HeadLayout { q: 8, kv: 8 },
            64,
            crate::case::DType::Bf16,
            crate::flops::Pass::Fwd,
            crate::case::DeviceKind::Cuda,
        );
        let mut r = Row::for_case("r", &c, "NVIDIA H200");
        r.status = Status::Ok;
        r.ms_median = Some(2.0);
        r.tflops = Some(400.0);
        r
    }

    /// Issue 33: energy per call = average power × median time, TFLOPS/W = TFLOPS / W, and a failed
    /// row keeps none of it.
    #[test]
    fn power_columns_follow_the_reading_and_clear_on_failure() {
        let mut r = ok_row();
        let mut s = vec![at(0.0, 500.0, 1980.0), at(100.0, 500.0, 1700.0)];
        s[1].throttle = 0x4;
        r.set_power(&PowerReading::of("nvml", &s));
        assert_eq!(r.avg_power_w, Some(500.0));
        assert_eq!(r.energy_j, Some(1.0), "500 W × 2 ms");
        assert_eq!(r.tflops_per_watt, Some(0.8));
        assert_eq!(r.sm_clock_mhz, Some(1840.0));
        assert_eq!((r.throttle.as_str(), r.power_source.as_str()), ("sw_power_cap+sm_clock_drop", "nvml"));
        assert!(r.throttled());
        r.fail(Status::Error, "boom");
        assert_eq!((r.avg_power_w, r.energy_j, r.tflops_per_watt, r.sm_clock_mhz), (None, None, None, None));
        assert_eq!((r.throttle.as_str(), r.power_source.as_str()), ("", ""));
        // Unavailable: the source is named, nothing else is filled, nothing is guessed.
        let mut r = ok_row();
        r.set_power(&PowerReading::of("unavailable", &[]));
        assert_eq!((r.power_source.as_str(), r.avg_power_w, r.energy_j, r.tflops_per_watt), ("unavailable", None, None, None));
        assert!(!r.throttled());
        // Too short to measure: columns empty, the note says why.
        let mut r = ok_row();
        r.set_power(&PowerReading::of("nvml", &[at(0.0, 500.0, 1980.0), at(5.0, 500.0, 1980.0)]));
        assert_eq!(r.energy_j, None);
        assert!(r.note.contains("too short"), "{}", r.note);
    }

    #[test]
    fn power_columns_are_in_the_csv_in_order() {
        let h = Row::header();
        let at = h.iter().position(|c| c == "avg_power_w").expect("avg_power_w column");
        assert_eq!(h[at..at + 6], ["avg_power_w", "energy_j", "tflops_per_watt", "sm_clock_mhz", "throttle", "power_source"]);
    }
}
