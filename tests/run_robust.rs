//! A night-long sweep that cannot be fooled, through the real binary: one runner per folder (lock),
//! resume only of the same run (refusal with a diff, segments), memory before the OOM killer (estimate
//! and capped worker → `oom` rows), signals (SIGTERM/SIGINT stop a hung worker, no orphans, a
//! SIGKILLed runner takes its worker along), a torn or empty meta.json repaired on resume.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attnbench"));
    c.env("ATTNBENCH_FAULTS", "1").env("CI", "1");
    c
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Rows as maps column → value.
fn rows(csv: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(csv).unwrap();
    let h: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records().map(|x| h.iter().cloned().zip(x.unwrap().iter().map(String::from)).collect()).collect()
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap()
}

/// One line on stderr (the rule for every bad input), exit 2.
fn assert_refused(o: &Output, fragments: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code, stderr: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    for f in fragments {
        assert!(e.contains(f), "expected `{f}` in: {e}");
    }
}

/// A tiny kernel suite: naive causal at the given lengths, fwd and bwd (2 cases per length).
fn tiny_suite(seqlens: &str, repeats: usize) -> String {
    format!(
        "name = \"tiny\"\n[measure]\nwarmup = 0\nrepeats = {repeats}\n\n[[grid]]\npatterns = [\"causal\"]\nseqlens = {seqlens}\nheads = [\"1:1\"]\nhead_dims = [8]\ndtypes = [\"fp32\"]\npasses = [\"fwd\", \"bwd\"]\nbackends = [\"naive\"]\n"
    )
}

/// A suite whose first case leaves a row (a crashing worker) and whose second hangs until killed.
const HANG_AFTER_ONE_ROW: &str = "[measure]\nwarmup = 0\nrepeats = 1\ntimeout_s = 120\n\n[[grid]]\npatterns = [\"causal\"]\nseqlens = [64]\nheads = [\"1:1\"]\nhead_dims = [8]\ndtypes = [\"fp32\"]\nbackends = [\"fault-crash\", \"fault-hang\"]\n";

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn csv_lines(csv: &Path) -> usize {
    std::fs::read_to_string(csv).map(|t| t.lines().count()).unwrap_or(0)
}

/// Children of `pid` whose command line contains `needle`.
fn children(pid: u32, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        // pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
        let rest = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
        let ppid: u32 = rest.split(' ').nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default().replace('\0', " ");
        if ppid == pid && cmd.contains(needle) {
            out.push(p);
        }
    }
    out
}

/// Gone, or a zombie nobody reaps (in a container without an init that reaps): either way not running.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'),
    }
}

/// Starts `attnbench run` in its own process group (no terminal, like a sweep under nohup or CI).
fn spawn_run(args: &[&std::ffi::OsStr], envs: &[(&str, &std::ffi::OsStr)]) -> Child {
    use std::os::unix::process::CommandExt;
    let mut c = bin();
    c.arg("run").args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn signal(pid: u32, sig: i32) {
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn a_second_runner_is_refused_naming_the_holder_and_simultaneous_runs_never_both_run() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = write(&tmp.path().join("hang.toml"), HANG_AFTER_ONE_ROW);
    let out = tmp.path().join("run");
    let first = spawn_run(&[suite.as_os_str(), "--out".as_ref(), out.as_os_str()], &[]);
    let lock = out.join("attnbench.lock");
    wait_until("the first runner's lock", || std::fs::read_to_string(&lock).map(|t| t.contains("pid")).unwrap_or(false));
    let holder = format!("pid {}", first.id());
    for extra in [&["--resume"][..], &[][..]] {
        let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).args(extra).output().unwrap();
        assert_refused(&o, &["in use by", &holder, "attnbench.lock"]);
    }
    signal(first.id(), libc::SIGTERM);
    let o = first.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));

    // Two plain runs started at the same instant: exactly one runs, the other says why (exit 2).
    let quick = write(
        &tmp.path().join("quick.toml"),
        "[[grid]]\npatterns = [\"causal\", \"full\"]\nseqlens = [64, 128]\nheads = [\"1:1\"]\nhead_dims = [8]\ndtypes = [\"fp32\"]\nbackends = [\"sdpa-efficient\"]\n",
    );
    for i in 0..4 {
        let dir = tmp.path().join(format!("race{i}"));
        let go = |d: &Path| bin().arg("run").arg(&quick).arg("--out").arg(d).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let (a, b) = (go(&dir), go(&dir));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let mut codes = [a.status.code(), b.status.code()];
        codes.sort();
        assert_eq!(codes, [Some(0), Some(2)], "try {i}: {} | {}", stderr(&a), stderr(&b));
        assert_eq!(rows(&dir.join("results.csv")).len(), 4, "try {i}: one run's rows, once");
    }
}

