//! The runner: executes a plan case by case, appending each row to `results.csv` (flushed and synced
//! before the next case starts), with resume, per-case timeouts, crash isolation (kernel cases run in
//! a worker process; CP cases under `mpirun`), OOM skipping and a progress display.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::plan::{Plan, PlannedCase};
use super::worker::{WorkItem, ROW_PREFIX};
use crate::case::{Case, CaseKind};
use crate::error::BadInput;
use crate::measure::MeasureSettings;
use crate::results::{CsvAppender, Row, RunMeta, Status};

/// Options of one `attnbench run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out_dir: PathBuf,
    pub resume: bool,
    pub fail_on_wrong: bool,
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
}

impl RunSummary {
    pub fn count(&self, s: Status) -> usize {
        self.counts.get(&s).copied().unwrap_or(0)
    }
}

/// Checks that the run directory may be used, before anything is created or touched.
pub fn check_out_dir(opts: &RunOptions) -> Result<(), BadInput> {
    let csv = opts.out_dir.join("results.csv");
    if !opts.resume && csv.exists() && std::fs::metadata(&csv).map(|m| m.len() > 0).unwrap_or(false) {
        return Err(BadInput::new(format!("{} already has results; pass --resume to continue that run, or choose another --out", opts.out_dir.display())));
    }
    if opts.out_dir.exists() && !opts.out_dir.is_dir() {
        return Err(BadInput::new(format!("--out {}: exists and is not a directory", opts.out_dir.display())));
    }
    Ok(())
}

/// Runs every case of `plan` not yet in the CSV. Returns once all cases have a row.
pub fn run_plan(plan: &Plan, opts: &RunOptions) -> anyhow::Result<RunSummary> {
    check_out_dir(opts)?;
    let started = Instant::now();
    std::fs::create_dir_all(&opts.out_dir).with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let meta_path = opts.out_dir.join("meta.json");
    let run_id = if opts.resume && meta_path.exists() {
        let text = std::fs::read_to_string(&meta_path)?;
        serde_json::from_str::<RunMeta>(&text).map(|m| m.run_id).unwrap_or_else(|_| new_run_id(&plan.name))
    } else {
        let meta = build_meta(plan, opts, &new_run_id(&plan.name));
        std::fs::write(&meta_path, serde_json::to_string_pretty(&meta)? + "\n")?;
        meta.run_id
    };

    let csv_path = opts.out_dir.join("results.csv");
    let mut csv = CsvAppender::open(&csv_path)?;
    let done: HashSet<String> = csv.existing.iter().map(|r| r.case_id.clone()).collect();
    let mut summary = RunSummary { csv: csv_path.clone(), repaired_bytes: csv.repaired_bytes, ..Default::default() };
    if csv.repaired_bytes > 0 {
        eprintln!("repaired {}: dropped a torn last line ({} bytes) left by an interrupted run", csv_path.display(), csv.repaired_bytes);
    }
    // Lengths at which a (backend, mask, ...) group already ran out of memory, from earlier rows too.
    let mut oom_at: HashMap<String, usize> = HashMap::new();
    for r in &csv.existing {
        if r.status == Status::Oom {
            let e = oom_at.entry(oom_group(r)).or_insert(r.seqlen);
            *e = (*e).min(r.seqlen);
        }
    }

    let todo: Vec<&PlannedCase> = plan.cases.iter().filter(|p| !done.contains(&p.case.case_id())).collect();
    summary.skipped_done = plan.cases.len() - todo.len();
    if summary.skipped_done > 0 {
        eprintln!("resume: {} of {} cases already have rows", summary.skipped_done, plan.cases.len());
    }
    let progress = Progress::new(todo.len(), opts.progress_bar);
    let mut worker: Option<Worker> = None;
    let total = todo.len();
    for (n, pc) in todo.into_iter().enumerate() {
        let case = &pc.case;
        progress.start(n, total, case);
        let case_start = Instant::now();
        let mut row = if let Err(reason) = &pc.support {
            parent_row(&run_id, pc, Status::Unsupported, reason)
        } else if let Some(&l) = oom_at.get(&oom_group_of_case(case)).filter(|&&l| case.seqlen > l) {
            parent_row(&run_id, pc, Status::Oom, &format!("skipped: out of memory already at seqlen {l} for this backend and mask"))
        } else {
            match case.kind {
                CaseKind::Kernel => run_kernel(&mut worker, &run_id, pc, &plan.settings),
                CaseKind::Cp => run_cp(&run_id, pc, &plan.settings),
                CaseKind::Simulated => parent_row(&run_id, pc, Status::Unsupported, "simulated cases are produced by `attnbench simulate`, not by `run`"),
            }
        };
        summary.case_s += case_start.elapsed().as_secs_f64();
        row.run_id = run_id.clone();
        if row.status == Status::Oom {
            let e = oom_at.entry(oom_group_of_case(case)).or_insert(case.seqlen);
            *e = (*e).min(case.seqlen);
        }
        csv.append(&row)?;
        if row.status == Status::Ok {
            summary.timed_s += row.ms_median.unwrap_or(0.0) * row.repeats.unwrap_or(0) as f64 / 1e3;
        }
        *summary.counts.entry(row.status).or_default() += 1;
        progress.finish_case(n, total, case, &row);
    }
    drop(worker);
    progress.done();
    summary.wall_s = started.elapsed().as_secs_f64();
    if opts.fail_on_wrong && summary.count(Status::Wrong) > 0 {
        return Err(crate::error::CheckFailed(format!("{} case(s) computed a wrong result (see {})", summary.count(Status::Wrong), csv_path.display())).into());
    }
    Ok(summary)
}

