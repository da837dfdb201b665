//! `attnbench run SUITE.toml [--out DIR] [--resume [--new-segment]] [--filter EXPR] [--dry-run] [--fail-on-wrong] [--mem-limit BYTES]`

use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::BadInput;
use crate::results::Status;
use crate::suite::runner::{check_out_dir, run_plan, RunOptions};
use crate::suite::signals;
use crate::suite::{Filter, Plan};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Suite file (TOML), e.g. suites/quick-cpu.toml.
    pub suite: PathBuf,
    /// Run directory (results.csv + meta.json). Default: results/<suite>-<UTC time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out: cases that already have a row are skipped; a torn last line is repaired.
    /// Refused when the suite file or the measurement setup changed since the run started (the message
    /// lists what changed) or when --out holds another suite's run.
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// With --resume: accept the changed suite or setup as a new segment of the run (recorded in
    /// meta.json and in every new row's `segment`); cases whose setup changed run again.
    #[arg(long, requires = "resume")]
    pub new_segment: bool,
    /// Most memory a kernel case may allocate in the worker, e.g. 16G or 512M (binary units). Cases
    /// estimated above it are `oom` rows without running; the worker is capped at it, so an allocation
    /// beyond it fails as `oom`. Default: available memory minus max(256 MiB, 5 % of RAM), per case.
    #[arg(long, value_parser = parse_mem_limit)]
    pub mem_limit: Option<u64>,
    /// Only cases matching EXPR, e.g. 'backend~sdpa,seqlen<=4096,pass=fwd' (fields: backend, strategy,
    /// pattern, pass, dtype, device, heads, seqlen, batch, head_dim, world_size, kind; ops = != < <= > >= ~).
    #[arg(long)]
    pub filter: Option<String>,
    /// Print the plan (cases, up-front unsupported cases, estimated time) and exit without running.
    #[arg(long)]
    pub dry_run: bool,
    /// Exit 1 if any case computed a wrong result (default: wrong cases are rows, exit 0).
    #[arg(long)]
    pub fail_on_wrong: bool,
    /// Assumed throughput for the time estimate of --dry-run, TFLOPS (default: with --overheads-from,
    /// each backend's median there; else 0.05 on CPU, 300 on CUDA).
    #[arg(long)]
    pub assume_tflops: Option<f64>,
    /// For --dry-run: fit the untimed seconds (setup, gate, measurement overhead) to the rows of an
    /// earlier run (its results.csv) instead of the built-in defaults.
    #[arg(long, requires = "dry_run")]
    pub overheads_from: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(t) = args.assume_tflops.filter(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(BadInput::new(format!("--assume-tflops: must be a positive, finite number of TFLOPS, got {t}")).into());
    }
    let filter = args.filter.as_deref().map(Filter::parse).transpose().map_err(BadInput::new)?;
    let oracle = crate::suite::oracle::Registries;
    let plan = crate::suite::load(&args.suite, filter.as_ref(), &oracle).map_err(|e| BadInput::new(e.to_string()))?;
    if args.dry_run {
        let rows = match &args.overheads_from {
            Some(p) => Some(crate::results::csvio::read_rows(p).map_err(|e| BadInput::new(format!("--overheads-from {}: {e}", p.display())))?),
            None => None,
        };
        print_plan(&plan, args.assume_tflops, rows.as_deref());
        return Ok(ExitCode::SUCCESS);
    }
    let out_dir = args.out.clone().unwrap_or_else(|| PathBuf::from("results").join(format!("{}-{}", plan.name, chrono::Utc::now().format("%Y%m%d-%H%M%S"))));
    let opts = RunOptions {
        out_dir,
        resume: args.resume,
        new_segment: args.new_segment,
        fail_on_wrong: args.fail_on_wrong,
        mem_limit: args.mem_limit,
        command_line: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "),
        progress_bar: RunOptions::detect_progress(),
    };
    check_out_dir(&opts)?;
    if plan.cases.is_empty() {
        return Err(BadInput::new(format!("{}: no cases left after filters", args.suite.display())).into());
    }
    // Every error of the runner names its file or folder already.
    let summary = run_plan(&plan, &opts)?;
    if let Some(sig) = summary.interrupted {
        let mut again =
            format!("attnbench run {} --out {} --resume", shell_word(&args.suite.display().to_string()), shell_word(&opts.out_dir.display().to_string()));
        if let Some(f) = &args.filter {
            again.push_str(&format!(" --filter {}", shell_word(f)));
        }
        eprintln!(
            "interrupted by {}: stopped the running case (no row written for it); {} of {} cases have rows in {}; continue with: {again}",
            signals::name(sig),
            summary.have_rows,
            summary.planned,
            summary.csv.display()
        );
        return Ok(ExitCode::from(signals::exit_code(sig)));
    }
    let mut parts: Vec<String> = Vec::new();
    for s in [Status::Ok, Status::Unsupported, Status::Oom, Status::Wrong, Status::Error, Status::Timeout] {
        if summary.count(s) > 0 {
            parts.push(format!("{} {s}", summary.count(s)));
        }
    }
    let overhead = if summary.timed_s > 0.0 {
        format!(
            " (inside cases {:.1} s, of which timed kernel calls {:.1} s, untimed setup {:.1} s, gate {:.1} s; runner overhead {:.2} %)",
            summary.case_s,
            summary.timed_s,
            summary.setup_s,
            summary.gate_s,
            100.0 * (summary.wall_s - summary.case_s).max(0.0) / summary.wall_s.max(1e-9)
        )
    } else {
        String::new()
    };
    println!(
        "{}: {} in {:.1} s{overhead} → {}",
        plan.name,
        if parts.is_empty() { "nothing to do".into() } else { parts.join(", ") },
        summary.wall_s,
        summary.csv.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_mem_limit(s: &str) -> Result<u64, String> {
    crate::suite::memory::parse_bytes(s)
}

/// `word`, quoted for a POSIX shell when it needs to be.
fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Prints the case table, the unsupported cases with their reasons, and an estimate of wall time: the
/// measurement's calls at the assumed rate plus the untimed seconds (setup, gate, measurement overhead)
/// of `suite::estimate`, fitted to `rows` of an earlier run when given.
fn print_plan(plan: &Plan, assume_tflops: Option<f64>, rows: Option<&[crate::results::Row]>) {
    use crate::case::DeviceKind;
    use crate::suite::estimate::{estimate_case, shape_key, CaseEstimate, Overheads};
    let s = &plan.settings;
    let overheads = |d: DeviceKind| rows.and_then(|r| Overheads::from_rows(r, d, s)).unwrap_or_else(|| Overheads::default_for(d));
    let (cpu, cuda) = (overheads(DeviceKind::Cpu), overheads(DeviceKind::Cuda));
    let mut sum = CaseEstimate::default();
    let mut last_shape = None;
    let mut sources = std::collections::BTreeSet::new();
    println!("{:<16} {:<10} {:<60} {:>12} {:>10}  plan", "case_id", "kind", "case", "GFLOP", "est. s");
    let mut unsupported = 0;
    for pc in &plan.cases {
        let (default_rate, ov) = match pc.case.device {
            DeviceKind::Cpu => (0.05, &cpu),
            DeviceKind::Cuda => (300.0, &cuda),
        };
        let rate = assume_tflops.or_else(|| ov.tflops_by_backend.get(&pc.case.backend).copied()).unwrap_or(default_rate);
        let (est, verdict) = match &pc.support {
            Ok(()) => {
                let key = shape_key(pc);
                let e = estimate_case(pc, s, rate, ov, last_shape.as_ref() != Some(&key));
                last_shape = Some(key);
                sources.insert(ov.source.clone());
                sum.measure_s += e.measure_s;
                sum.setup_s += e.setup_s;
                sum.gate_s += e.gate_s;
                (format!("{:.2}", e.total()), "run".to_string())
            }
            Err(reason) => {
                unsupported += 1;
                ("-".into(), format!("unsupported: {reason}"))
            }
        };
        println!("{:<16} {:<10} {:<60} {:>12.3} {:>10}  {}", pc.case.case_id(), pc.case.kind.name(), pc.case.label(), pc.flops / 1e9, est, verdict);
    }
    println!(
        "{} cases ({} to run, {} unsupported up front); estimated wall time {:.0} s = measurement {:.0} s at the assumed rate ({} warmup + {} repeats per case) + setup {:.0} s + gate {:.0} s{}; untimed costs: {}",
        plan.cases.len(),
        plan.cases.len() - unsupported,
        unsupported,
        sum.total(),
        sum.measure_s,
        s.warmup,
        s.repeats,
        sum.setup_s,
        sum.gate_s,
        if s.check { "" } else { " (check off)" },
        sources.into_iter().collect::<Vec<_>>().join("; ")
    );
}
