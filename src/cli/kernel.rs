//! `attnbench kernel`: check and time one attention case on one device; a table, or `--json` (one
//! object with every row column).

use std::process::ExitCode;

use anyhow::Context;

use super::args::{CaseArgs, MeasureArgs, LONGCA_SHAPE};
use crate::case::DeviceKind;
use crate::error::BadInput;
use crate::harness::kernel::{execute_kernel_case, ExecError};
use crate::measure::MeasureSettings;
use crate::results::Status;

#[derive(clap::Args, Debug)]
pub struct KernelArgs {
    #[command(flatten)]
    pub case: CaseArgs,
    #[command(flatten)]
    pub measure: MeasureArgs,
    /// Print one JSON object with every row column.
    #[arg(long)]
    pub json: bool,
    /// ext: backends: the Python interpreter for the built-in adapters (default $ATTNBENCH_PYTHON, then the CPU torch launch/setup installed, then python3).
    #[arg(long)]
    pub python: Option<String>,
    /// ext: backends: the command that serves this backend (split on whitespace), instead of a built-in
    /// adapter or $ATTNBENCH_WORKER_<NAME>.
    #[arg(long)]
    pub worker: Option<String>,
    /// ext: backends: seconds the worker may take for the case before it is killed (a `timeout`
    /// result; a suite's `measure.timeout_s`, default 300).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Memory the case may use (e.g. 8G; a suite run's `--mem-limit`). Default: available memory (the
    /// cgroup's limit when lower) minus a headroom. A case whose estimated peak exceeds it is an `oom`
    /// result before anything is allocated.
    #[arg(long, value_parser = crate::suite::memory::parse_bytes)]
    pub mem_limit: Option<u64>,
}

/// `run`'s memory guard for one case: an `oom` row when the estimated peak (a lower bound, see
/// `suite::memory`) exceeds what this process may use.
fn over_memory(case: &crate::case::Case, s: &MeasureSettings, run_id: &str, limit: Option<u64>) -> Option<crate::results::Row> {
    use crate::suite::memory;
    let est = memory::estimate(case, s, 1);
    let (allow, source) = memory::host_allowance(limit);
    let msg = match est.over_host(allow, &source, "this process") {
        Some(msg) => msg,
        None if est.device > 0 => {
            let free = crate::sys::cuda_available().then(|| memory::device_free_for(std::process::id())).flatten()?;
            est.over_device(free, "nvidia-smi")?
        }
        None => return None,
    };
    let mut row = crate::results::Row::for_case(run_id, case, case.device.name());
    row.fail(Status::Oom, msg);
    Some(row)
}

/// Caps this process's data segment at what it holds plus the allowance (as `run` caps its worker).
fn cap_self(limit: Option<u64>) {
    let (allow, _) = crate::suite::memory::host_allowance(limit);
    if let Err(e) = crate::suite::memory::cap_worker(std::process::id(), allow) {
        eprintln!("warning: could not cap this process's memory ({e})");
    }
}

/// Whether `prog` names an executable file: a path as given, else a file on `PATH`.
fn program_found(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &std::path::Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if prog.contains('/') {
        return exec(std::path::Path::new(prog));
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| exec(&d.join(prog))))
}

pub fn run(a: KernelArgs) -> anyhow::Result<ExitCode> {
    crate::sys::ensure_cuda_loaded();
    if a.case.mask.len() > 1 {
        return Err(BadInput::new("--mask: `kernel` runs one case; give one mask (a suite runs many)").into());
    }
    let case = a.case.cases(&LONGCA_SHAPE, a.case.total_seqlen(None, 1)?)?.remove(0);
    if case.device == DeviceKind::Cuda && !crate::sys::cuda_available() {
        return Err(BadInput::new("--device cuda: no CUDA device is available on this machine").into());
    }
    let mut s = a.measure.settings(MeasureSettings::default())?;
    if let Some(t) = a.timeout {
        if !(t > 0.0 && t <= 1e9) {
            return Err(BadInput::new(format!("--timeout: must be > 0 and at most 1e9 seconds, got {t}")).into());
        }
        s.timeout_s = t;
    }
    let run_id = format!("kernel-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let row = if let Some(name) = crate::backend::external::config::adapter_name(&case.backend) {
        use crate::backend::external::config::{ExternalConfig, WorkerCommand};
        let mut cfg = ExternalConfig { python: a.python.clone(), ..Default::default() };
        if let Some(w) = &a.worker {
            cfg.workers.insert(name.to_string(), WorkerCommand::Line(w.clone()));
        }
        crate::mask::build_pattern(&case.pattern, case.seqlen, &case.params).map_err(BadInput::from)?;
        let argv = cfg.command(name).map_err(|e| BadInput::new(format!("--backend: {e}")))?;
        // One case on the command line: a worker that cannot be started is the user's to fix, one
        // line and exit 2 (a suite run records it as an `error` row and goes on).
        if !program_found(&argv[0]) {
            let flag = if a.worker.is_some() { "--worker" } else { "--backend" };
            return Err(BadInput::new(format!("{flag}: cannot start `{}`: no such executable (not a file, or not on PATH)", argv[0])).into());
        }
        let mut row = crate::harness::external::execute(&case, &s, &run_id, &cfg);
        // The shared message names the suite key; this command's knob is the flag.
        row.error = row.error.replace("measure.timeout_s", "--timeout");
        row
    } else if a.python.is_some() || a.worker.is_some() || a.timeout.is_some() {
        return Err(BadInput::new("--python, --worker and --timeout apply to ext:NAME backends only (a built-in kernel runs in this process)").into());
    } else if let Some(row) = over_memory(&case, &s, &run_id, a.mem_limit) {
        row
    } else {
        // Past the allowance an allocation fails (libtorch: an `oom` row) instead of the system's
        // OOM killer ending this process without a word.
        cap_self(a.mem_limit);
        match execute_kernel_case(&case, &s, &run_id) {
            Ok(r) => r,
            Err(ExecError::Mask(e)) => return Err(BadInput::from(e).into()),
            Err(e) => return Err(BadInput::new(e.to_string()).into()),
        }
    };
    if a.json {
        println!("{}", serde_json::to_string(&row).context("serialising the row")?);
    } else {
        let f = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |x| format!("{x:.p$}"));
        println!("{}", case.label());
        println!("  status        {}{}", row.status, if row.error.is_empty() { String::new() } else { format!(" ({})", row.error) });
        println!("  mask area     {:.0} per head (density {:.4})", row.mask_area, row.density);
        println!("  FLOPs         {:.4e}", row.flops);
        println!(
            "  time (ms)     median {}  p20 {}  p80 {}  cv {}  ({} repeats, {})",
            f(row.ms_median, 3),
            f(row.ms_p20, 3),
            f(row.ms_p80, 3),
            f(row.cv, 3),
            row.repeats.map_or("-".into(), |r| r.to_string()),
            row.timing_mode
        );
        println!("  TFLOPS        {}  MFU {}", f(row.tflops, 4), f(row.mfu, 3));
        println!("  peak memory   {}", row.peak_mem_bytes.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)));
        println!("  max abs err   {}", row.max_abs_err.map_or("-".into(), |e| format!("{e:.3e}")));
        println!("  note          {}", row.note);
    }
    Ok(match row.status {
        Status::Ok | Status::Unsupported => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}