#[test]
fn resume_refuses_a_changed_suite_with_a_diff_and_new_segment_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("tiny.toml");
    let out = tmp.path().join("run");
    let csv = out.join("results.csv");
    write(&suite, &tiny_suite("[32]", 2));
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = std::fs::read(&csv).unwrap();
    let first_id = meta(&out)["measure_id"].as_str().unwrap().to_string();
    assert_eq!(first_id.len(), 16);
    assert!(rows(&csv).iter().all(|r| r["segment"] == "1" && r["measure_id"] == first_id));

    // A new length: refused with the key that changed, nothing written.
    write(&suite, &tiny_suite("[32, 48]", 2));
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).arg("--resume").output().unwrap();
    assert_refused(&o, &["refusing to resume", "grid[0].seqlens: [32] → [32, 48]", "--new-segment"]);
    assert_eq!(std::fs::read(&csv).unwrap(), before);
    // And the repeats too: both named.
    write(&suite, &tiny_suite("[32, 48]", 3));
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).arg("--resume").output().unwrap();
    assert_refused(&o, &["measure.repeats: 2 → 3", "grid[0].seqlens"]);

    // Only the length changed: a new segment runs just the new cases, under the same measure_id.
    write(&suite, &tiny_suite("[32, 48]", 2));
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).args(["--resume", "--new-segment"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = rows(&csv);
    assert_eq!(r.len(), 4);
    assert_eq!(r.iter().filter(|r| r["segment"] == "2").map(|r| r["seqlen"].as_str()).collect::<Vec<_>>(), ["48", "48"]);
    let m = meta(&out);
    let segs = m["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[1]["segment"], 2);
    assert!(segs[1]["changed"].as_str().unwrap().contains("grid[0].seqlens"), "{}", segs[1]);
    assert!(m["suite_toml"].as_str().unwrap().contains("[32, 48]"), "meta.json describes the latest segment");
    // Same suite again: nothing to do, no new segment.
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).arg("--resume").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(rows(&csv).len(), 4);

    // A changed measurement setting changes every case's identity: all of them run again.
    write(&suite, &tiny_suite("[32, 48]", 3));
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).args(["--resume", "--new-segment"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = rows(&csv);
    assert_eq!(r.len(), 8);
    let third: Vec<_> = r.iter().filter(|r| r["segment"] == "3").collect();
    assert_eq!(third.len(), 4);
    assert!(third.iter().all(|r| r["measure_id"] != first_id && r["repeats"] == "3"));
    let case_ids = |seg: &str| {
        let mut v: Vec<String> = r.iter().filter(|x| x["segment"] != seg).map(|x| x["case_id"].clone()).collect();
        v.sort();
        v
    };
    let mut again: Vec<String> = third.iter().map(|x| x["case_id"].clone()).collect();
    again.sort();
    assert_eq!(case_ids("3"), again, "case_id stays what is computed, so compare still joins");

    // Another suite is never resumed into this folder, with or without --new-segment.
    let other = write(&tmp.path().join("other.toml"), &tiny_suite("[32]", 2).replace("name = \"tiny\"", "name = \"other\""));
    for extra in [&["--resume"][..], &["--resume", "--new-segment"][..]] {
        let o = bin().arg("run").arg(&other).arg("--out").arg(&out).args(extra).output().unwrap();
        assert_refused(&o, &["suite `tiny`", "suite `other`", "different suite"]);
    }
    assert_eq!(rows(&csv).len(), 8);
    // --new-segment alone is a usage error.
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).arg("--new-segment").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn an_empty_meta_json_is_repaired_on_resume_and_a_foreign_csv_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = write(&tmp.path().join("tiny.toml"), &tiny_suite("[32]", 1));
    // A full disk at start used to leave this: an empty meta.json and nothing else.
    let out = tmp.path().join("run");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("meta.json"), "").unwrap();
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).arg("--resume").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("repaired"), "{}", stderr(&o));
    let run_id = meta(&out)["run_id"].as_str().unwrap().to_string();
    assert_eq!(rows(&out.join("results.csv")).len(), 2);
    // Emptied again with rows present: rebuilt under the rows' run id, nothing re-run.
    std::fs::write(out.join("meta.json"), "").unwrap();
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).arg("--resume").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(meta(&out)["run_id"], run_id.as_str());
    assert_eq!(rows(&out.join("results.csv")).len(), 2);
    assert!(!out.join("meta.json.tmp").exists());

    // A CSV from an attnbench with other columns cannot be appended to: one line naming it, exit 2.
    let old = tmp.path().join("old");
    std::fs::create_dir(&old).unwrap();
    let text = std::fs::read_to_string(out.join("results.csv")).unwrap();
    // Drop `measure_id` and every column after it (newer than that attnbench), counted from the right
    // so that quoted commas in earlier columns (the note) do not matter.
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let n = header.len() - header.iter().position(|c| *c == "measure_id").unwrap();
    let stripped: String = text.lines().map(|l| l.rsplitn(n + 1, ',').nth(n).unwrap().to_string() + "\n").collect();
    std::fs::write(old.join("results.csv"), stripped).unwrap();
    std::fs::copy(out.join("meta.json"), old.join("meta.json")).unwrap();
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&old).arg("--resume").output().unwrap();
    // The message names the two stripped columns (the last two of today's header, whichever they are).
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    assert_refused(&o, &["results.csv", "another attnbench version", header[header.len() - 2], header[header.len() - 1]]);
}

