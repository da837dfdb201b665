//! `attnbench cp`: one context-parallel case, run under mpirun (one process per rank, `--comm mpi` or
//! `nccl`) or inside one process (`--comm local --world N`, ranks as threads). Rank 0 prints the row
//! (`--json`: one JSON object) and appends it to `--out FILE.csv`. Bad input: exit 2 on every rank,
//! one line printed by rank 0 (or by the one rank whose input was bad). A rank failing mid-run prints
//! `error: rank R: …` and aborts the whole job (exit 1); rows written before stay intact.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::case::{DType, DeviceKind, HeadLayout};
use crate::cp::comm::Comm;
use crate::cp::def::CpDef;
use crate::cp::exec::{run_case, CpSpec};
use crate::cp::shard::Sharding;
use crate::error::BadInput;
use crate::flops::Pass;
use crate::mask::Params;
use crate::measure::MeasureSettings;
use crate::results::{CsvAppender, Row};

#[derive(clap::Args, Debug, Clone)]
pub struct CpArgs {
    /// CP strategy: ring-p2p, ring-p2p-zigzag, ring-allgather, ulysses, usp, double-ring; repeatable,
    /// or `all`. Several strategies/masks run as a sweep inside one job (one row per case).
    #[arg(long, required = true)]
    pub strategy: Vec<String>,
    /// Mask pattern (see `attnbench list`), optionally with its own parameters as
    /// `name?key=value&key=value`; repeatable.
    #[arg(long, required = true)]
    pub mask: Vec<String>,
    /// Mask parameter key=value (repeatable).
    #[arg(long = "set", value_name = "K=V")]
    pub set: Vec<String>,
    /// Global sequence length (tokens, all ranks together).
    #[arg(long)]
    pub seqlen: usize,
    /// Head layout Hq:Hkv.
    #[arg(long, default_value = "8:2")]
    pub heads: String,
    #[arg(long, default_value_t = 32)]
    pub head_dim: usize,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value = "fp32")]
    pub dtype: String,
    /// fwd, bwd (timed without the forward) or fwdbwd.
    #[arg(long = "pass", default_value = "fwd")]
    pub pass: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Communicator: mpi, nccl (GPUs) or local (threads in this process, see --world).
    #[arg(long)]
    pub comm: Option<String>,
    /// Number of ranks for --comm local.
    #[arg(long, default_value_t = 2)]
    pub world: usize,
    /// Ulysses (head-parallel) degree for usp (must divide the world size and Hq).
    #[arg(long, default_value_t = 0)]
    pub ulysses_degree: usize,
    /// Inner ring size for double-ring (must divide the world size).
    #[arg(long, default_value_t = 0)]
    pub inner_ring: usize,
    /// Override the strategy's sharding: contiguous or zigzag.
    #[arg(long)]
    pub sharding: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Skip the check against the single-device result.
    #[arg(long)]
    pub no_check: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the row as one JSON object (rank 0).
    #[arg(long)]
    pub json: bool,
    /// Append the row to this CSV (rank 0; created with a header if new).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Testing hook (test builds only): RANK:KIND with KIND = mask (bad mask on that rank), error
    /// (fails mid-run), kill (SIGKILL mid-run).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    pub fault: Option<String>,
}

