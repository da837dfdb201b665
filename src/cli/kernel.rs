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
    let s = a.measure.settings(MeasureSettings::default())?;
    let run_id = format!("kernel-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let row = if let Some(name) = crate::backend::external::config::adapter_name(&case.backend) {
        use crate::backend::external::config::{ExternalConfig, WorkerCommand};
        let mut cfg = ExternalConfig { python: a.python.clone(), ..Default::default() };
        if let Some(w) = &a.worker {
            cfg.workers.insert(name.to_string(), WorkerCommand::Line(w.clone()));
        }
        crate::mask::build_pattern(&case.pattern, case.seqlen, &case.params).map_err(BadInput::from)?;
        cfg.command(name).map_err(|e| BadInput::new(format!("--backend: {e}")))?;
        crate::backend::external::execute(&case, &s, &run_id, &cfg)
    } else if a.python.is_some() || a.worker.is_some() {
        return Err(BadInput::new("--python and --worker apply to ext:NAME backends only").into());
    } else {
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
