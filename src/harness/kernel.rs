//! Executes one kernel case end to end: mask → `supports` → inputs → correctness gate → timing →
//! a fully filled [`Row`]. Never panics out: a panic inside the case becomes an `error` row, an
//! allocator failure an `oom` row. Only bad input (unknown pattern, bad mask parameters, unknown
//! backend) is an `Err`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crate::attn::KernelError;
use crate::backend::{find_backend, Backend, Fwd, Inputs, Kernel};
use crate::case::{Case, DeviceKind};
use crate::flops::Pass;
use crate::harness::gate::gate;
use crate::mask::MaskError;
use crate::measure::memory::{measure_prepare, peak_above_baseline};
use crate::measure::{run_repeats_powered, CpuTimeline, CudaEventClock, HostClock, MeasureSettings, Timeline};
use crate::results::{Row, Status};

/// Bad input for a case (reported as exit code 2 by the CLI, never as a row).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Mask(#[from] MaskError),
    #[error("{0}")]
    UnknownBackend(String),
}

pub use super::row::device_name;

/// Runs `case` with the backend named in `case.backend`.
pub fn execute_kernel_case(case: &Case, settings: &MeasureSettings, run_id: &str) -> Result<Row, ExecError> {
    let backend = find_backend(&case.backend).map_err(ExecError::UnknownBackend)?;
    execute_kernel_case_with(backend, case, settings, run_id)
}

/// Runs `case` with an explicit backend (tests inject deliberately wrong ones).
pub fn execute_kernel_case_with(backend: &dyn Backend, case: &Case, settings: &MeasureSettings, run_id: &str) -> Result<Row, ExecError> {
    execute_timed(backend, case, settings, run_id, &CpuTimeline::default())
}

/// [`execute_kernel_case_with`] timing CPU cases on `timeline` (tests pass scripted ones).
pub(crate) fn execute_timed(backend: &dyn Backend, case: &Case, settings: &MeasureSettings, run_id: &str, timeline: &dyn Timeline) -> Result<Row, ExecError> {
    let started = Instant::now();
    let (mut row, masks) = super::row::kernel_row(case, run_id)?;
    if super::row::no_cuda(case, &mut row) {
        return Ok(row);
    }
    if let Err(why) = backend.supports(case, &masks) {
        row.fail(Status::Unsupported, why);
        return Ok(row);
    }
    // TF32 set explicitly for every case (sys::precision), recorded on CUDA where it applies.
    match crate::sys::precision::apply_tf32(settings.tf32) {
        Ok(t) => row.tf32 = (case.device == DeviceKind::Cuda).then_some(t.any()),
        Err(e) => {
            row.fail(Status::Error, format!("setting TF32: {e}"));
            return Ok(row);
        }
    }
    let result = catch_unwind(AssertUnwindSafe(|| measure(backend, case, settings, masks, &mut row, timeline, started)));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            if matches!(e, KernelError::Oom(_)) {
                crate::backend::drop_shared_inputs();
            }
            let (status, msg) = classify(&e);
            row.fail(status, msg);
        }
        Err(panic) => {
            let msg = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "panic".into());
            let e = KernelError::from_message(msg);
            let (status, msg) = classify(&e);
            row.fail(status, format!("panic: {msg}"));
        }
    }
    Ok(row)
}

/// Row status of a backend error: OOM → `oom`; a kernel that refuses the case at run time (SDPA's
/// "No available kernel", explicit unsupported) → `unsupported`; anything else → `error`.
fn classify(e: &KernelError) -> (Status, String) {
    match e {
        KernelError::Oom(m) => (Status::Oom, m.clone()),
        KernelError::Unsupported(m) => (Status::Unsupported, m.clone()),
        KernelError::Torch(m) if m.contains("No available kernel") => (Status::Unsupported, m.clone()),
        other => (Status::Error, other.to_string()),
    }
}

fn measure(
    backend: &dyn Backend,
    case: &Case,
    settings: &MeasureSettings,
    masks: crate::mask::HeadMasks,
    row: &mut Row,
    timeline: &dyn Timeline,
    started: Instant,
) -> Result<(), KernelError> {
    let x = Inputs::new(case, masks, settings.seed, backend.autograd() && case.pass.includes_backward())?;
    // Memory rule (measure::memory): inputs excluded, what prepare keeps and the call allocates included.
    let (mut kernel, prepared) = measure_prepare(case.device.tch(), || backend.prepare(case, &x))?;
    let mut note = kernel.note();
    sync(case.device)?;
    row.setup_s = Some(started.elapsed().as_secs_f64());
    if settings.check {
        let gate_start = Instant::now();
        let c = gate(kernel.as_mut(), &x, case.pass, case.dtype).and_then(|c| sync(case.device).map(|()| c));
        row.gate_s = Some(gate_start.elapsed().as_secs_f64());
        let c = c?;
        row.max_abs_err = Some(c.max_abs_err);
        note.push_str(&format!("; {}", c.detail));
        if !c.passed {
            row.note = note;
            row.fail(Status::Wrong, format!("output differs from the f64 reference: {}", c.detail));
            return Ok(());
        }
    } else {
        note.push_str("; correctness check off");
    }
    // `bwd`: one forward outside the timed region; autograd backends retain its graph and repeat only
    // the backward on it, explicit-backward backends reuse its out / LSE.
    let measure_start = Instant::now();
    let fwd_for_bwd: Option<Fwd> = if case.pass == Pass::Bwd { Some(kernel.forward(&x)?) } else { None };
    let mut call = || -> Result<(), KernelError> { super::pass::one_pass(&mut Calls { kernel: kernel.as_mut(), x: &x }, case.pass, fwd_for_bwd.as_ref()) };
    let device = case.device.tch();
    let (peak, source) = peak_above_baseline(device, &mut call)?;
    // Power, energy and clocks are read around the timed repeats (issue 33).
    let power = crate::measure::power::source_for(device);
    let (timing, power) = match device {
        tch::Device::Cuda(i) => run_repeats_powered(&mut CudaEventClock::new(i, settings.timing_mode)?, settings, power, &mut call)?,
        _ => run_repeats_powered(&mut HostClock::new(timeline), settings, power, &mut call)?,
    };
    row.set_timing(&timing, case.dtype.name());
    row.set_memory(prepared.with_call(peak), source);
    row.measure_s = Some(measure_start.elapsed().as_secs_f64());
    row.note = note;
    row.set_power(&power);
    Ok(())
}

/// A prepared kernel on its inputs, as the one pass dispatch ([`super::one_pass`]) runs it.
struct Calls<'a> {
    kernel: &'a mut dyn Kernel,
    x: &'a Inputs,
}

impl super::pass::Directions for Calls<'_> {
    type Fwd = Fwd;
    type Error = KernelError;
    fn forward(&mut self) -> Result<Fwd, KernelError> {
        self.kernel.forward(self.x)
    }
    fn backward(&mut self, fwd: &Fwd) -> Result<(), KernelError> {
        self.kernel.backward(self.x, fwd).map(|_| ())
    }
}

/// Waits for the device's queued work, so the untimed seconds around it are the work's, not a launch's
/// (the shim's `device_synchronize`, as the clocks and the memory rule use: a failure is a value).
fn sync(device: DeviceKind) -> Result<(), KernelError> {
    match device.tch() {
        tch::Device::Cuda(i) => Ok(crate::sys::cuda::device_synchronize(i)?),
        _ => Ok(()),
    }
}
