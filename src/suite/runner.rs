//! The runner: executes a plan case by case, appending each row to `results.csv` (flushed and synced
//! before the next case starts), with resume, per-case timeouts, crash isolation (kernel cases run in
//! a worker process; CP cases under `mpirun`), OOM skipping and a progress display.
//!
//! Its guards live in their own modules: one runner per folder ([`super::lock`]), resume only of the
//! same run ([`super::identity`]), memory before the OOM killer ([`super::memory`]) and signals
//! ([`super::signals`]).

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::identity::RunRequest;
use super::memory;
use super::plan::{Plan, PlannedCase};
use super::signals;
use super::worker::ROW_PREFIX;
use crate::case::{Case, CaseKind};
use crate::child::{describe_exit, LineChild, Recv};
use crate::error::BadInput;
use crate::harness::WorkItem;
use crate::measure::MeasureSettings;
use crate::results::run_folder::{FolderError, MetaDecision};
use crate::results::{Row, RunFolder, Status};

/// Options of one `attnbench run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out_dir: PathBuf,
    pub resume: bool,
    /// With `resume`: accept a changed suite or measurement setup as a new segment of the run.
    pub new_segment: bool,
    pub fail_on_wrong: bool,
    /// Bytes a kernel case may allocate in the worker (`--mem-limit`); `None`: available memory minus
    /// headroom, taken before each case (see [`memory`]).
    pub mem_limit: Option<u64>,
    /// Full command line, recorded in meta.json.
    pub command_line: String,
    /// Show an indicatif bar (terminal) instead of one log line per case.
    pub progress_bar: bool,
}

impl RunOptions {
    /// A bar only on an interactive terminal and never under CI.
    pub fn detect_progress() -> bool {
        std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
    }
}

/// What happened, for the closing summary and the overhead benchmark.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub csv: PathBuf,
    pub counts: HashMap<Status, usize>,
    pub skipped_done: usize,
    pub repaired_bytes: u64,
    pub wall_s: f64,
    /// Σ over ok rows of median × repeats: the time spent inside timed kernel calls.
    pub timed_s: f64,
    /// Σ of the time each case spent in its worker / mpirun (mask, inputs, check, warmup, repeats):
    /// `wall_s − case_s` is what the runner itself costs (planning, process start, CSV writes).
    pub case_s: f64,
    /// Σ of the rows' untimed seconds: `setup_s` (mask, inputs, prepare) and `gate_s` (issue 26).
    pub setup_s: f64,
    pub gate_s: f64,
    /// The signal that stopped the run early (its case has no row; `--resume` runs it).
    pub interrupted: Option<i32>,
    /// Cases of the plan that have a row now (this segment's setup), and how many the plan has.
    pub have_rows: usize,
    pub planned: usize,
    /// Segment of the run the new rows belong to.
    pub segment: u32,
}

impl RunSummary {
    pub fn count(&self, s: Status) -> usize {
        self.counts.get(&s).copied().unwrap_or(0)
    }
}

/// Checks that the run directory may be used, before anything is created or touched: not a file, not
/// in use by another runner, and without `--resume` not holding a run's rows already.
pub fn check_out_dir(opts: &RunOptions) -> Result<(), BadInput> {
    if opts.out_dir.exists() && !opts.out_dir.is_dir() {
        return Err(BadInput::new(format!("--out {}: exists and is not a directory", opts.out_dir.display())));
    }
    crate::results::lock::probe(&opts.out_dir)?;
    check_no_rows_unless_resume(opts)
}

/// Without `--resume`, the folder must not hold a run's rows already.
fn check_no_rows_unless_resume(opts: &RunOptions) -> Result<(), BadInput> {
    let csv = opts.out_dir.join("results.csv");
    // A header alone (a run stopped before its first row) is no result to protect.
    let has_rows = std::fs::read_to_string(&csv).map(|t| t.lines().nth(1).is_some()).unwrap_or(false);
    if !opts.resume && has_rows {
        return Err(BadInput::new(format!("{} already has results; pass --resume to continue that run, or choose another --out", opts.out_dir.display())));
    }
    Ok(())
}