fn new_run_id(name: &str) -> String {
    format!("{}-{}", name, chrono::Utc::now().format("%Y%m%d-%H%M%S"))
}

fn build_meta(plan: &Plan, opts: &RunOptions, run_id: &str) -> RunMeta {
    let mut meta = RunMeta {
        run_id: run_id.to_string(),
        started_utc: chrono::Utc::now().to_rfc3339(),
        attnbench_version: env!("CARGO_PKG_VERSION").to_string(),
        suite_file: plan.file.display().to_string(),
        suite_sha256: plan.sha256.clone(),
        command_line: opts.command_line.clone(),
        settings: serde_json::to_value(&plan.settings).unwrap_or_default(),
        ..Default::default()
    };
    crate::envinfo::fill_meta(&mut meta);
    meta
}

/// Cases that share everything but the sequence length: an OOM at length L predicts an OOM above L.
/// Keyed on the row's identity columns, so rows read back from an earlier run (resume) and cases of
/// this run produce the same key by construction.
fn oom_group(r: &Row) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}:{}|{}|{}|{}",
        r.kind, r.backend, r.strategy, r.mask, r.mask_params, r.pass, r.dtype, r.heads_q, r.heads_kv, r.head_dim, r.batch, r.world_size
    )
}

fn oom_group_of_case(c: &Case) -> String {
    oom_group(&Row::for_case("", c, ""))
}

/// A row the runner writes without running anything (unsupported, skipped, crashed, timed out).
fn parent_row(run_id: &str, pc: &PlannedCase, status: Status, error: &str) -> Row {
    let mut row = Row::for_case(run_id, &pc.case, pc.case.device.name());
    row.mask_area = pc.area;
    row.density = pc.density;
    row.flops = pc.flops;
    row.fail(status, error);
    row
}