#[test]
fn cases_that_cannot_fit_are_oom_rows_by_estimate_or_by_the_capped_worker() {
    let tmp = tempfile::tempdir().unwrap();
    // naive at S = 65536, 4:2 fp32 (the issue's case: 23.8 GB and the OOM killer) is refused by its
    // estimate, 131072 is skipped after it; the fault backends allocate past the 512 MiB cap through
    // libtorch (an allocator error inside the worker) and through Rust's allocator (the worker aborts).
    let suite = write(
        &tmp.path().join("oom.toml"),
        "[measure]\nwarmup = 0\nrepeats = 1\n\n[[grid]]\npatterns = [\"causal\"]\nseqlens = [64, 65536, 131072]\nheads = [\"4:2\"]\nhead_dims = [16]\n\
         dtypes = [\"fp32\"]\nbackends = [\"naive\"]\n\n[[grid]]\npatterns = [\"causal\"]\nseqlens = [64]\nheads = [\"1:1\"]\nhead_dims = [8]\n\
         dtypes = [\"fp32\"]\nbackends = [\"fault-oom-torch\", \"fault-oom-rust\", \"sliced\"]\n",
    );
    let out = tmp.path().join("run");
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).args(["--mem-limit", "512M"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = rows(&out.join("results.csv"));
    assert_eq!(r.len(), 6);
    let row = |b: &str, s: &str| r.iter().find(|x| x["backend"] == b && x["seqlen"] == s).unwrap_or_else(|| panic!("row {b} {s}"));
    let (st, err) = (&row("naive", "65536")["status"], &row("naive", "65536")["error"]);
    assert_eq!(st, "oom", "{err}");
    assert!(err.contains("not run: estimated peak") && err.contains("scores 128.0 GiB") && err.contains("--mem-limit 512.0 MiB"), "{err}");
    assert!(row("naive", "131072")["error"].contains("skipped: out of memory already at seqlen 65536"));
    let torch = &row("fault-oom-torch", "64");
    assert_eq!(torch["status"], "oom", "{}", torch["error"]);
    assert!(torch["error"].contains("can't allocate memory") && torch["error"].contains("worker capped at +512.0 MiB"), "{}", torch["error"]);
    let rust = &row("fault-oom-rust", "64");
    assert_eq!(rust["status"], "oom", "{}", rust["error"]);
    assert!(rust["error"].contains("signal 6") && rust["error"].contains("memory allocation of"), "{}", rust["error"]);
    // The sweep goes on after both, in a fresh worker, and ordinary cases run under the cap.
    assert_eq!(row("naive", "64")["status"], "ok", "{}", row("naive", "64")["error"]);
    assert_eq!(row("sliced", "64")["status"], "ok", "{}", row("sliced", "64")["error"]);
    assert!(r.iter().all(|x| !x["error"].contains("signal 9")), "never the OOM killer");
    // Bad --mem-limit values are usage errors.
    for bad in ["lots", "0", "5X"] {
        let o = bin().arg("run").arg(&suite).arg("--out").arg(tmp.path().join("x")).args(["--mem-limit", bad]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
}

#[test]
fn sigterm_and_sigint_stop_a_hung_worker_write_nothing_partial_and_say_how_to_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = write(&tmp.path().join("hang.toml"), HANG_AFTER_ONE_ROW);
    for (sig, code, name) in [(libc::SIGTERM, 143, "SIGTERM"), (libc::SIGINT, 130, "SIGINT")] {
        let out = tmp.path().join(name);
        let csv = out.join("results.csv");
        let runner = spawn_run(&[suite.as_os_str(), "--out".as_ref(), out.as_os_str()], &[]);
        // The crash row is written, then the second worker is on the hanging case.
        wait_until("the first row", || csv_lines(&csv) == 2);
        let mut worker = Vec::new();
        wait_until("the worker of the hanging case", || {
            worker = children(runner.id(), "worker");
            !worker.is_empty()
        });
        std::thread::sleep(Duration::from_millis(200));
        signal(runner.id(), sig);
        let o = runner.wait_with_output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{name}: {e}");
        assert!(e.contains(&format!("interrupted by {name}")) && e.contains("1 of 2 cases have rows"), "{e}");
        assert!(e.contains(&format!("--out {} --resume", out.display())), "{e}");
        assert!(worker.iter().all(|&p| is_dead(p)), "{name}: worker {worker:?} outlived the runner");
        let r = rows(&csv);
        assert_eq!(r.len(), 1, "no row for the interrupted case");
        assert_eq!(r[0]["backend"], "fault-crash");
    }
}

#[test]
fn a_sigkilled_runner_takes_its_worker_down() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = write(&tmp.path().join("hang.toml"), HANG_AFTER_ONE_ROW);
    let out = tmp.path().join("run");
    let mut runner = spawn_run(&[suite.as_os_str(), "--out".as_ref(), out.as_os_str()], &[]);
    wait_until("the first row", || csv_lines(&out.join("results.csv")) == 2);
    let mut worker = Vec::new();
    wait_until("the worker", || {
        worker = children(runner.id(), "worker");
        !worker.is_empty()
    });
    runner.kill().unwrap();
    runner.wait().unwrap();
    // The kernel delivers the parent-death signal at once; poll for it rather than assume a time.
    wait_until("the orphaned worker to die", || worker.iter().all(|&p| is_dead(p)));
    // And the lock went with the runner: a resume may continue the run.
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).arg("--resume").args(["--filter", "backend=fault-crash"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// CP cases run `mpirun` in its own process group; a signal to the runner sends it SIGTERM (Open MPI
/// gives each rank a process group of its own, so mpirun is what stops them: checked by hand with the
/// real one, SIGTERM and SIGKILL to the runner both leave no rank), then SIGKILL to the group after a
/// grace period. A stand-in `mpirun` (ATTNBENCH_MPIRUN) starts two "ranks" in its group, one of them
/// ignoring SIGTERM, and records every pid: none may survive.
#[cfg(feature = "mpi")]
#[test]
fn sigterm_stops_mpirun_and_its_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    let fake = tmp.path().join("mpirun");
    write(
        &fake,
        "#!/bin/sh\necho $$ >> \"$FAKE_PIDS\"\n( trap '' TERM; exec sleep 300 ) &\necho $! >> \"$FAKE_PIDS\"\nsleep 300 &\necho $! >> \"$FAKE_PIDS\"\nwait\n",
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let suite = write(
        &tmp.path().join("cp.toml"),
        "[measure]\ntimeout_s = 120\n[[grid]]\npatterns = [\"causal\"]\nseqlens = [64]\nheads = [\"2:1\"]\nhead_dims = [8]\ndtypes = [\"fp32\"]\n\
         strategies = [\"ring-p2p\"]\nworld_sizes = [2]\n",
    );
    let out = tmp.path().join("run");
    let runner = spawn_run(&[suite.as_os_str(), "--out".as_ref(), out.as_os_str()], &[("ATTNBENCH_MPIRUN", fake.as_os_str()), ("FAKE_PIDS", pids.as_os_str())]);
    let mut started: Vec<u32> = Vec::new();
    wait_until("the stand-in mpirun and its two ranks", || {
        started = std::fs::read_to_string(&pids).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
        started.len() == 3
    });
    signal(runner.id(), libc::SIGTERM);
    let o = runner.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(started.iter().all(|&p| is_dead(p)), "left running: {:?}", started.iter().filter(|&&p| !is_dead(p)).collect::<Vec<_>>());
    assert_eq!(rows(&out.join("results.csv")).len(), 0);
}

#[test]
fn io_errors_and_bad_out_folders_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = write(&tmp.path().join("tiny.toml"), &tiny_suite("[32]", 1));
    let file = write(&tmp.path().join("a-file"), "x");
    // --out is a file; --out below a file.
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&file).output().unwrap();
    assert_refused(&o, &[&format!("--out {}", file.display()), "not a directory"]);
    let below = file.join("run");
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&below).output().unwrap();
    assert_refused(&o, &[&format!("--out {}", below.display()), "cannot create"]);
    // The suite is a directory / missing.
    let o = bin().arg("run").arg(tmp.path()).arg("--out").arg(tmp.path().join("r")).output().unwrap();
    assert_refused(&o, &[&tmp.path().display().to_string()]);
    // meta.json is a directory: the error names it.
    let out = tmp.path().join("run");
    std::fs::create_dir_all(out.join("meta.json")).unwrap();
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).output().unwrap();
    let e = stderr(&o);
    assert_ne!(o.status.code(), Some(0));
    assert!(e.contains(&out.join("meta.json").display().to_string()) && e.trim_end().lines().count() == 1, "{e}");
}