/// Runs every case of `plan` not yet in the CSV. Returns once all cases have a row, or early (with
/// `interrupted` set) when SIGINT/SIGTERM/SIGHUP arrives.
pub fn run_plan(plan: &Plan, opts: &RunOptions) -> anyhow::Result<RunSummary> {
    check_out_dir(opts)?;
    let started = Instant::now();
    // The run folder: locked; refusals first, before meta.json or the CSV change (rows already there
    // without --resume — checked again under the lock, another plain run may have written them a
    // moment ago —, a CSV this version cannot append to, a resume of another suite or setup).
    let req = RunRequest { out_dir: &opts.out_dir, resume: opts.resume, new_segment: opts.new_segment, command_line: &opts.command_line };
    let mut folder = RunFolder::open(&opts.out_dir, "results.csv", |csv_path, existing| -> anyhow::Result<MetaDecision> {
        check_no_rows_unless_resume(opts)?;
        super::identity::decide(plan, &req, csv_path, existing)
    })
    .map_err(|e| match e.downcast::<FolderError>() {
        Ok(f) => f.into_cli(),
        Err(other) => other,
    })?;
    signals::install();
    let csv_path = folder.csv_path().to_path_buf();
    let (run_id, segment, measure_id) = (folder.meta.run_id.clone(), folder.segment(), folder.meta.measure_id.clone());
    eprintln!("{}: {} cases → {} (run {run_id}, segment {segment})", plan.name, plan.cases.len(), opts.out_dir.display());
    let repaired = folder.csv.repaired_bytes;
    let mut summary = RunSummary { csv: csv_path.clone(), repaired_bytes: repaired, segment, planned: plan.cases.len(), ..Default::default() };
    if repaired > 0 {
        eprintln!("repaired {}: dropped a torn last line ({} bytes) left by an interrupted run", csv_path.display(), repaired);
    }
    // Only rows measured with this setup count: a case with a row from another setup runs again.
    let same_setup: Vec<Row> = folder.csv.existing.iter().filter(|r| r.measure_id == measure_id).cloned().collect();
    let done: HashSet<String> = same_setup.iter().map(|r| r.case_id.clone()).collect();
    // Lengths at which a (backend, mask, ...) group already ran out of memory, from earlier rows too.
    let mut oom_at: HashMap<String, usize> = HashMap::new();
    for r in &same_setup {
        if r.status == Status::Oom {
            let e = oom_at.entry(oom_group(r)).or_insert(r.seqlen);
            *e = (*e).min(r.seqlen);
        }
    }

    let todo: Vec<&PlannedCase> = plan.cases.iter().filter(|p| !done.contains(&p.case.case_id())).collect();
    summary.skipped_done = plan.cases.len() - todo.len();
    summary.have_rows = summary.skipped_done;
    if summary.skipped_done > 0 {
        eprintln!("resume: {} of {} cases already have rows", summary.skipped_done, plan.cases.len());
    }
    let progress = Progress::new(todo.len(), opts.progress_bar);
    let mut worker: Option<Worker> = None;
    let total = todo.len();
    for (n, pc) in todo.into_iter().enumerate() {
        if let Some(sig) = signals::pending() {
            summary.interrupted = Some(sig);
            break;
        }
        let case = &pc.case;
        progress.start(n, total, case);
        let case_start = Instant::now();
        let outcome = if let Err(reason) = &pc.support {
            Outcome::Row(Box::new(parent_row(&run_id, pc, Status::Unsupported, reason)))
        } else if let Some(&l) = oom_at.get(&oom_group_of_case(case)).filter(|&&l| case.seqlen > l) {
            Outcome::Row(Box::new(parent_row(&run_id, pc, Status::Oom, &format!("skipped: out of memory already at seqlen {l} for this backend and mask"))))
        } else {
            match case.kind {
                CaseKind::Kernel => run_kernel(&mut worker, &run_id, pc, plan, opts.mem_limit),
                CaseKind::Cp => run_cp(&run_id, pc, &plan.settings),
                CaseKind::Simulated => {
                    Outcome::Row(Box::new(parent_row(&run_id, pc, Status::Unsupported, "simulated cases are produced by `attnbench simulate`, not by `run`")))
                }
            }
        };
        summary.case_s += case_start.elapsed().as_secs_f64();
        let mut row = match outcome {
            Outcome::Row(row) => *row,
            Outcome::Interrupted(sig) => {
                // The case was cut short: no row, so a resume runs it again.
                summary.interrupted = Some(sig);
                break;
            }
        };
        if row.status == Status::Oom {
            let e = oom_at.entry(oom_group_of_case(case)).or_insert(case.seqlen);
            *e = (*e).min(case.seqlen);
        }
        folder.append(&mut row).map_err(|e| anyhow::anyhow!("{e}"))?;
        summary.have_rows += 1;
        if row.status == Status::Ok {
            summary.timed_s += row.ms_median.unwrap_or(0.0) * row.repeats.unwrap_or(0) as f64 / 1e3;
        }
        summary.setup_s += row.setup_s.unwrap_or(0.0);
        summary.gate_s += row.gate_s.unwrap_or(0.0);
        *summary.counts.entry(row.status).or_default() += 1;
        progress.finish_case(n, total, case, &row);
    }
    drop(worker);
    progress.done();
    summary.wall_s = started.elapsed().as_secs_f64();
    if summary.interrupted.is_none() && opts.fail_on_wrong && summary.count(Status::Wrong) > 0 {
        return Err(crate::error::CheckFailed(format!("{} case(s) computed a wrong result (see {})", summary.count(Status::Wrong), csv_path.display())).into());
    }
    Ok(summary)
}