fn run_kernel(worker: &mut Option<Worker>, run_id: &str, pc: &PlannedCase, settings: &MeasureSettings) -> Row {
    let item = WorkItem { run_id: run_id.to_string(), case: pc.case.clone(), settings: settings.clone() };
    if worker.is_none() {
        match Worker::spawn() {
            Ok(w) => *worker = Some(w),
            Err(e) => return parent_row(run_id, pc, Status::Error, &format!("cannot start worker: {e:#}")),
        }
    }
    let w = worker.as_mut().unwrap();
    // The worker's own measuring stops at budget_s; the timeout is the hard limit for a hang.
    match w.run(&item, Duration::from_secs_f64(settings.timeout_s)) {
        Ok(row) => row,
        Err(failure) => {
            let old = worker.take().unwrap();
            let msg = old.kill_and_explain(&failure);
            let status = if matches!(failure, WorkerFailure::Timeout) { Status::Timeout } else { Status::Error };
            parent_row(run_id, pc, status, &msg)
        }
    }
}

#[derive(Debug)]
enum WorkerFailure {
    Timeout,
    Died,
    Protocol(String),
}

/// A running `attnbench worker` child.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    rows: Receiver<String>,
    stderr_path: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl Worker {
    fn spawn() -> anyhow::Result<Worker> {
        let exe = std::env::current_exe().context("locating the attnbench binary")?;
        let dir = tempfile::tempdir()?;
        let stderr_path = dir.path().join("worker.stderr");
        let stderr = std::fs::File::create(&stderr_path)?;
        let mut child =
            Command::new(exe).arg("worker").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr).spawn().context("spawning attnbench worker")?;
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(json) = line.strip_prefix(ROW_PREFIX) {
                    if tx.send(json.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Worker { child, stdin, rows: rx, stderr_path, _stderr_dir: dir })
    }

    fn run(&mut self, item: &WorkItem, timeout: Duration) -> Result<Row, WorkerFailure> {
        let line = serde_json::to_string(item).map_err(|e| WorkerFailure::Protocol(e.to_string()))?;
        if writeln!(self.stdin, "{line}").and_then(|_| self.stdin.flush()).is_err() {
            return Err(WorkerFailure::Died);
        }
        match self.rows.recv_timeout(timeout) {
            Ok(json) => serde_json::from_str::<Row>(&json).map_err(|e| WorkerFailure::Protocol(format!("unreadable row from worker: {e}"))),
            Err(RecvTimeoutError::Timeout) => Err(WorkerFailure::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(WorkerFailure::Died),
        }
    }

    /// Kills the worker and turns what it left behind into one line for the row's `error`.
    fn kill_and_explain(mut self, failure: &WorkerFailure) -> String {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        let tail = stderr_tail(&self.stderr_path);
        let how = match failure {
            WorkerFailure::Timeout => "exceeded the per-case timeout (measure.timeout_s); worker killed".to_string(),
            WorkerFailure::Protocol(m) => m.clone(),
            WorkerFailure::Died => {
                use std::os::unix::process::ExitStatusExt;
                match status {
                    Some(s) if s.signal().is_some() => format!("worker died with signal {}", s.signal().unwrap()),
                    Some(s) => format!("worker exited with {s}"),
                    None => "worker died".into(),
                }
            }
        };
        if tail.is_empty() {
            how
        } else {
            format!("{how}; stderr: {tail}")
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
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

fn run_cp(run_id: &str, pc: &PlannedCase, settings: &MeasureSettings) -> Row {
    let item = WorkItem { run_id: run_id.to_string(), case: pc.case.clone(), settings: settings.clone() };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return parent_row(run_id, pc, Status::Error, &format!("cannot create a temporary folder for the work item: {e}")),
    };
    let cmd = match cp_command(&item, &dir.path().join("work.json")) {
        Ok(c) => c,
        Err(e) => return parent_row(run_id, pc, Status::Error, &format!("{e:#}")),
    };
    match run_with_timeout(cmd, Duration::from_secs_f64(settings.timeout_s)) {
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
    }
}

enum RunFailure {
    Timeout,
    Spawn(String),
}

/// Runs a command to completion or kills it (and its process group) at `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<(bool, String, String), RunFailure> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
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
                // Kill the whole group: mpirun and its ranks.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(RunFailure::Timeout);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
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
