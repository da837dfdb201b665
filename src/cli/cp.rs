//! `attnbench cp`: CP cases (strategies × masks), run under mpirun (one process per rank, `--comm mpi`
//! or `nccl`) or inside one process (`--comm local --world N`, ranks as threads). Rank 0 prints each
//! row (`--json`: one JSON object) and appends it to `--out FILE.csv`. Bad input: exit 2 on every rank,
//! one line printed by rank 0 (or by the one rank whose input was bad); ranks started with different
//! arguments stop the same way before any tensor moves (`harness::cp::agree`). A rank failing mid-run
//! prints `error: rank R: …` and aborts the whole job (exit 1); rows written before stay intact.
//! `attnbench run` hands a case to its ranks as data (`--work FILE`, the kernel worker's item).

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::{CaseArgs, CpArgs, MeasureArgs, CPU_TOY_SHAPE};
use crate::cp::comm::Comm;
use crate::cp::setup::CpSetup;
use crate::error::BadInput;
use crate::harness::cp::CpSpec;
use crate::harness::ranks::{self, RowSink};
use crate::harness::WorkItem;
use crate::measure::MeasureSettings;
use crate::results::{Row, RunFolder};
use crate::suite::identity::command_meta;

#[derive(clap::Args, Debug, Clone)]
pub struct CpCommandArgs {
    #[command(flatten)]
    pub case: CaseArgs,
    #[command(flatten)]
    pub cp: CpArgs,
    #[command(flatten)]
    pub measure: MeasureArgs,
    /// Communicator: mpi, nccl (GPUs) or local (threads in this process, see --world).
    #[arg(long)]
    pub comm: Option<String>,
    /// Number of ranks for --comm local.
    #[arg(long, default_value_t = 2)]
    pub world: usize,
    /// Print the row as one JSON object (rank 0).
    #[arg(long)]
    pub json: bool,
    /// Append the row to this CSV (rank 0; created with a header if new).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run the case in this work item (JSON: run id, case, settings) instead of the case flags; how
    /// `attnbench run` hands a CP case to its ranks.
    #[arg(long, hide = true)]
    pub work: Option<PathBuf>,
    /// Testing hook (test builds only): RANK:KIND with KIND = mask (bad mask on that rank), error
    /// (fails mid-run), kill (SIGKILL mid-run).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    pub fault: Option<String>,
}

/// Default measurement of `cp` (a CPU toy size: few repeats).
fn defaults() -> MeasureSettings {
    MeasureSettings { warmup: 1, repeats: 5, ..MeasureSettings::default() }
}

/// The cases of a command line (strategies × masks at `world` ranks), or of its work item; each
/// validated (set up without tensors) so bad input is found before any rank starts computing.
fn specs_from(a: &CpCommandArgs, world: usize) -> Result<(String, Vec<CpSpec>), BadInput> {
    let (run_id, specs) = match &a.work {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| BadInput::new(format!("--work {}: {e}", path.display())))?;
            let item: WorkItem = serde_json::from_str(&text).map_err(|e| BadInput::new(format!("--work {}: not a work item: {e}", path.display())))?;
            (item.run_id, vec![CpSpec::new(item.case, item.settings)])
        }
        None => {
            let settings = a.measure.settings(defaults())?;
            let cases = a.cp.cases(&a.case, &CPU_TOY_SHAPE, &[world])?;
            (chrono::Local::now().format("%Y%m%dT%H%M%S").to_string(), cases.into_iter().map(|c| CpSpec::new(c, settings.clone())).collect())
        }
    };
    #[allow(unused_mut)]
    let mut specs = specs;
    for spec in &specs {
        if spec.case.device == crate::case::DeviceKind::Cuda && !crate::sys::cuda_available() {
            return Err(BadInput::new("--device cuda: no CUDA device is available on this machine"));
        }
        CpSetup::new(&spec.case).map_err(BadInput::new)?;
    }
    #[cfg(feature = "test-hooks")]
    if let Some(f) = &a.fault {
        let (r, k) = f.split_once(':').ok_or_else(|| BadInput(format!("--fault: expected RANK:KIND, got `{f}`")))?;
        let r: usize = r.parse().map_err(|_| BadInput(format!("--fault: bad rank `{r}`")))?;
        if !["mask", "error", "kill"].contains(&k) {
            return Err(BadInput(format!("--fault: kind must be mask, error or kill, got `{k}`")));
        }
        for spec in &mut specs {
            spec.fault = Some((r, k.to_string()));
        }
    }
    Ok((run_id, specs))
}