/// What running one case gave: its row, or nothing because a signal stopped it.
enum Outcome {
    Row(Box<Row>),
    Interrupted(i32),
}

/// Cases that share everything but the sequence length: an OOM at length L predicts an OOM above L.
/// Keyed on the row's identity columns, so rows read back from an earlier run (resume) and cases of
/// this run produce the same key by construction.
fn oom_group(r: &Row) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}:{}|{}|{}|{}|{}",
        r.kind, r.backend, r.strategy, r.mask, r.mask_params, r.pass, r.dtype, r.heads_q, r.heads_kv, r.head_dim, r.batch, r.world_size, r.strategy_params
    )
}

/// The case's group as its row will have it: the strategy's degrees resolved (`strategy_params`).
fn oom_group_of_case(c: &Case) -> String {
    let mut r = Row::for_case("", c, "");
    r.strategy_params = crate::cp::setup::strategy_params(c);
    oom_group(&r)
}

/// A row the runner writes without running anything (unsupported, skipped, crashed, timed out).
fn parent_row(run_id: &str, pc: &PlannedCase, status: Status, error: &str) -> Row {
    let mut row = Row::for_case(run_id, &pc.case, pc.case.device.name());
    row.strategy_params = crate::cp::setup::strategy_params(&pc.case);
    row.mask_area = pc.area;
    row.density = pc.density;
    row.flops = pc.flops;
    row.fail(status, error);
    row
}

