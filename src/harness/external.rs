//! Executes one kernel case of an `ext:NAME` backend: the same row set-up, correctness gate and repeat
//! policy as a built-in kernel ([`super::kernel`]), with the kernel run and timed by its worker process
//! (`backend::external`: the protocol, the process, the tensor files). The worker answers a `check`
//! with its outputs, judged by the one gate against the f64 reference, and a `time` request with raw
//! per-repeat times; how many repeats it is asked for is decided by `measure::repeats`, the policy
//! every timing loop uses. Never panics, never fails the sweep: a worker that crashes, hangs, prints
//! garbage or computes the wrong thing gives an `error`/`timeout`/`wrong` row.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::attn::KernelError;
use crate::backend::external::process::{self, Failure, WorkerProcess};
use crate::backend::external::protocol::{self, InputsMode, Reply};
use crate::backend::external::{config, files, new_id, worker_env, ExternalConfig};
use crate::backend::Inputs;
use crate::case::{Case, DeviceKind};
use crate::harness::gate::{check_rows, gate, Against};
use crate::mask::HeadMasks;
use crate::measure::{repeats, MeasureError, MeasureSettings, MemSource, Repeater};
use crate::results::{Row, Status};

/// Runs one kernel case of an `ext:` backend and returns its row; never panics, never fails the sweep.
pub fn execute(case: &Case, settings: &MeasureSettings, run_id: &str, cfg: &ExternalConfig) -> Row {
    let deadline = Instant::now() + Duration::from_secs_f64(settings.timeout_s);
    let (mut row, masks) = match super::row::kernel_row(case, run_id) {
        Ok(v) => v,
        Err(e) => {
            let mut row = Row::for_case(run_id, case, &super::row::device_name(case.device));
            row.fail(Status::Error, e.to_string());
            return row;
        }
    };
    if super::row::no_cuda(case, &mut row) {
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

/// Why the worker's repeats stopped short of a timing: the worker failed (it is killed), or it answered
/// something other than times (`unsupported`, `error`: the row says so).
enum Stop {
    Failure(Failure),
    Answer(Reply),
}

impl From<MeasureError> for Stop {
    fn from(e: MeasureError) -> Self {
        Stop::Failure(Failure::Garbage(e.to_string()))
    }
}

/// The worker as the repeat policy's [`Repeater`]: warm-up and repeats are counted, and run and timed
/// by the worker when their times are taken (one `time` request for the repeats since the last one,
/// the warm-up with the first).
struct WorkerRepeats<'a> {
    w: &'a mut WorkerProcess,
    base: &'a Value,
    settings: &'a MeasureSettings,
    deadline: Instant,
    warmup: usize,
    pending: usize,
    first: bool,
    /// From the first answer: the worker's clock, its peak memory and what measured it, its note.
    clock: String,
    peak: Option<u64>,
    memory: String,
    note: String,
}

impl Repeater<Stop> for WorkerRepeats<'_> {
    fn warmup(&mut self, n: usize) -> Result<(), Stop> {
        self.warmup = n;
        Ok(())
    }
    fn repeat(&mut self) -> Result<(), Stop> {
        self.pending += 1;
        Ok(())
    }
    fn take_times(&mut self) -> Result<Vec<f64>, Stop> {
        let n = std::mem::take(&mut self.pending);
        if n == 0 {
            return Ok(Vec::new());
        }
        let first = std::mem::replace(&mut self.first, false);
        let req = merge(
            self.base,
            json!({"type": "time", "warmup": if first { self.warmup } else { 0 }, "repeats": n,
                   "timing_mode": self.settings.timing_mode.name(), "measure_memory": first}),
        );
        match self.w.request(&req, self.deadline).map_err(Stop::Failure)? {
            Reply::Times { times_ms, clock, peak_mem_bytes, memory, note, .. } => {
                protocol::check_times(&times_ms, n, self.settings.timeout_s * 1e3).map_err(|m| Stop::Failure(Failure::Garbage(m)))?;
                if first {
                    (self.clock, self.peak, self.memory, self.note) = (clock, peak_mem_bytes, memory, note);
                }
                Ok(times_ms)
            }
            other => Err(Stop::Answer(other)),
        }
    }
    fn agree(&mut self, stop: bool) -> Result<bool, Stop> {
        Ok(stop)
    }
    fn mode(&self) -> String {
        self.clock.clone()
    }
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
                Some(l) => Some(files::check_lse(x, rows.as_deref(), l, Against::Float64.tolerance(case.dtype).out)?),
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

    // Timing: the worker measures each repeat; the one repeat policy (`measure::repeats`) decides how
    // many (asking for more, one at a time, in adaptive mode) and computes the statistics.
    let mut worker = WorkerRepeats {
        w,
        base: &base,
        settings,
        deadline,
        warmup: 0,
        pending: 0,
        first: true,
        clock: String::new(),
        peak: None,
        memory: String::new(),
        note: String::new(),
    };
    let timing = match repeats(&mut worker, settings, None) {
        Ok((t, _)) => t,
        Err(Stop::Failure(f)) => return Err(f),
        Err(Stop::Answer(reply)) => return answer_fails_row(row, reply, "times"),
    };
    let (peak, memory) = (worker.peak, worker.memory.clone());
    if !worker.note.is_empty() && !settings.check {
        note.push_str(&format!("; {}", worker.note));
    }
    row.set_timing(&timing, case.dtype.name());
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
