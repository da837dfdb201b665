//! External kernels (`ext:NAME`): kernels attnbench cannot call through libtorch — FlexAttention,
//! FlashAttention 2/3 varlen, MagiAttention's FFA, FlashMask, a user's own — run in a worker process
//! that speaks the kernel-worker protocol (docs/EXTERNAL-KERNELS.md) over JSON lines.
//!
//! The split of work is what makes an external row comparable with a built-in one: the worker builds
//! the inputs (from the seed, bitwise as attnbench does, or from attnbench's tensor file), runs its
//! kernel, writes its outputs to a tensor file and measures raw per-repeat times by the protocol's
//! rules. attnbench owns everything else: FLOPs (from the mask, as for every backend), the correctness
//! gate (the same [`gate`] against the same f64 reference), the repeat policy (adaptive mode asks for
//! more repeats), the statistics and the row. A worker that crashes, hangs, prints garbage or computes
//! the wrong thing gives an `error`/`timeout`/`wrong` row and the sweep goes on.

pub mod adapters;
pub mod config;
pub mod files;
pub mod process;
pub mod protocol;
pub mod seed;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use config::ExternalConfig;
use process::{Failure, WorkerProcess};
use protocol::{InputsMode, Reply};

use super::{Backend, Inputs, Kernel};
use crate::attn::KernelError;
use crate::case::{Case, DeviceKind};
use crate::flops::pass_flops;
use crate::harness::gate::{check_rows, gate, tolerance};
use crate::mask::{build_pattern, HeadMasks};
use crate::measure::{MeasureSettings, MemSource, Summary, Timing};
use crate::results::{Row, Status};

/// Backend names of external kernels start with this.
pub const PREFIX: &str = "ext:";

/// Seconds the suite runner waits beyond `measure.timeout_s` for an external case: the worker's own
/// deadline is `timeout_s`, and when it fires only the external worker is killed and restarted (its
/// `attnbench worker` parent, with the other workers it keeps warm, stays), so the runner's hard limit
/// comes a little later.
pub const RUNNER_GRACE_S: f64 = 2.0;

/// An `ext:NAME` backend in the registry's terms. It only names the kernel: cases are executed by
/// [`execute`], which talks to the worker.
pub struct External {
    name: &'static str,
}

impl Backend for External {
    fn name(&self) -> &'static str {
        self.name
    }
    fn summary(&self) -> &'static str {
        "external kernel run by its worker process (docs/EXTERNAL-KERNELS.md)"
    }
    fn supports(&self, _case: &Case, _masks: &HeadMasks) -> Result<(), String> {
        // The worker answers `unsupported` itself, at run time: asking it here would start Python for
        // every planned case.
        Ok(())
    }
    fn autograd(&self) -> bool {
        false
    }
    fn prepare(&self, _case: &Case, _x: &Inputs) -> Result<Box<dyn Kernel>, KernelError> {
        Err(KernelError::Unsupported(format!("{} runs in its worker process (backend::external::execute), not in-process", self.name)))
    }
}

static KNOWN: Mutex<Vec<&'static External>> = Mutex::new(Vec::new());

/// The backend for `name` when it is an `ext:NAME` name (one instance per distinct name, kept for the
/// life of the process like the built-in statics).
pub fn find(name: &str) -> Option<&'static dyn Backend> {
    config::adapter_name(name)?;
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(b) = known.iter().find(|b| b.name == name) {
        return Some(*b);
    }
    let b: &'static External = Box::leak(Box::new(External { name: Box::leak(name.to_string().into_boxed_str()) }));
    known.push(b);
    Some(b)
}

pub fn is_external(backend: &str) -> bool {
    backend.starts_with(PREFIX)
}

/// Environment of every worker: the helper package on `PYTHONPATH`, unbuffered Python output.
pub fn worker_env() -> Result<Vec<(String, String)>, String> {
    Ok(vec![("PYTHONPATH".into(), adapters::pythonpath()?), ("PYTHONUNBUFFERED".into(), "1".into())])
}

static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// A request id unique within this process.
fn new_id(case: &Case) -> String {
    format!("{}-{}", case.case_id(), REQUESTS.fetch_add(1, Ordering::Relaxed))
}