fn run_kernel(worker: &mut Option<Worker>, run_id: &str, pc: &PlannedCase, plan: &Plan, mem_limit: Option<u64>) -> Outcome {
    let settings = &plan.settings;
    // Memory first: a case that cannot fit is an `oom` row before anything is allocated.
    let estimate = memory::estimate(&pc.case, settings, pc.mask_groups);
    let (allowance, source) = memory::host_allowance(mem_limit);
    if let Some(msg) = estimate.over_host(allowance, &source, "the worker") {
        return Outcome::Row(Box::new(parent_row(run_id, pc, Status::Oom, &msg)));
    }
    let item = WorkItem { run_id: run_id.to_string(), case: pc.case.clone(), settings: settings.clone(), external: plan.external.clone() };
    if worker.is_none() {
        match Worker::spawn() {
            Ok(w) => *worker = Some(w),
            Err(e) => return Outcome::Row(Box::new(parent_row(run_id, pc, Status::Error, &format!("cannot start worker: {e:#}")))),
        }
    }
    let w = worker.as_mut().unwrap();
    if estimate.device > 0 {
        if let Some(msg) = memory::device_free_for(w.child.pid()).and_then(|free| estimate.over_device(free, "nvidia-smi, including what the worker holds")) {
            return Outcome::Row(Box::new(parent_row(run_id, pc, Status::Oom, &msg)));
        }
    }
    // Past this cap an allocation fails inside the worker (an `oom` row) instead of the machine running
    // out. A worker we cannot cap still runs the case: the estimate above already held.
    if let Err(e) = memory::cap_worker(w.child.pid(), allowance) {
        eprintln!("warning: could not cap the worker's memory ({e}); running the case uncapped");
    }
    // The worker's own measuring stops at budget_s; the timeout is the hard limit for a hang.
    let grace = if crate::backend::external::is_external(&pc.case.backend) { crate::backend::external::RUNNER_GRACE_S } else { 0.0 };
    let oom_kills = memory::cgroup_oom_kills();
    match w.run(&item, Duration::from_secs_f64(settings.timeout_s + grace)) {
        Ok(mut row) => {
            if row.status == Status::Oom {
                row.error = crate::results::one_line(&format!("{} [worker capped at +{} ({source})]", row.error, memory::human(allowance)));
            }
            if retire_worker_after(&row) {
                // Seen on an H200 (torch 2.11): one kernel's illegal memory access made every later
                // case in the same process fail with the same sticky error. The next case gets a
                // fresh worker, hence a fresh CUDA context; the cost is one start-up after an error.
                worker.take().unwrap().stop();
                row.note = note_join(&row.note, "worker restarted after this error: a CUDA error can leave the context unusable for later cases");
            }
            Outcome::Row(Box::new(row))
        }
        Err(WorkerFailure::Interrupted(sig)) => {
            worker.take().unwrap().stop();
            Outcome::Interrupted(sig)
        }
        Err(failure) => {
            let old = worker.take().unwrap();
            let (mut status, mut msg) = old.kill_and_explain(&failure);
            // A worker that died while the cgroup's OOM killer killed something was killed by the
            // job's or container's memory limit, below what the machine has: an `oom`.
            if matches!(failure, WorkerFailure::Died)
                && status == Status::Error
                && matches!((oom_kills, memory::cgroup_oom_kills()), (Some(a), Some(b)) if b > a)
            {
                status = Status::Oom;
                msg = format!("{msg}: killed by the memory limit of its cgroup (the kernel's oom_kill count rose during the case)");
            }
            if status == Status::Oom {
                msg = format!("{msg} [worker capped at +{} ({source})]", memory::human(allowance));
            }
            Outcome::Row(Box::new(parent_row(run_id, pc, status, &msg)))
        }
    }
}

/// Whether the worker that produced `row` must not run another case: an `error` on a CUDA device. A
/// sticky CUDA error (illegal address, launch failure, device-side assert) poisons the process's
/// context for good, and from the message alone it cannot be told apart from a harmless one, so every
/// CUDA error retires the worker. CPU errors leave the worker as it was.
fn retire_worker_after(row: &Row) -> bool {
    row.status == Status::Error && row.device.starts_with("cuda")
}

fn note_join(note: &str, more: &str) -> String {
    if note.is_empty() {
        more.to_string()
    } else {
        format!("{note}; {more}")
    }
}

#[derive(Debug)]
enum WorkerFailure {
    Timeout,
    Died,
    Protocol(String),
    Interrupted(i32),
}

/// A running `attnbench worker` child, leader of its own process group.
struct Worker {
    child: LineChild,
}

impl Worker {
    fn spawn() -> anyhow::Result<Worker> {
        let exe = std::env::current_exe().context("locating the attnbench binary")?;
        let mut cmd = Command::new(&exe);
        cmd.arg("worker");
        // The worker dies with the runner, however the runner dies (SIGKILL: it holds no one else).
        let child = LineChild::spawn(cmd, ROW_PREFIX, libc::SIGKILL).with_context(|| format!("spawning {} worker", exe.display()))?;
        Ok(Worker { child })
    }

    /// Sends one case and waits for its row, the timeout, the worker's death or a signal to the runner.
    fn run(&mut self, item: &WorkItem, timeout: Duration) -> Result<Row, WorkerFailure> {
        let line = serde_json::to_string(item).map_err(|e| WorkerFailure::Protocol(e.to_string()))?;
        if self.child.send_line(&line).is_err() {
            return Err(WorkerFailure::Died);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.child.recv(left.min(signals::POLL)) {
                Recv::Line(json) => {
                    return serde_json::from_str::<Row>(&json).map_err(|e| {
                        let shown: String = json.chars().take(120).collect();
                        WorkerFailure::Protocol(format!("unreadable row from worker ({e}): {shown}"))
                    })
                }
                Recv::Eof => return Err(WorkerFailure::Died),
                Recv::Timeout => {
                    if let Some(sig) = signals::pending() {
                        return Err(WorkerFailure::Interrupted(sig));
                    }
                    if Instant::now() >= deadline {
                        return Err(WorkerFailure::Timeout);
                    }
                }
            }
        }
    }

