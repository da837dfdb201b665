//! The messages of the kernel-worker protocol (docs/EXTERNAL-KERNELS.md is the specification; this file
//! and `python/attnbench_worker/helper.py` implement it). One JSON object per line: requests on the
//! worker's stdin, answers on its stdout prefixed with [`PREFIX`] (other stdout lines are ignored).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::case::Case;
use crate::mask::HeadMasks;

/// Version of the protocol; the handshake fails on any other.
pub const PROTOCOL: u32 = 1;

/// Prefix of every answer line.
pub const PREFIX: &str = "@@attnbench-ext ";

/// The `memory` of a `times` answer whose peak is the worker's CUDA caching-allocator peak (what
/// attnbench's own `cuda-allocator` figure is); other names are reported in the row's note only.
pub const CUDA_ALLOCATOR: &str = "cuda-allocator";

/// The `memory` of a `times` answer whose peak is PaddlePaddle's CUDA allocator peak (ext:flashmask).
pub const PADDLE_ALLOCATOR: &str = "paddle-allocator";

/// How a worker gets its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputsMode {
    /// It draws q, k, v, dout from the seed exactly as attnbench does (the seed contract).
    Seed,
    /// It reads them from the tensor file attnbench writes (`inputs_path`).
    File,
}

impl InputsMode {
    pub fn name(self) -> &'static str {
        match self {
            InputsMode::Seed => "seed",
            InputsMode::File => "file",
        }
    }
}

/// An answer from the worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply {
    Hello {
        protocol: u32,
        #[serde(default)]
        name: String,
        #[serde(default)]
        version: String,
        inputs: InputsMode,
        #[serde(default = "yes")]
        available: bool,
        #[serde(default)]
        reason: String,
    },
    /// An `inputs` or `check` request is done: the tensor file is written.
    Done {
        id: Option<String>,
        #[serde(default)]
        note: String,
    },
    Times {
        id: Option<String>,
        times_ms: Vec<f64>,
        /// How the times were taken (`cuda-event-l2flush`, `cpu-perf-counter`, …): the row's `timing_mode`.
        clock: String,
        /// Peak bytes of one call above the bytes allocated before it, when measured.
        peak_mem_bytes: Option<u64>,
        /// How the peak was measured (`torch.cuda.max_memory_allocated`, `tracemalloc`).
        #[serde(default)]
        memory: String,
        #[serde(default)]
        note: String,
    },
    Unsupported {
        id: Option<String>,
        reason: String,
    },
    Error {
        id: Option<String>,
        message: String,
        #[serde(default)]
        oom: bool,
    },
}

fn yes() -> bool {
    true
}

impl Reply {
    /// The request id the answer belongs to (`None` for hello).
    pub fn id(&self) -> Option<&str> {
        match self {
            Reply::Hello { .. } => None,
            Reply::Done { id, .. } | Reply::Times { id, .. } | Reply::Unsupported { id, .. } | Reply::Error { id, .. } => id.as_deref(),
        }
    }
}

pub fn hello() -> Value {
    json!({"type": "hello", "protocol": PROTOCOL, "attnbench": env!("CARGO_PKG_VERSION")})
}

/// The case as the worker sees it: shapes, dtype, pass, device, softmax scale and the mask as slices
/// per head group (query head h uses group h / (heads_q / groups)).
pub fn case_spec(case: &Case, masks: &HeadMasks) -> Value {
    let groups: Vec<Value> = masks
        .groups
        .iter()
        .map(|m| {
            let s = m.slices();
            json!({
                "q_ranges": s.iter().map(|s| [s.q.start, s.q.end]).collect::<Vec<_>>(),
                "k_ranges": s.iter().map(|s| [s.k.start, s.k.end]).collect::<Vec<_>>(),
                "kinds": s.iter().map(|s| s.kind.name()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "case_id": case.case_id(),
        "pattern": case.pattern,
        "batch": case.batch,
        "heads_q": case.heads.q,
        "heads_kv": case.heads.kv,
        "seqlen": case.seqlen,
        "head_dim": case.head_dim,
        "dtype": case.dtype.name(),
        "pass": case.pass.name(),
        "device": case.device.name(),
        "scale": 1.0 / (case.head_dim as f64).sqrt(),
        "mask": {"seqlen_q": masks.groups[0].seqlen_q, "seqlen_k": masks.groups[0].seqlen_k, "groups": groups},
    })
}

/// Checks a `times` answer (issue 30): `n` repeat times, each finite and > 0 ms (a call takes time;
/// 0 or less is a broken clock), and together within `limit_ms`, the case's deadline (the repeats ran
/// one after another before the answer came, so more is impossible). A violation is a protocol error.
pub fn check_times(times_ms: &[f64], n: usize, limit_ms: f64) -> Result<(), String> {
    if times_ms.len() != n {
        return Err(format!("asked for {n} repeat times, got {}", times_ms.len()));
    }
    if let Some(t) = times_ms.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
        return Err(format!("protocol violation: a repeat time of {t} ms (times must be finite and > 0)"));
    }
    let total: f64 = times_ms.iter().sum();
    if total > limit_ms {
        return Err(format!("protocol violation: repeat times adding up to {total:.0} ms, beyond the case's deadline of {limit_ms:.0} ms"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_must_be_positive_and_within_the_deadline() {
        assert!(check_times(&[1.0, 2.0], 2, 1000.0).is_ok());
        assert!(check_times(&[1.0], 2, 1000.0).unwrap_err().contains("asked for 2"));
        assert!(check_times(&[1.0, 0.0], 2, 1000.0).unwrap_err().contains("> 0"));
        assert!(check_times(&[-1.0, 1.0], 2, 1000.0).unwrap_err().contains("> 0"));
        assert!(check_times(&[f64::NAN, 1.0], 2, 1000.0).is_err());
        assert!(check_times(&[600.0, 600.0], 2, 1000.0).unwrap_err().contains("deadline"));
    }

    #[test]
    fn replies_parse_and_unknown_fields_are_ignored() {
        let r: Reply = serde_json::from_str(r#"{"type":"hello","protocol":1,"name":"x","inputs":"seed","extra":3}"#).unwrap();
        assert!(matches!(r, Reply::Hello { protocol: 1, available: true, inputs: InputsMode::Seed, .. }));
        let r: Reply = serde_json::from_str(r#"{"type":"times","id":"a","times_ms":[1.5,2.0],"clock":"cpu-perf-counter","peak_mem_bytes":null}"#).unwrap();
        assert_eq!(r.id(), Some("a"));
        assert!(serde_json::from_str::<Reply>(r#"{"type":"times","id":"a"}"#).is_err());
        assert!(serde_json::from_str::<Reply>(r#"{"type":"bogus"}"#).is_err());
    }

    #[test]
    fn case_spec_carries_the_slices() {
        use crate::case::{DType, DeviceKind, HeadLayout};
        use crate::flops::Pass;
        use crate::mask::{build_pattern, Params};
        let case = Case::kernel("ext:x", "causal", Params::new(), 64, HeadLayout { q: 4, kv: 2 }, 16, DType::Bf16, Pass::Fwd, DeviceKind::Cpu);
        let m = build_pattern("causal", 64, &Params::new()).unwrap();
        let v = case_spec(&case, &m);
        assert_eq!(v["mask"]["groups"][0]["kinds"][0], "causal");
        assert_eq!(v["mask"]["groups"][0]["q_ranges"][0], json!([0, 64]));
        assert_eq!(v["scale"], 0.25);
    }
}