fn base_spec(a: &CpArgs) -> Result<CpSpec, BadInput> {
    let heads: HeadLayout = a.heads.parse().map_err(|e| BadInput(format!("--heads: {e}")))?;
    let dtype: DType = a.dtype.parse().map_err(|e| BadInput(format!("--dtype: {e}")))?;
    let pass: Pass = a.pass.parse().map_err(|e| BadInput(format!("--pass: {e}")))?;
    let device: DeviceKind = a.device.parse().map_err(|e| BadInput(format!("--device: {e}")))?;
    let params = Params::parse_kv(&a.set).map_err(|e| BadInput(format!("--set: {e}")))?;
    let sharding = match &a.sharding {
        None => None,
        Some(s) => Some(s.parse::<Sharding>().map_err(|e| BadInput(format!("--sharding: {e}")))?),
    };
    if a.seqlen == 0 || a.head_dim == 0 || a.batch == 0 {
        return Err(BadInput("--seqlen, --head-dim and --batch must be at least 1".into()));
    }
    if a.repeats == 0 {
        return Err(BadInput("--repeats must be at least 1".into()));
    }
    let def = CpDef {
        strategy: String::new(),
        pattern: String::new(),
        params,
        seqlen: a.seqlen,
        batch: a.batch,
        heads,
        head_dim: a.head_dim,
        dtype,
        pass,
        device,
        ulysses_degree: a.ulysses_degree,
        inner_ring: a.inner_ring,
        sharding,
    };
    let settings = MeasureSettings { warmup: a.warmup, repeats: a.repeats, check: !a.no_check, seed: a.seed, ..MeasureSettings::default() };
    #[allow(unused_mut)]
    let mut spec = CpSpec::new(def, settings);
    #[cfg(feature = "test-hooks")]
    if let Some(f) = &a.fault {
        let (r, k) = f.split_once(':').ok_or_else(|| BadInput(format!("--fault: expected RANK:KIND, got `{f}`")))?;
        let r: usize = r.parse().map_err(|_| BadInput(format!("--fault: bad rank `{r}`")))?;
        if !["mask", "error", "kill"].contains(&k) {
            return Err(BadInput(format!("--fault: kind must be mask, error or kill, got `{k}`")));
        }
        spec.fault = Some((r, k.to_string()));
    }
    Ok(spec)
}

/// The cases of a (possibly multi-valued) command line: strategies × masks.
fn specs_from(a: &CpArgs) -> Result<Vec<CpSpec>, BadInput> {
    let base = base_spec(a)?;
    Ok(base.def.expand(&a.strategy, &a.mask)?.into_iter().map(|def| CpSpec { def, ..base.clone() }).collect())
}