    /// Kills the worker's process group and reaps the worker.
    fn stop(mut self) {
        self.child.stop(Duration::ZERO);
    }

    /// Kills the worker and turns what it left behind into the row's status and one line for `error`.
    /// A worker killed by its own allocation failure (Rust's allocator abort, C++ `std::bad_alloc`,
    /// past the memory cap) is `oom`.
    fn kill_and_explain(mut self, failure: &WorkerFailure) -> (Status, String) {
        // The exit status of a worker that died on its own (its stdout closes just before it exits),
        // then stop whatever is left of its group.
        let status = match failure {
            WorkerFailure::Died => self.child.exit_status(Duration::from_secs(2)),
            _ => None,
        };
        self.child.stop(Duration::ZERO);
        let stderr = self.child.stderr_text();
        let tail = crate::child::tail(&stderr);
        let (st, how) = match failure {
            WorkerFailure::Timeout => (Status::Timeout, "exceeded the per-case timeout (measure.timeout_s); worker killed".to_string()),
            WorkerFailure::Protocol(m) => (Status::Error, m.clone()),
            WorkerFailure::Interrupted(sig) => (Status::Error, format!("stopped by {}", signals::name(*sig))),
            WorkerFailure::Died => {
                let how = format!("worker {}", describe_exit(status));
                match memory::allocation_failure_line(&stderr) {
                    Some(line) => return (Status::Oom, format!("{how}: allocation failed ({line})")),
                    None => (Status::Error, how),
                }
            }
        };
        if tail.is_empty() {
            (st, how)
        } else {
            (st, format!("{how}; stderr: {tail}"))
        }
    }
}

/// The command that runs one CP case, handed over as data: the case and settings are written to
/// `work` (the kernel worker's JSON item) and every rank reads it — `mpirun -np W attnbench cp --work
/// FILE --json` when this binary has MPI, else the in-process local world (`attnbench cp --comm local
/// --world W`), which runs the same strategies with one thread per rank.
pub fn cp_command(item: &WorkItem, work: &Path) -> anyhow::Result<Command> {
    std::fs::write(work, serde_json::to_string(item)?).with_context(|| format!("writing {}", work.display()))?;
    let exe = std::env::current_exe()?;
    let case = &item.case;
    let mut cmd = if cfg!(feature = "mpi") {
        let mpirun = std::env::var("ATTNBENCH_MPIRUN").unwrap_or_else(|_| "mpirun".into());
        let mut cmd = Command::new(mpirun);
        cmd.args(["-np", &case.world_size.to_string()]);
        cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1").env("OMPI_MCA_rmaps_base_oversubscribe", "1");
        cmd.arg(exe).arg("cp");
        cmd.args(["--comm", if case.device == crate::case::DeviceKind::Cuda { "nccl" } else { "mpi" }]);
        cmd
    } else {
        let mut cmd = Command::new(exe);
        cmd.arg("cp").args(["--comm", "local", "--world", &case.world_size.to_string()]);
        cmd
    };
    cmd.arg("--work").arg(work).arg("--json");
    Ok(cmd)
}

fn run_cp(run_id: &str, pc: &PlannedCase, settings: &MeasureSettings) -> Outcome {
    let item = WorkItem { run_id: run_id.to_string(), case: pc.case.clone(), settings: settings.clone(), external: Default::default() };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return Outcome::Row(Box::new(parent_row(run_id, pc, Status::Error, &format!("cannot create a temporary folder for the work item: {e}")))),
    };
    let cmd = match cp_command(&item, &dir.path().join("work.json")) {
        Ok(c) => c,
        Err(e) => return Outcome::Row(Box::new(parent_row(run_id, pc, Status::Error, &format!("{e:#}")))),
    };
    Outcome::Row(Box::new(match run_with_timeout(cmd, Duration::from_secs_f64(settings.timeout_s)) {
        Ok((true, stdout, _)) | Ok((false, stdout, _)) if stdout.lines().any(|l| l.trim_start().starts_with('{')) => {
            let json = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap();
            match serde_json::from_str::<Row>(json) {
                Ok(mut row) => {
                    row.case_id = pc.case.case_id();
                    row
                }
                Err(e) => parent_row(run_id, pc, Status::Error, &format!("unreadable row from `attnbench cp`: {e}")),
            }
        }
        Ok((_, _, stderr)) => {
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            parent_row(run_id, pc, Status::Error, &format!("mpirun failed: {}", tail[tail.len().saturating_sub(3)..].join(" | ")))
        }
        Err(RunFailure::Timeout) => parent_row(run_id, pc, Status::Timeout, "exceeded the per-case timeout (measure.timeout_s); mpirun killed"),
        Err(RunFailure::Spawn(e)) => parent_row(run_id, pc, Status::Error, &format!("cannot start mpirun: {e}")),
        Err(RunFailure::Interrupted(sig)) => return Outcome::Interrupted(sig),
    }))
}

