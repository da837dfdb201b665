//! `attnbench run SUITE.toml [--out DIR] [--resume] [--filter EXPR] [--dry-run] [--fail-on-wrong]`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::error::BadInput;
use crate::results::Status;
use crate::suite::runner::{check_out_dir, run_plan, RunOptions};
use crate::suite::{Filter, Plan};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Suite file (TOML), e.g. suites/quick-cpu.toml.
    pub suite: PathBuf,
    /// Run directory (results.csv + meta.json). Default: results/<suite>-<UTC time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out: cases that already have a row are skipped; a torn last line is repaired.
    #[arg(long, requires = "out")]
    pub resume: bool,
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
    /// Assumed throughput for the time estimate of --dry-run, TFLOPS (default: 0.05 on CPU, 300 on CUDA).
    #[arg(long)]
    pub assume_tflops: Option<f64>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let filter = args.filter.as_deref().map(Filter::parse).transpose().map_err(BadInput::new)?;
    let oracle = crate::suite::oracle::Registries;
    let plan = crate::suite::load(&args.suite, filter.as_ref(), &oracle).map_err(|e| BadInput::new(e.to_string()))?;
    if args.dry_run {
        print_plan(&plan, args.assume_tflops);
        return Ok(ExitCode::SUCCESS);
    }
    let out_dir = args.out.clone().unwrap_or_else(|| PathBuf::from("results").join(format!("{}-{}", plan.name, chrono::Utc::now().format("%Y%m%d-%H%M%S"))));
    let opts = RunOptions {
        out_dir,
        resume: args.resume,
        fail_on_wrong: args.fail_on_wrong,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        progress_bar: RunOptions::detect_progress(),
    };
    check_out_dir(&opts)?;
    if plan.cases.is_empty() {
        return Err(BadInput::new(format!("{}: no cases left after filters", args.suite.display())).into());
    }
    eprintln!("{}: {} cases → {}", plan.name, plan.cases.len(), opts.out_dir.display());
    let summary = run_plan(&plan, &opts).context("running the suite")?;
    let mut parts: Vec<String> = Vec::new();
    for s in [Status::Ok, Status::Unsupported, Status::Oom, Status::Wrong, Status::Error, Status::Timeout] {
        if summary.count(s) > 0 {
            parts.push(format!("{} {s}", summary.count(s)));
        }
    }
    let overhead = if summary.timed_s > 0.0 {
        format!(
            " (inside cases {:.1} s, of which timed kernel calls {:.1} s; runner overhead {:.2} %)",
            summary.case_s,
            summary.timed_s,
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

/// Prints the case table, the unsupported cases with their reasons, and an estimate of wall time.
fn print_plan(plan: &Plan, assume_tflops: Option<f64>) {
    let s = &plan.settings;
    let calls = (s.warmup + s.repeats) as f64 + if s.check { 1.0 } else { 0.0 };
    let mut total_s = 0.0;
    println!("{:<16} {:<10} {:<60} {:>12} {:>10}  plan", "case_id", "kind", "case", "GFLOP", "est. s");
    let mut unsupported = 0;
    for pc in &plan.cases {
        let rate = assume_tflops.unwrap_or(match pc.case.device {
            crate::case::DeviceKind::Cpu => 0.05,
            crate::case::DeviceKind::Cuda => 300.0,
        });
        let (est, verdict) = match &pc.support {
            Ok(()) => {
                let t = pc.flops / (rate * 1e12) * calls;
                total_s += t;
                (format!("{t:.2}"), "run".to_string())
            }
            Err(reason) => {
                unsupported += 1;
                ("-".into(), format!("unsupported: {reason}"))
            }
        };
        println!("{:<16} {:<10} {:<60} {:>12.3} {:>10}  {}", pc.case.case_id(), pc.case.kind.name(), pc.case.label(), pc.flops / 1e9, est, verdict);
    }
    println!(
        "{} cases ({} to run, {} unsupported up front); estimated wall time {:.0} s at the assumed rate ({} warmup + {} repeats{} per case)",
        plan.cases.len(),
        plan.cases.len() - unsupported,
        unsupported,
        total_s,
        s.warmup,
        s.repeats,
        if s.check { " + 1 check" } else { "" }
    );
}
