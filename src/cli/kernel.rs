//! `attnbench kernel`: check and time one attention case on one device; a table, or `--json` (one
//! object with every row column).

use std::process::ExitCode;

use anyhow::Context;

use crate::case::{Case, DType, DeviceKind, HeadLayout};
use crate::error::BadInput;
use crate::exec::{execute_kernel_case, ExecError};
use crate::flops::Pass;
use crate::mask::Params;
use crate::measure::{MeasureSettings, TimingMode};
use crate::results::Status;

#[derive(clap::Args, Debug)]
pub struct KernelArgs {
    /// Backend (see `attnbench list`), e.g. sdpa-flash, sliced, naive.
    #[arg(long)]
    pub backend: String,
    /// Mask pattern, e.g. causal, causal_document.
    #[arg(long)]
    pub mask: String,
    /// Mask parameter `key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Sequence length (tokens).
    #[arg(long)]
    pub seqlen: usize,
    /// Head layout Hq:Hkv.
    #[arg(long, default_value = "64:8")]
    pub heads: String,
    #[arg(long, default_value_t = 128)]
    pub head_dim: usize,
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    #[arg(long, default_value = "fwd")]
    pub pass: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Untimed calls before timing.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Timed repeats.
    #[arg(long)]
    pub repeats: Option<usize>,
    /// l2flush or back2back (GPU only).
    #[arg(long)]
    pub timing_mode: Option<String>,
    /// Skip the correctness gate.
    #[arg(long)]
    pub no_check: bool,
    /// Print one JSON object with every row column.
    #[arg(long)]
    pub json: bool,
}

fn parse<T: std::str::FromStr<Err = String>>(flag: &str, v: &str) -> Result<T, BadInput> {
    v.parse::<T>().map_err(|e| BadInput::new(format!("--{flag}: {e}")))
}

pub fn run(a: KernelArgs) -> anyhow::Result<ExitCode> {
    crate::sys::ensure_cuda_loaded();
    let heads: HeadLayout = parse("heads", &a.heads)?;
    let dtype: DType = parse("dtype", &a.dtype)?;
    let pass: Pass = parse("pass", &a.pass)?;
    let device: DeviceKind = parse("device", &a.device)?;
    if a.seqlen == 0 || a.head_dim == 0 || a.batch == 0 {
        return Err(BadInput::new("--seqlen, --head-dim and --batch must be at least 1").into());
    }
    if device == DeviceKind::Cuda && !crate::sys::cuda_available() {
        return Err(BadInput::new("--device cuda: no CUDA device is available on this machine").into());
    }
    crate::backend::find_backend(&a.backend).map_err(|e| BadInput::new(format!("--backend: {e}")))?;
    let params = Params::parse_kv(&a.set).map_err(BadInput::from)?;
    let mut case = Case::kernel(&a.backend, &a.mask, params, a.seqlen, heads, a.head_dim, dtype, pass, device);
    case.batch = a.batch;
    let mut s = MeasureSettings::default();
    if let Some(w) = a.warmup {
        s.warmup = w;
    }
    if let Some(r) = a.repeats {
        if r == 0 {
            return Err(BadInput::new("--repeats must be at least 1").into());
        }
        s.repeats = r;
    }
    if let Some(m) = &a.timing_mode {
        s.timing_mode = parse::<TimingMode>("timing-mode", m)?;
    }
    s.check = !a.no_check;
    let run_id = format!("kernel-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let row = match execute_kernel_case(&case, &s, &run_id) {
        Ok(r) => r,
        Err(ExecError::Mask(e)) => return Err(BadInput::from(e).into()),
        Err(e) => return Err(BadInput::new(e.to_string()).into()),
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