/// Runs one kernel case of an `ext:` backend and returns its row; never panics, never fails the sweep.
pub fn execute(case: &Case, settings: &MeasureSettings, run_id: &str, cfg: &ExternalConfig) -> Row {
    let deadline = Instant::now() + Duration::from_secs_f64(settings.timeout_s);
    let mut row = Row::for_case(run_id, case, &crate::harness::kernel::device_name(case.device));
    let masks = match build_pattern(&case.pattern, case.seqlen, &case.params).and_then(|m| m.check_heads(case.heads.q).map(|_| m)) {
        Ok(m) => m,
        Err(e) => {
            row.fail(Status::Error, e.to_string());
            return row;
        }
    };
    row.mask_area = masks.mean_area();
    row.density = masks.density();
    row.flops = pass_flops(masks.area_over_heads(case.heads.q), case.head_dim, case.batch, case.pass);
    if case.device == DeviceKind::Cuda && !crate::sys::cuda_available() {
        row.fail(Status::Unsupported, "no CUDA device available on this machine");
        return row;
    }
    let argv = match config::adapter_name(&case.backend).ok_or_else(|| format!("`{}` is not an ext:NAME backend", case.backend)).and_then(|n| cfg.command(n)) {
        Ok(a) => a,
        Err(e) => {
            row.fail(Status::Error, e);
            return row;
        }
    };
    let env = match worker_env() {
        Ok(e) => e,
        Err(e) => {
            row.fail(Status::Error, e);
            return row;
        }
    };
    let timeout_s = settings.timeout_s;
    let result = process::with_worker(&argv, &env, deadline, |w| {
        let id = new_id(case);
        let keep = run_case(w, &id, case, settings, masks, &mut row, deadline)?;
        // The case is over: the worker frees its tensors and cached device memory now, not when the
        // next case arrives (the runner's memory guard measures free device memory before each case).
        // A worker that fails this keeps the row it earned, but is restarted.
        // (A worker without `release` may answer `unsupported`.)
        let released = keep && matches!(w.request(&json!({"type": "release", "id": id}), deadline), Ok(Reply::Done { .. } | Reply::Unsupported { .. }));
        Ok(((), released))
    });
    if let Err(f) = result {
        let (status, msg) = match f {
            Failure::Timeout => (Status::Timeout, format!("no answer from the worker within measure.timeout_s ({timeout_s} s); worker killed")),
            Failure::Died(m) => (Status::Error, m),
            Failure::Garbage(m) => (Status::Error, format!("protocol violation: {m}; worker killed")),
            Failure::Start(m) => (Status::Error, m),
        };
        row.fail(status, msg);
    }
    row
}

/// Fails the row for a worker's `unsupported`/`error` answer (or an unexpected one) and says whether the
/// worker may stay: after an error it is restarted, since a CUDA error can poison its context.
fn answer_fails_row(row: &mut Row, reply: Reply, wanted: &str) -> Result<bool, Failure> {
    match reply {
        Reply::Unsupported { reason, .. } => {
            row.fail(Status::Unsupported, reason);
            Ok(true)
        }
        Reply::Error { message, oom, .. } => {
            row.fail(if oom { Status::Oom } else { Status::Error }, message);
            Ok(false)
        }
        other => Err(Failure::Garbage(format!("expected a `{wanted}` answer, got {other:?}"))),
    }
}

fn merge(base: &Value, extra: Value) -> Value {
    let mut v = base.clone();
    if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    v
}