enum RunFailure {
    Timeout,
    Spawn(String),
    Interrupted(i32),
}

/// How long `mpirun` gets after SIGTERM to take its ranks down before its group is SIGKILLed (Open MPI
/// gives every rank a process group of its own, so killing mpirun's group does not reach them).
const MPIRUN_GRACE: Duration = Duration::from_secs(2);

/// Runs a command to completion or stops it (and its process group: `mpirun` and its ranks) at
/// `timeout` or when the runner gets a signal. The command dies with the runner (SIGTERM, so that
/// `mpirun` can stop its ranks).
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<(bool, String, String), RunFailure> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
    let runner = std::process::id() as libc::pid_t;
    // SAFETY: die_with_parent only makes async-signal-safe calls.
    unsafe { cmd.pre_exec(move || crate::child::die_with_parent(runner, libc::SIGTERM)) };
    let mut child = cmd.spawn().map_err(|e| RunFailure::Spawn(e.to_string()))?;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status.success(), t_out.join().unwrap_or_default(), t_err.join().unwrap_or_default())),
            Ok(None) if start.elapsed() > timeout => {
                // SIGTERM first: Open MPI puts each rank in a process group of its own, so only
                // mpirun itself can take them down; a SIGKILLed mpirun would orphan them.
                crate::child::stop_group(&mut child, MPIRUN_GRACE);
                return Err(RunFailure::Timeout);
            }
            Ok(None) => {
                if let Some(sig) = signals::pending() {
                    crate::child::stop_group(&mut child, MPIRUN_GRACE);
                    return Err(RunFailure::Interrupted(sig));
                }
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(RunFailure::Spawn(e.to_string())),
        }
    }
}

/// Progress display: an indicatif bar on a terminal, one plain line per case otherwise.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(total: usize, bar: bool) -> Progress {
        if !bar {
            return Progress { bar: None };
        }
        let pb = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        pb.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise} ETA {eta}] {msg}").unwrap());
        Progress { bar: Some(pb) }
    }

    fn start(&self, _n: usize, _total: usize, case: &Case) {
        if let Some(pb) = &self.bar {
            pb.set_message(case.label());
        }
    }

    fn finish_case(&self, n: usize, total: usize, case: &Case, row: &Row) {
        let width = total.to_string().len();
        let result = match (row.status, row.ms_median, row.tflops) {
            (Status::Ok, Some(ms), Some(t)) => format!("ok {ms:>10.3} ms {t:>8.3} TFLOPS"),
            (s, _, _) => format!("{s} {}", short(&row.error, 90)),
        };
        let line = format!("[{:>width$}/{total}] {} → {result}", n + 1, case.label());
        match &self.bar {
            Some(pb) => {
                pb.println(line);
                pb.inc(1);
            }
            None => eprintln!("{line}"),
        }
    }

    fn done(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};

    fn row(device: DeviceKind, status: Status) -> Row {
        let case =
            Case::kernel("sdpa-flash", "causal", Default::default(), 1024, HeadLayout { q: 8, kv: 2 }, 128, DType::Bf16, crate::flops::Pass::Bwd, device);
        let mut r = Row::for_case("t", &case, case.device.name());
        r.status = status;
        r
    }

    #[test]
    fn a_cuda_error_retires_the_worker_and_nothing_else_does() {
        assert!(retire_worker_after(&row(DeviceKind::Cuda, Status::Error)));
        for s in [Status::Ok, Status::Wrong, Status::Unsupported, Status::Oom, Status::Timeout] {
            assert!(!retire_worker_after(&row(DeviceKind::Cuda, s)), "{s}");
        }
        assert!(!retire_worker_after(&row(DeviceKind::Cpu, Status::Error)));
        assert_eq!(note_join("", "b"), "b");
        assert_eq!(note_join("a", "b"), "a; b");
    }
}