#[test]
fn measure_errors_blame_the_key_the_user_wrote_at_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = "[[grid]]\npatterns = [\"causal\"]\nseqlens = [32]\nheads = [\"1:1\"]\nhead_dims = [8]\ndtypes = [\"fp32\"]\nbackends = [\"naive\"]\n";
    // repeats above the default max_repeats is fine: max_repeats never goes below repeats.
    let ok = write(&tmp.path().join("many.toml"), &format!("[measure]\nrepeats = 300\n\n{grid}"));
    let o = bin().arg("run").arg(&ok).arg("--dry-run").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("300 repeats"));
    for (text, at) in [
        ("[measure]\nwarmup = 1\nrepeats = 300\nmax_repeats = 50\n", ":4: measure.max_repeats: must be ≥ repeats (300), got 50"),
        ("[measure]\n\nrepeats = 0\n", ":3: measure.repeats"),
        ("[measure]\nseed = 1\ntimeout_s = inf\n", ":3: measure.timeout_s"),
        ("[measure]\nbudget_s = -1.0\n", ":2: measure.budget_s"),
        ("# the spread\n[measure]\ntarget_spread = 2.0\n", ":3: measure.target_spread"),
    ] {
        let f = write(&tmp.path().join("bad.toml"), &format!("{text}\n{grid}"));
        let o = bin().arg("run").arg(&f).arg("--out").arg(tmp.path().join("never")).output().unwrap();
        assert_refused(&o, &[&format!("bad.toml{at}")]);
        assert!(!tmp.path().join("never").exists());
    }
}
