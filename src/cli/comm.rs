//! `attnbench comm`: collective bandwidth table in the manner of nccl-tests (all-reduce, all-gather,
//! reduce-scatter, all-to-all, send/recv over doubling sizes, with an exact data check), under mpirun
//! (`--comm mpi` on CPU, `--comm nccl` on GPUs, one rank per GPU) or in one process (`--comm local
//! --world N`, ranks as threads). Rank 0 prints the table, or with `--json` one JSON object
//! `{world_size, device, backend, dtype, warmup, iters, results: [{op, bytes, time_us, algbw_gbps,
//! busbw_gbps, wrong}]}` (read by the simulator's α–β calibration). Exit 1 when any element was wrong,
//! 2 on bad input (one line, printed by rank 0 only). Numeric flags are parsed here, not by clap, so a
//! bad value is reported once instead of once per rank.

use std::process::ExitCode;

use tch::Device;

use crate::cp::comm::Comm;
use crate::cp::commbench::{parse_bytes, run_bench, BenchConfig, BenchReport, Op};
use crate::error::BadInput;

#[derive(clap::Args, Debug, Clone)]
pub struct CommArgs {
    /// Communicator: mpi, nccl (GPUs) or local (threads in this process, see --world). Default: mpi
    /// when built with the `mpi` feature, else local.
    #[arg(long)]
    pub comm: Option<String>,
    /// Number of ranks for --comm local.
    #[arg(long, default_value = "2")]
    pub world: String,
    /// Where the buffers live: cpu or cuda (default: cuda with --comm nccl, else cpu).
    #[arg(long)]
    pub device: Option<String>,
    /// Comma-separated operations: allreduce, allgather, reducescatter, alltoall, sendrecv (or all).
    #[arg(long, default_value = "all")]
    pub ops: String,
    /// Smallest size in bytes (suffixes K, M, G = 2^10, 2^20, 2^30).
    #[arg(long, default_value = "8")]
    pub min_bytes: String,
    /// Largest size in bytes (default 64M on CPU, 256M on CUDA).
    #[arg(long)]
    pub max_bytes: Option<String>,
    /// Multiply the size by this integer (≥ 2) from one line to the next.
    #[arg(long, default_value = "2")]
    pub step_factor: String,
    /// Untimed operations before each size.
    #[arg(long, default_value = "5")]
    pub warmup: String,
    /// Timed operations per size (time = their mean, slowest rank).
    #[arg(long, default_value = "20")]
    pub iters: String,
    /// Measure the whole table this many times (nccl-tests' -N run cycles); each result names its cycle.
    #[arg(long, default_value = "1")]
    pub cycles: String,
    /// Print one JSON object instead of the table (rank 0).
    #[arg(long)]
    pub json: bool,
}

/// Validated command line.
struct Parsed {
    comm: String,
    world: usize,
    device_cuda: bool,
    cfg: BenchConfig,
}

fn num(flag: &str, v: &str, min: u64) -> Result<u64, BadInput> {
    let n: u64 = v.trim().parse().map_err(|_| BadInput(format!("{flag}: expected an integer, got `{v}`")))?;
    if n < min {
        return Err(BadInput(format!("{flag}: must be at least {min}, got {n}")));
    }
    Ok(n)
}

fn parse(a: &CommArgs) -> Result<Parsed, BadInput> {
    let comm = a.comm.clone().unwrap_or_else(|| if cfg!(feature = "mpi") { "mpi".into() } else { "local".into() });
    if !["mpi", "nccl", "local"].contains(&comm.as_str()) {
        return Err(BadInput(format!("--comm: unknown communicator `{comm}` (expected mpi, nccl or local)")));
    }
    let world = num("--world", &a.world, 1)? as usize;
    let device_cuda = match a.device.as_deref() {
        None => comm == "nccl",
        Some("cpu") => false,
        Some("cuda") => true,
        Some(d) => return Err(BadInput(format!("--device: expected cpu or cuda, got `{d}`"))),
    };
    if comm == "nccl" && !device_cuda {
        return Err(BadInput("--device cpu: NCCL moves GPU buffers only (use --comm mpi or local on CPU)".into()));
    }
    let ops: Vec<Op> = if a.ops.trim() == "all" {
        Op::ALL.to_vec()
    } else {
        let mut v = Vec::new();
        for s in a.ops.split(',').filter(|s| !s.trim().is_empty()) {
            let op: Op = s.parse().map_err(|e| BadInput(format!("--ops: {e}")))?;
            if !v.contains(&op) {
                v.push(op);
            }
        }
        if v.is_empty() {
            return Err(BadInput("--ops: name at least one operation".into()));
        }
        v
    };
    let min_bytes = parse_bytes(&a.min_bytes).map_err(|e| BadInput(format!("--min-bytes: {e}")))?;
    let max_default = if device_cuda { "256M" } else { "64M" };
    let max_bytes = parse_bytes(a.max_bytes.as_deref().unwrap_or(max_default)).map_err(|e| BadInput(format!("--max-bytes: {e}")))?;
    if min_bytes == 0 {
        return Err(BadInput("--min-bytes: must be at least 1".into()));
    }
    if max_bytes < min_bytes {
        return Err(BadInput(format!("--max-bytes: {max_bytes} is smaller than --min-bytes {min_bytes}")));
    }
    let step_factor = num("--step-factor", &a.step_factor, 2)?;
    let warmup = num("--warmup", &a.warmup, 0)? as usize;
    let iters = num("--iters", &a.iters, 1)? as usize;
    let cycles = num("--cycles", &a.cycles, 1)? as usize;
    if device_cuda && !tch::Cuda::is_available() {
        return Err(BadInput("--device cuda: CUDA is not available on this machine".into()));
    }
    if !device_cuda {
        check_host_memory(max_bytes, if comm == "local" { world } else { ranks_on_this_host() })?;
    }
    Ok(Parsed { comm, world, device_cuda, cfg: BenchConfig { ops, min_bytes, max_bytes, step_factor, warmup, iters, device: Device::Cpu, cycles } })
}