/// Rank 0's rows of `cp`: appended to `--out` (the results folder's owner: locked, meta.json, this
/// command as a segment) and printed (a line, or `--json`).
struct Printed<'a> {
    a: &'a CpCommandArgs,
    settings: MeasureSettings,
    folder: Option<RunFolder>,
}

impl RowSink for Printed<'_> {
    type Error = anyhow::Error;
    fn open(&mut self) -> anyhow::Result<()> {
        if let Some(p) = &self.a.out {
            let f = RunFolder::for_appending(p, command_meta("cp", Some(&self.settings), None))
                .map_err(|e| e.into_cli().context(format!("--out {}", p.display())))?;
            self.folder = Some(f);
        }
        Ok(())
    }
    fn row(&mut self, row: &mut Row) -> anyhow::Result<()> {
        if let Some(f) = &mut self.folder {
            f.append(row).map_err(|e| e.into_cli())?;
        }
        if self.a.json {
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
        Ok(())
    }
}

/// Runs every case on this rank (`harness::ranks::run_all`) with rank 0's rows printed; the exit code.
fn run_all(comm: &dyn Comm, specs: &[CpSpec], a: &CpCommandArgs, run_id: &str, device_name: &str, abort_on_error: bool) -> anyhow::Result<ExitCode> {
    let settings = specs.first().map(|s| s.settings.clone()).unwrap_or_default();
    let end = ranks::run_all(comm, specs, run_id, device_name, abort_on_error, &mut Printed { a, settings, folder: None })?;
    if comm.rank() == 0 && specs.len() > 1 && !a.json && end.rows == specs.len() {
        println!("summary: {} cases, {} ok, {} not ok", end.rows, end.rows - end.not_ok, end.not_ok);
    }
    Ok(ExitCode::from(end.code))
}

pub fn run(a: CpCommandArgs) -> anyhow::Result<ExitCode> {
    let comm_name = a.comm.clone().unwrap_or_else(|| if cfg!(feature = "mpi") { "mpi".into() } else { "local".into() });
    let device_name = a.case.device.clone();
    match comm_name.as_str() {
        "local" => {
            if a.world == 0 {
                return Err(BadInput("--world must be at least 1".into()).into());
            }
            // Every case is validated before the world is spawned.
            let (run_id, specs) = specs_from(&a, a.world)?;
            let args = a.clone();
            // An error crosses the thread boundary as its exit code and its whole chain (the cause of
            // an I/O error, the bad-input kind of a busy folder), not just the outermost context.
            let codes = crate::cp::comm::local::LocalWorld::run(a.world, move |c| {
                run_all(c, &specs, &args, &run_id, &device_name, false)
                    .map_err(|e| (crate::error::exit_code(&e), e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")))
            });
            for c in codes {
                let c = c.map_err(|(code, msg)| if code == 2 { anyhow::Error::from(BadInput(msg)) } else { anyhow::anyhow!(msg) })?;
                if c != ExitCode::SUCCESS {
                    return Ok(c);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        "mpi" | "nccl" => run_distributed(&a, &comm_name, &device_name),
        other => Err(BadInput(format!("--comm: unknown communicator `{other}` (expected mpi, nccl or local)")).into()),
    }
}

#[cfg(feature = "mpi")]
fn run_distributed(a: &CpCommandArgs, comm_name: &str, device_name: &str) -> anyhow::Result<ExitCode> {
    let mpi = crate::cp::comm::mpi::MpiComm::init().map_err(|e| anyhow::anyhow!("{e}"))?;
    // Every rank parses its own arguments; all ranks then agree (or all stop with exit 2) before any
    // tensor moves: a rank with bad arguments or a different case cannot hang or crash the job.
    let parsed = specs_from(a, mpi.size());
    let local = parsed.as_ref().map(|(_, s)| ranks::fingerprint(s)).map_err(|e| e.to_string());
    if let Err(f) = crate::harness::cp::agree(&mpi, local, crate::harness::cp::Job::CP) {
        if let Some(m) = f.message {
            eprintln!("error: {m}");
        }
        return Ok(ExitCode::from(f.code));
    }
    let (run_id, specs) = parsed.expect("agreed");
    if comm_name == "nccl" {
        super::with_nccl(&mpi, |n, _| run_all(n, &specs, a, &run_id, device_name, true))
    } else {
        run_all(&mpi, &specs, a, &run_id, device_name, true)
    }
}

#[cfg(not(feature = "mpi"))]
fn run_distributed(_a: &CpCommandArgs, comm_name: &str, _device_name: &str) -> anyhow::Result<ExitCode> {
    Err(BadInput(format!("--comm {comm_name}: this attnbench was built without the `mpi` feature (cargo build --features mpi), use --comm local")).into())
}