/// Runs every case on one rank, in order; stops at the first failure (its code). Rows of the cases
/// before are already written.
fn run_all(comm: &dyn Comm, specs: &[CpSpec], a: &CpArgs, run_id: &str, device_name: &str, abort_on_error: bool) -> anyhow::Result<ExitCode> {
    let mut wrong = 0;
    let mut n_rows = 0;
    for spec in specs {
        match run_on(comm, spec, run_id, device_name, abort_on_error) {
            RankEnd::Fail(c) => return Ok(ExitCode::from(c)),
            RankEnd::Quiet => {}
            RankEnd::Row(r) => {
                n_rows += 1;
                if r.status != crate::results::Status::Ok {
                    wrong += 1;
                }
                finish(RankEnd::Row(r), a)?;
            }
        }
    }
    if comm.rank() == 0 && specs.len() > 1 && !a.json {
        println!("summary: {n_rows} cases, {} ok, {wrong} not ok", n_rows - wrong);
    }
    Ok(if wrong > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// What one rank ends with: an exit code, and the row on rank 0.
enum RankEnd {
    Row(Box<Row>),
    Quiet,
    Fail(u8),
}

/// Runs the case on `comm`; prints failures per the rules above. Never returns on a mid-run failure
/// of an MPI/NCCL rank (the job is aborted).
fn run_on(comm: &dyn Comm, spec: &CpSpec, run_id: &str, device_name: &str, abort_on_error: bool) -> RankEnd {
    match run_case(comm, spec, run_id, device_name) {
        Ok(Some(row)) => RankEnd::Row(Box::new(row)),
        Ok(None) => RankEnd::Quiet,
        Err(Ok(f)) => {
            if let Some(m) = f.message {
                eprintln!("error: {m}");
            }
            RankEnd::Fail(f.code)
        }
        Err(Err(e)) => {
            eprintln!("error: rank {}: {e}", comm.rank());
            if abort_on_error {
                comm.abort(1);
            }
            RankEnd::Fail(1)
        }
    }
}

fn finish(end: RankEnd, a: &CpArgs) -> anyhow::Result<ExitCode> {
    match end {
        RankEnd::Quiet => Ok(ExitCode::SUCCESS),
        RankEnd::Fail(c) => Ok(ExitCode::from(c)),
        RankEnd::Row(row) => {
            if let Some(p) = &a.out {
                let mut w = CsvAppender::open(p).with_context(|| format!("--out {}", p.display()))?;
                w.append(&row)?;
            }
            if a.json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                let f = |x: Option<f64>, p: usize| x.map(|v| format!("{v:.p$}")).unwrap_or_else(|| "-".into());
                println!(
                    "{} {} S={} ws={} {}: {} ms={} tflops/gpu={} imbalance={} bytes_sent={} GB/s={} scaling_eff={} max_abs_err={} {}{}",
                    row.strategy,
                    row.mask,
                    row.seqlen,
                    row.world_size,
                    row.pass,
                    row.status,
                    f(row.ms_median, 3),
                    f(row.tflops_per_gpu, 4),
                    f(row.imbalance, 3),
                    row.bytes_sent.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                    f(row.bandwidth_gbps, 3),
                    f(row.scaling_eff, 3),
                    row.max_abs_err.map(|e| format!("{e:.2e}")).unwrap_or_else(|| "-".into()),
                    row.note,
                    if row.error.is_empty() { String::new() } else { format!(" error: {}", row.error) }
                );
            }
            Ok(if row.status == crate::results::Status::Wrong { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

pub fn run(a: CpArgs) -> anyhow::Result<ExitCode> {
    let comm_name = a.comm.clone().unwrap_or_else(|| if cfg!(feature = "mpi") { "mpi".into() } else { "local".into() });
    let run_id = chrono::Local::now().format("%Y%m%dT%H%M%S").to_string();
    let device_name = a.device.clone();
    match comm_name.as_str() {
        "local" => {
            let specs = specs_from(&a)?;
            if a.world == 0 {
                return Err(BadInput("--world must be at least 1".into()).into());
            }
            let args = a.clone();
            let codes =
                crate::cp::comm::local::LocalWorld::run(a.world, move |c| run_all(c, &specs, &args, &run_id, &device_name, false).map_err(|e| e.to_string()));
            for c in codes {
                let c = c.map_err(|e| anyhow::anyhow!(e))?;
                if c != ExitCode::SUCCESS {
                    return Ok(c);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        "mpi" | "nccl" => run_distributed(&a, &comm_name, &run_id, &device_name),
        other => Err(BadInput(format!("--comm: unknown communicator `{other}` (expected mpi, nccl or local)")).into()),
    }
}

#[cfg(feature = "mpi")]
fn run_distributed(a: &CpArgs, comm_name: &str, run_id: &str, device_name: &str) -> anyhow::Result<ExitCode> {
    let mpi = crate::cp::comm::mpi::MpiComm::init().map_err(|e| anyhow::anyhow!("{e}"))?;
    // Flag errors: every rank finds the same one; only rank 0 prints it.
    let specs = match specs_from(a) {
        Ok(s) => s,
        Err(e) => {
            if mpi.rank() == 0 {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    if comm_name == "nccl" {
        super::with_nccl(&mpi, |n, _| run_all(n, &specs, a, run_id, device_name, true))
    } else {
        run_all(&mpi, &specs, a, run_id, device_name, true)
    }
}

#[cfg(not(feature = "mpi"))]
fn run_distributed(_a: &CpArgs, comm_name: &str, _run_id: &str, _device_name: &str) -> anyhow::Result<ExitCode> {
    Err(BadInput(format!("--comm {comm_name}: this attnbench was built without the `mpi` feature (cargo build --features mpi), use --comm local")).into())
}
