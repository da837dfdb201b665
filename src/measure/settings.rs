//! How a case is measured. Suites set these per run (`[measure]` table); the CLI's `kernel` and `cp`
//! take the same knobs as flags.

use serde::{Deserialize, Serialize};

/// How a GPU repeat is timed. Part of every row (`timing_mode`), because the two differ by up to ≈14 %
/// for the same cuDNN call on an H200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimingMode {
    /// Default: zero a 256 MiB buffer before each repeat (outside the timed region) and time each repeat
    /// with its own pair of CUDA events — cold-L2 numbers, as a training step sees them.
    #[default]
    L2flush,
    /// Repeats run back to back with no flush; per-repeat events. Warm caches: the optimistic number
    /// most kernel benchmarks report.
    Back2back,
}

impl TimingMode {
    pub fn name(self) -> &'static str {
        match self {
            TimingMode::L2flush => "l2flush",
            TimingMode::Back2back => "back2back",
        }
    }
}

impl std::str::FromStr for TimingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "l2flush" => Ok(TimingMode::L2flush),
            "back2back" => Ok(TimingMode::Back2back),
            _ => Err(format!("unknown timing mode `{s}` (expected l2flush or back2back)")),
        }
    }
}

/// Repeat policy and checks for one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasureSettings {
    /// Untimed calls before timing (JIT, allocator and autotuning warm-up).
    pub warmup: usize,
    /// Timed repeats (fixed mode), or the minimum number of repeats (adaptive mode).
    pub repeats: usize,
    /// Adaptive mode: keep repeating until (p80 − p20) / median ≤ `target_spread` (a fraction, e.g.
    /// 0.01 = 1 %) or `max_repeats` or the time budget is reached. `None` = fixed `repeats`.
    pub target_spread: Option<f64>,
    /// Upper bound on repeats in adaptive mode.
    pub max_repeats: usize,
    /// Seconds one case may spend measuring (adaptive mode stops there; the runner also uses
    /// `timeout_s` to kill a case that hangs).
    pub budget_s: f64,
    /// Hard per-case limit in seconds, enforced by the runner (the case becomes `timeout`).
    pub timeout_s: f64,
    /// Run the correctness gate before timing.
    pub check: bool,
    pub timing_mode: TimingMode,
    /// Seed for inputs (same seed ⇒ same Q, K, V on the same device).
    pub seed: u64,
    /// Allow TF32 for fp32 work on CUDA (cuBLAS matmuls and cuDNN; `sys::precision`). Off by default:
    /// fp32 rows are IEEE fp32 and held against the fp32 peak; on, they are held against the TF32
    /// tensor-core peak. Set explicitly for every case and recorded in each row (`tf32`). Left out of
    /// the serialised settings while off, so `measure_id`s of runs made before this field stay valid.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tf32: bool,
}

/// The most repeats, warm-up calls or `max_repeats` a case may ask for. Each timed repeat keeps its
/// time and makes at least one kernel call: past a million the CLI allocated gigabytes of timing slots
/// and aborted, and a sweep would not end in a lifetime (issue 30).
pub const MAX_REPEATS: usize = 1_000_000;

impl MeasureSettings {
    /// The first count beyond [`MAX_REPEATS`], as `(key, message)`: the suite names
    /// `measure.<key>`, the command line `--<key>`.
    pub fn bounds_error(&self) -> Option<(&'static str, String)> {
        [("repeats", self.repeats), ("warmup", self.warmup), ("max_repeats", self.max_repeats)]
            .into_iter()
            .find(|&(_, v)| v > MAX_REPEATS)
            .map(|(k, v)| (k, format!("must be at most {MAX_REPEATS}, got {v}")))
    }
}

impl Default for MeasureSettings {
    fn default() -> Self {
        MeasureSettings {
            warmup: 2,
            repeats: 10,
            target_spread: None,
            max_repeats: 100,
            budget_s: 10.0,
            timeout_s: 300.0,
            check: true,
            timing_mode: TimingMode::L2flush,
            seed: 42,
            tf32: false,
        }
    }
}