/// The protocol conversation of one case. `Ok(keep)` = the row is filled (whatever its status) and
/// whether the worker may serve the next case; `Err` = the worker failed (the caller kills it).
fn run_case(
    w: &mut WorkerProcess,
    id: &str,
    case: &Case,
    settings: &MeasureSettings,
    masks: HeadMasks,
    row: &mut Row,
    deadline: Instant,
) -> Result<bool, Failure> {
    let hello = w.hello.clone();
    if !hello.available {
        row.fail(Status::Unsupported, hello.reason);
        return Ok(true);
    }
    let mut note = format!(
        "external worker {}{}; inputs {}",
        if hello.name.is_empty() { &case.backend } else { &hello.name },
        if hello.version.is_empty() { String::new() } else { format!(" ({})", hello.version) },
        match hello.inputs {
            InputsMode::Seed => "drawn by the worker from the seed",
            InputsMode::File => "read from attnbench's tensor file",
        }
    );
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            row.fail(Status::Error, format!("temporary folder for the tensor files: {e}"));
            return Ok(true);
        }
    };
    let spec = protocol::case_spec(case, &masks);
    // attnbench's own inputs (drawn on the CPU, as always; a worker's CUDA tensors hold the same values):
    // the gate's reference, and the file a `file`-mode worker reads.
    let needs_inputs = settings.check || hello.inputs == InputsMode::File;
    let mut cpu_case = case.clone();
    cpu_case.device = DeviceKind::Cpu;
    let x = if needs_inputs {
        match Inputs::new(&cpu_case, masks, settings.seed, false) {
            Ok(x) => Some(x),
            Err(e) => {
                row.fail(if matches!(e, KernelError::Oom(_)) { Status::Oom } else { Status::Error }, format!("building the inputs: {e}"));
                return Ok(true);
            }
        }
    } else {
        None
    };
    let inputs_path = dir.path().join("inputs.safetensors");
    let inputs_arg = if hello.inputs == InputsMode::File {
        if let Err(e) = files::write_inputs(x.as_ref().unwrap(), &inputs_path) {
            row.fail(Status::Error, format!("writing the inputs file: {e}"));
            return Ok(true);
        }
        json!(inputs_path.display().to_string())
    } else {
        Value::Null
    };
    let base = json!({"id": id, "case": spec, "seed": settings.seed, "inputs_path": inputs_arg});

    if settings.check {
        let x = x.as_ref().unwrap();
        let rows = check_rows(case.batch, case.heads.q, case.seqlen);
        let out_path = dir.path().join("outputs.safetensors");
        let req = merge(&base, json!({"type": "check", "path": out_path.display().to_string(), "rows": rows}));
        match w.request(&req, deadline)? {
            Reply::Done { note: n, .. } => {
                if !n.is_empty() {
                    note.push_str(&format!("; {n}"));
                }
            }
            other => return answer_fails_row(row, other, "done"),
        }
        let outputs = match files::read_outputs(&out_path, x, case.pass, rows.as_deref()) {
            Ok(o) => o,
            Err(e) => {
                row.note = note;
                row.fail(Status::Error, format!("protocol violation: {e}"));
                return Ok(true);
            }
        };
        let lse = outputs.lse_rows.as_ref().map(|t| t.shallow_clone());
        let checked = gate(&mut files::Recorded(outputs), x, case.pass, case.dtype).and_then(|c| {
            let lse = match &lse {
                Some(l) => Some(files::check_lse(x, rows.as_deref(), l, tolerance(case.dtype).0)?),
                None => None,
            };
            Ok((c, lse))
        });
        let (c, lse) = match checked {
            Ok(v) => v,
            Err(e) => {
                row.fail(Status::Error, format!("checking the worker's outputs: {e}"));
                return Ok(true);
            }
        };
        row.max_abs_err = Some(c.max_abs_err);
        note.push_str(&format!("; {}", c.detail));
        match lse {
            Some((ok, err)) => note.push_str(&format!("; lse {} (max abs err {err:.2e})", if ok { "checked" } else { "WRONG" })),
            None => note.push_str("; lse not returned"),
        }
        let lse_ok = lse.is_none_or(|(ok, _)| ok);
        if !c.passed || !lse_ok {
            row.note = note;
            let what = if c.passed {
                "the worker's LSE differs from the f64 reference's".to_string()
            } else {
                format!("output differs from the f64 reference: {}", c.detail)
            };
            row.fail(Status::Wrong, what);
            return Ok(true);
        }
    } else {
        note.push_str("; correctness check off");
    }
    drop(x);

    // Timing: the worker measures each repeat; attnbench applies the repeat policy (asking for more
    // repeats in adaptive mode) and computes the statistics.
    let min = settings.repeats.max(1);
    let max = if settings.target_spread.is_some() { settings.max_repeats.max(min) } else { min };
    let started = Instant::now();
    let mut times: Vec<f64> = Vec::with_capacity(min);
    let (mut clock, mut peak, mut memory) = (String::new(), None, String::new());
    while times.len() < max {
        let first = times.is_empty();
        let n = if first { min } else { min.min(max - times.len()) };
        let req = merge(
            &base,
            json!({"type": "time", "warmup": if first { settings.warmup } else { 0 }, "repeats": n,
                   "timing_mode": settings.timing_mode.name(), "measure_memory": first}),
        );
        match w.request(&req, deadline)? {
            Reply::Times { times_ms, clock: c, peak_mem_bytes, memory: m, note: n2, .. } => {
                protocol::check_times(&times_ms, n, settings.timeout_s * 1e3).map_err(Failure::Garbage)?;
                if first {
                    (clock, peak, memory) = (c, peak_mem_bytes, m);
                    if !n2.is_empty() && !settings.check {
                        note.push_str(&format!("; {n2}"));
                    }
                }
                times.extend(times_ms);
            }
            other => return answer_fails_row(row, other, "times"),
        }
        let spread = Summary::of(&times).map_err(|e| Failure::Garbage(e.to_string()))?.spread();
        match settings.target_spread {
            Some(t) if spread > t && started.elapsed().as_secs_f64() < settings.budget_s => {}
            _ => break,
        }
    }
    let summary = Summary::of(&times).map_err(|e| Failure::Garbage(e.to_string()))?;
    row.set_timing(&Timing { times_ms: times, summary, mode: clock }, case.dtype.name());
    // The row's memory column holds allocator figures only: the worker's CUDA caching-allocator peak.
    // Anything else a worker measured (numpy-ref: tracemalloc) is reported in the note.
    let memory_note = match peak {
        Some(b) if memory == protocol::CUDA_ALLOCATOR => {
            row.set_memory(b, MemSource::CudaAllocator);
            "peak memory by the worker's CUDA caching allocator".to_string()
        }
        Some(b) if memory == protocol::PADDLE_ALLOCATOR => {
            row.set_memory(b, MemSource::PaddleAllocator);
            "peak memory by the worker's Paddle CUDA allocator (its kernel allocates through Paddle, not torch)".to_string()
        }
        Some(b) => format!("peak memory {b} bytes by the worker's {memory} (not an allocator figure, so not in peak_mem_bytes)"),
        None => format!("peak memory not measured ({memory})"),
    };
    note.push_str(&format!("; times measured by the worker ({}); {memory_note}", row.timing_mode));
    row.note = note;
    Ok(true)
}