/// Ranks of this job on this host (Open MPI's local size; 1 when unknown).
fn ranks_on_this_host() -> usize {
    std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Refuses sizes whose CPU buffers cannot fit: each rank holds, for the largest size, its input, the
/// output, the expected result and one temporary of the check (≥ 4 × the size), and `ranks` of them
/// share this host's memory (its available memory, the cgroup's limit when lower).
fn check_host_memory(max_bytes: u64, ranks: usize) -> Result<(), BadInput> {
    use crate::suite::memory::{available_host_bytes, human};
    let need = (max_bytes as u128) * 4 * ranks.max(1) as u128;
    let avail = available_host_bytes();
    if need > avail as u128 {
        return Err(BadInput(format!(
            "--max-bytes {}: the buffers need at least {} (4 × the size × {} rank(s) on this host), more than the {} available",
            human(max_bytes),
            human(need.min(u64::MAX as u128) as u64),
            ranks.max(1),
            human(avail)
        )));
    }
    Ok(())
}

/// What every rank must agree on before any buffer moves (a different op list, size range or
/// iteration count on one rank would hang the job or garble the collectives): a hash of the parsed
/// configuration.
#[cfg(feature = "mpi")]
fn fingerprint(p: &Parsed) -> u64 {
    use std::hash::{Hash, Hasher};
    let c = &p.cfg;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&p.comm, p.device_cuda, c.ops.iter().map(|o| o.name()).collect::<Vec<_>>(), c.min_bytes, c.max_bytes, c.step_factor, c.warmup, c.iters, c.cycles)
        .hash(&mut h);
    h.finish()
}

/// Prints the report (rank 0) and maps wrong elements to exit 1.
fn finish(report: BenchReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    let wrong: u64 = report.results.iter().map(|r| r.wrong).sum();
    if wrong > 0 {
        eprintln!("error: {wrong} wrong elements (see the #wrong column)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn report(comm: &dyn Comm, cfg: &BenchConfig, results: Vec<crate::cp::commbench::OpResult>) -> BenchReport {
    let device = match cfg.device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    BenchReport { world_size: comm.size(), device, backend: comm.backend_name().into(), dtype: "f32", warmup: cfg.warmup, iters: cfg.iters, results }
}

pub fn run(a: CommArgs) -> anyhow::Result<ExitCode> {
    let comm_name = a.comm.clone().unwrap_or_else(|| if cfg!(feature = "mpi") { "mpi".into() } else { "local".into() });
    if comm_name == "local" {
        let mut p = parse(&a)?;
        if p.device_cuda {
            p.cfg.device = Device::Cuda(0);
        }
        let cfg = p.cfg.clone();
        let outs = crate::cp::comm::local::LocalWorld::run(p.world, move |c| run_bench(c, &cfg).map(|r| report(c, &cfg, r)).map_err(|e| e.to_string()));
        let first = outs.into_iter().next().expect("at least one rank").map_err(|e| anyhow::anyhow!(e))?;
        return finish(first, a.json);
    }
    run_distributed(&a)
}

#[cfg(feature = "mpi")]
fn run_distributed(a: &CommArgs) -> anyhow::Result<ExitCode> {
    let mpi = crate::cp::comm::mpi::MpiComm::init().map_err(|e| anyhow::anyhow!("{e}"))?;
    // Every rank parses its own flags (MPMD gives each its own); then all agree, or all stop with
    // exit 2 before any buffer moves: the lowest failing rank says why, or rank 0 names the rank whose
    // configuration differs from its own (as `cp` does).
    let parsed = parse(a);
    let local = parsed.as_ref().map(fingerprint).map_err(|e| e.to_string());
    if let Err(f) = crate::harness::cp::agree(&mpi, local, crate::harness::cp::Job::COMM) {
        if let Some(m) = f.message {
            eprintln!("error: {m}");
        }
        return Ok(ExitCode::from(f.code));
    }
    let mut p = parsed.expect("agreed");
    let go = |comm: &dyn Comm, cfg: &BenchConfig| -> anyhow::Result<ExitCode> {
        match run_bench(comm, cfg) {
            Ok(r) if comm.rank() == 0 => finish(report(comm, cfg, r), a.json),
            Ok(r) => Ok(if r.iter().any(|x| x.wrong > 0) { ExitCode::from(1) } else { ExitCode::SUCCESS }),
            Err(e) => {
                eprintln!("error: rank {}: {e}", comm.rank());
                comm.abort(1)
            }
        }
    };
    if p.comm == "nccl" {
        return super::with_nccl(&mpi, |n, device| {
            p.cfg.device = device;
            go(n, &p.cfg)
        });
    }
    if p.device_cuda {
        p.cfg.device = Device::Cuda(crate::harness::cp::local_device_index() % (tch::Cuda::device_count().max(1) as usize));
    }
    go(&mpi, &p.cfg)
}

#[cfg(not(feature = "mpi"))]
fn run_distributed(a: &CommArgs) -> anyhow::Result<ExitCode> {
    let p = parse(a)?;
    Err(BadInput(format!("--comm {}: this attnbench was built without the `mpi` feature (cargo build --features mpi), use --comm local", p.comm)).into())
}
