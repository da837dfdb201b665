//! Issue 30, second robustness pass: what a night-long sweep meets must end as one clear line and exit
//! 2, or as a row with the right status — never a panic, a hang, a kill by the system, or a status
//! that blames the kernel for the harness. One test per item, through the real binary.

use std::process::{Command, Output};

mod common;
use common::python;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnbench"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2 with exactly one line on stderr that contains every one of `needles`.
fn assert_bad_input(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit {:?}; stderr:\n{err}\nstdout:\n{}", o.status, String::from_utf8_lossy(&o.stdout));
    assert_eq!(err.trim().lines().count(), 1, "one line:\n{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
}

fn faulty() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/faulty.py").to_string()
}

fn suite(dir: &std::path::Path, text: &str) -> String {
    let p = dir.join("s.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

// ---- 1. `kernel` has run's memory guard -------------------------------------------------------

#[test]
fn item01_kernel_too_big_for_memory_is_an_oom_result_not_a_kill() {
    // naive fp32 at 65 536 tokens: two 64k×64k score matrices per head alone are tens of GB.
    let t = std::time::Instant::now();
    let o = run(&[
        "kernel",
        "--backend",
        "naive",
        "--mask",
        "causal",
        "--seqlen",
        "65536",
        "--heads",
        "4:2",
        "--head-dim",
        "64",
        "--dtype",
        "fp32",
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert_eq!(v["status"], "oom", "{v}");
    assert!(v["error"].as_str().unwrap().contains("estimated peak"), "{v}");
    assert_eq!(o.status.code(), Some(1));
    assert!(t.elapsed().as_secs() < 30, "refused before allocating");
    // --mem-limit: a small case over a tiny limit is refused the same way.
    let o = run(&[
        "kernel",
        "--backend",
        "naive",
        "--mask",
        "causal",
        "--seqlen",
        "1024",
        "--heads",
        "1:1",
        "--head-dim",
        "16",
        "--dtype",
        "fp32",
        "--mem-limit",
        "1M",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "oom", "{v}");
    assert!(v["error"].as_str().unwrap().contains("--mem-limit 1.0 MiB"), "{v}");
}

// ---- 9. absurd repeats are bad input, naming the key ---------------------------------------------

#[test]
fn item09_absurd_repeats_exit_2_naming_the_key() {
    let o = run(&["kernel", "--backend", "naive", "--mask", "causal", "--seqlen", "64", "--repeats", "1000000000000"]);
    assert_bad_input(&o, &["--repeats", "at most 1000000"]);
    let o = run(&["kernel", "--backend", "naive", "--mask", "causal", "--seqlen", "64", "--warmup", "1000000000000"]);
    assert_bad_input(&o, &["--warmup"]);
    let dir = tempfile::tempdir().unwrap();
    let s = suite(dir.path(), "[measure]\nrepeats = 1000000000000\n[[grid]]\npatterns = [\"causal\"]\nseqlens = [64]\nbackends = [\"naive\"]\n");
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = dir.path().join("out");
        let o = bin().args(["run", &s, "--out", out.to_str().unwrap()]).args(extra).output().unwrap();
        assert_bad_input(&o, &["measure.repeats", "s.toml:2:", "at most 1000000"]);
    }
}

// ---- 19. `kernel --timeout` ------------------------------------------------------------------

#[test]
fn item19_kernel_timeout_bounds_an_external_worker() {
    let o = run(&["kernel", "--backend", "naive", "--mask", "causal", "--seqlen", "64", "--timeout", "0"]);
    assert_bad_input(&o, &["--timeout", "> 0"]);
    let o = run(&["kernel", "--backend", "naive", "--mask", "causal", "--seqlen", "64", "--timeout", "5"]);
    assert_bad_input(&o, &["--timeout", "ext:"]);
    let t = std::time::Instant::now();
    let o = bin()
        .args([
            "kernel",
            "--backend",
            "ext:sleep",
            "--mask",
            "causal",
            "--seqlen",
            "32",
            "--heads",
            "1:1",
            "--head-dim",
            "8",
            "--dtype",
            "fp32",
            "--timeout",
            "3",
            "--json",
        ])
        .arg("--worker")
        .arg(format!("{} {} sleep", python(), faulty()))
        .env("ATTNBENCH_TEST_PIDFILE", tempfile::tempdir().unwrap().path().join("p"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert_eq!(v["status"], "timeout", "{v}");
    assert!(t.elapsed().as_secs() < 60, "the 3 s timeout held ({:?})", t.elapsed());
    assert!(v["error"].as_str().unwrap().contains("--timeout"), "the message names the flag this command has: {v}");
}

// ---- 2 and 16. `comm` ranks must agree; a rank other than 0 that cannot parse says so ---------------

#[cfg(feature = "mpi")]
fn mpmd(rank0: &[&str], rank1: &[&str]) -> Output {
    let b = env!("CARGO_BIN_EXE_attnbench");
    let out = Command::new("timeout")
        .args(["120", "mpirun", "--oversubscribe", "-np", "1", b])
        .args(rank0)
        .args([":", "-np", "1", b])
        .args(rank1)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(124), "hung: {}", stderr(&out));
    out
}

#[cfg(feature = "mpi")]
#[test]
fn item02_comm_ranks_that_disagree_stop_with_exit_2() {
    let base = ["comm", "--comm", "mpi", "--max-bytes", "1K", "--warmup", "0"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    for (a, b) in [
        (with(&["--iters", "2"]), with(&["--iters", "3"])),
        (with(&["--ops", "allreduce"]), with(&["--ops", "alltoall"])),
        (with(&["--min-bytes", "8"]), with(&["--min-bytes", "16"])),
    ] {
        let o = mpmd(&a, &b);
        let err = stderr(&o);
        assert_ne!(o.status.code(), Some(0), "{err}");
        assert!(err.contains("rank 1 was started with a different configuration than rank 0"), "{a:?} vs {b:?}: {err}");
        assert!(!err.contains("MPI_ERR") && !err.contains("panicked"), "{err}");
    }
}

#[cfg(feature = "mpi")]
#[test]
fn item16_a_rank_other_than_0_that_cannot_parse_says_so() {
    let base = ["comm", "--comm", "mpi", "--max-bytes", "1K", "--warmup", "0", "--iters", "1"];
    // A bad value (our parsing) and an unknown flag (clap's) on rank 1 only.
    let bad: Vec<&str> = base.iter().copied().chain(["--step-factor", "x"]).collect();
    let o = mpmd(&base, &bad);
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("rank 1: --step-factor: expected an integer"), "{err}");
    let unknown: Vec<&str> = base.iter().copied().chain(["--bogus"]).collect();
    let o = mpmd(&base, &unknown);
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("--bogus") && err.contains("(rank 1)"), "{err}");
}

// ---- 11. `comm` sizes beyond memory --------------------------------------------------------------

#[test]
fn item11_comm_sizes_beyond_memory_exit_2() {
    let o = run(&["comm", "--comm", "local", "--world", "2", "--max-bytes", "1000G"]);
    assert_bad_input(&o, &["--max-bytes", "available"]);
}

// ---- 4. an endless answer line is cut at the cap -------------------------------------------------

#[test]
fn item04_an_endless_answer_line_is_a_protocol_violation_not_gigabytes() {
    // A "worker" whose first answer line never ends. Before: attnbench grew by the pipe's rate until
    // the timeout (gigabytes). Now: cut at 64 MiB, an `error` row naming the violation, at once.
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("endless.sh");
    std::fs::write(&w, "printf '@@attnbench-ext '\nexec cat /dev/zero\n").unwrap();
    let t = std::time::Instant::now();
    let o = bin()
        .args([
            "kernel",
            "--backend",
            "ext:endless",
            "--mask",
            "causal",
            "--seqlen",
            "32",
            "--heads",
            "1:1",
            "--head-dim",
            "8",
            "--dtype",
            "fp32",
            "--timeout",
            "120",
            "--json",
        ])
        .arg("--worker")
        .arg(format!("sh {}", w.display()))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert_eq!(v["status"], "error", "{v}");
    assert!(v["error"].as_str().unwrap().contains("longer than 64 MiB"), "{v}");
    assert!(t.elapsed().as_secs() < 100, "no wait for the timeout: {:?}", t.elapsed());
}

// ---- 5. the planner's sizes are bounded up front ---------------------------------------------------

#[test]
fn item05_planner_refuses_unbounded_masks_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (seqlen, block) in [(1048576u64, 16u64), (2147483648, 128)] {
        let s = suite(
            dir.path(),
            &format!(
                "[[grid]]\npatterns = [{{ name = \"block_sparse\", params = {{ block = \"{block}\" }} }}]\nseqlens = [{seqlen}]\nbackends = [\"naive\"]\n"
            ),
        );
        let t = std::time::Instant::now();
        let o = bin().args(["run", &s, "--dry-run"]).output().unwrap();
        assert_bad_input(&o, &["block", "at most 4194304"]);
        assert!(t.elapsed().as_secs() < 20, "refused before allocating");
    }
    let o = run(&["mask", "area", "block_sparse", "--seqlen", "1048576", "--set", "block=16"]);
    assert_bad_input(&o, &["block", "at most"]);
}

// ---- 7. `--out` never overwrites or truncates files that are not ours ----------------------------

#[test]
fn item07_out_refuses_files_that_are_not_attnbench_s() {
    let dir = tempfile::tempdir().unwrap();
    let s = suite(dir.path(), "[measure]\nwarmup = 0\nrepeats = 1\n[[grid]]\npatterns = [\"causal\"]\nseqlens = [32]\nheads = [\"1:1\"]\nhead_dims = [8]\ndtypes = [\"fp32\"]\nbackends = [\"naive\"]\n");
    let commands = |csv: &str, folder: &str| -> Vec<Vec<String>> {
        let v = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        vec![
            v(&["cp", "--comm", "local", "--world", "2", "--strategy", "ring-p2p", "--mask", "causal", "--seqlen", "64", "--out", csv]),
            v(&["simulate", "--strategy", "ring-p2p", "--world-size", "2", "--mask", "full", "--seqlen", "4096", "--out", csv]),
            v(&["run", &s, "--out", folder]),
        ]
    };
    for (i, cmd) in commands("CSV", "DIR").into_iter().enumerate() {
        // (a) a text file where the CSV goes: once it was read as a "torn line" and wiped.
        let folder = dir.path().join(format!("a{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        let csv = folder.join("results.csv");
        std::fs::write(&csv, "my notes, not a CSV of yours").unwrap();
        let args: Vec<String> = cmd.iter().map(|a| a.replace("CSV", csv.to_str().unwrap()).replace("DIR", folder.to_str().unwrap())).collect();
        let o = bin().args(&args).env("OMP_NUM_THREADS", "1").output().unwrap();
        assert_bad_input(&o, &["not an attnbench results CSV"]);
        assert_eq!(std::fs::read_to_string(&csv).unwrap(), "my notes, not a CSV of yours", "{args:?}");
        // (b) a foreign meta.json beside it.
        let folder = dir.path().join(format!("b{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("meta.json"), "{\"name\": \"my project\"}\n").unwrap();
        let csv = folder.join("results.csv");
        let args: Vec<String> = cmd.iter().map(|a| a.replace("CSV", csv.to_str().unwrap()).replace("DIR", folder.to_str().unwrap())).collect();
        let o = bin().args(&args).env("OMP_NUM_THREADS", "1").output().unwrap();
        assert_bad_input(&o, &["not an attnbench meta.json"]);
        assert_eq!(std::fs::read_to_string(folder.join("meta.json")).unwrap(), "{\"name\": \"my project\"}\n", "{args:?}");
    }
}

// ---- 15. `cp --out`: the cause of an I/O error is kept; a busy folder is exit 2 -----------------

#[test]
fn item15_cp_out_errors_keep_their_cause_and_a_busy_folder_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cp = |out: &std::path::Path| {
        bin()
            .args(["cp", "--comm", "local", "--world", "2", "--strategy", "ring-p2p", "--mask", "causal", "--seqlen", "64", "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    // A file where the folder should be.
    std::fs::write(dir.path().join("afile"), "x").unwrap();
    let o = cp(&dir.path().join("afile/results.csv"));
    assert_bad_input(&o, &["cannot create the folder", "File exists"]);
    // A folder where the CSV should be.
    std::fs::create_dir_all(dir.path().join("d/results.csv")).unwrap();
    let o = cp(&dir.path().join("d/results.csv"));
    assert_bad_input(&o, &["Is a directory"]);
    // A folder another process holds.
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    let mut holder = Command::new("flock").arg(busy.join("attnbench.lock")).args(["sleep", "30"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let o = cp(&busy.join("results.csv"));
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_bad_input(&o, &["in use"]);
}

// ---- 8, 14, 17. report commands on empty CSVs, CSVs without a timing column, CRLF CSVs ------------

fn fixture_csv() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cab_abc/results.csv")).unwrap()
}

#[test]
fn item08_table_on_an_empty_or_header_only_csv_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let header = fixture_csv().lines().next().unwrap().to_string() + "\n";
    for (name, text) in [("empty.csv", String::new()), ("header.csv", header)] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let o = run(&["table", p.to_str().unwrap()]);
        assert_bad_input(&o, &[name, "no rows"]);
    }
}

#[test]
fn item14_a_csv_without_ms_median_is_refused_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let text = fixture_csv();
    let mut rdr = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let i = header.iter().position(|h| h == "ms_median").unwrap();
    let p = dir.path().join("no_median.csv");
    let mut w = csv::Writer::from_path(&p).unwrap();
    let drop = |r: Vec<String>| r.into_iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| c).collect::<Vec<_>>();
    w.write_record(drop(header.clone())).unwrap();
    for r in rdr.records() {
        w.write_record(drop(r.unwrap().iter().map(String::from).collect())).unwrap();
    }
    w.flush().unwrap();
    let ps = p.to_str().unwrap();
    let plots = dir.path().join("plots");
    for args in [vec!["table", ps], vec!["plot", ps, "--out", plots.to_str().unwrap()], vec!["compare", ps, ps]] {
        let o = run(&args);
        assert_bad_input(&o, &["no_median.csv", "`ms_median`"]);
    }
}

#[test]
fn item17_crlf_csv_errors_name_the_right_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = fixture_csv();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[5] = "garbage,\"x".into(); // line 6 of the file
    let p = dir.path().join("crlf.csv");
    std::fs::write(&p, lines.join("\r\n") + "\r\n").unwrap();
    let o = run(&["table", p.to_str().unwrap()]);
    assert_bad_input(&o, &["crlf.csv: line 6"]);
    // A negative time on line 4 (the report's own check, with its own line count).
    let mut rdr = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let i = rdr.headers().unwrap().iter().position(|h| h == "ms_median").unwrap();
    let mut recs: Vec<Vec<String>> = rdr.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
    recs[2][i] = "-5".into(); // the third record: line 4
    let p = dir.path().join("crlf_neg.csv");
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_path(&p).unwrap();
    w.write_record(csv::ReaderBuilder::new().from_reader(text.as_bytes()).headers().unwrap()).unwrap();
    for r in recs {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
    let o = run(&["table", p.to_str().unwrap()]);
    assert_bad_input(&o, &["crlf_neg.csv: line 4", "ms_median"]);
}

// ---- 10. non-UTF-8 arguments -------------------------------------------------------------------

#[test]
fn item10_a_non_utf8_argument_is_one_line_and_exit_2_not_a_panic_or_hang() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"/tmp/\xffattnbench/results.csv");
    for args in [
        vec!["cp", "--comm", "local", "--world", "2", "--strategy", "ring-p2p", "--mask", "causal", "--seqlen", "64", "--out"],
        vec!["table"],
        vec!["run", concat!(env!("CARGO_MANIFEST_DIR"), "/suites/quick-cpu.toml"), "--dry-run", "--out"],
    ] {
        let o = Command::new("timeout").arg("60").arg(env!("CARGO_BIN_EXE_attnbench")).args(&args).arg(bad).output().unwrap();
        assert_bad_input(&o, &["not valid UTF-8"]);
    }
}

// ---- 12. a CP grid the ranks cannot form is refused at plan time ---------------------------------

#[test]
fn item12_cp_grids_with_more_ranks_than_tokens_or_absurd_worlds_are_refused_at_plan_time() {
    let dir = tempfile::tempdir().unwrap();
    for (ws, needle) in [("128", "cannot be split"), ("100000", "at most 4096")] {
        let s = suite(
            dir.path(),
            &format!("[[grid]]\npatterns = [\"causal\"]\nseqlens = [64]\nheads = [\"2:1\"]\nhead_dims = [8]\ndtypes = [\"fp32\"]\nstrategies = [\"ring-p2p\"]\nworld_sizes = [{ws}]\n"),
        );
        let t = std::time::Instant::now();
        let o = bin().args(["run", &s, "--dry-run"]).output().unwrap();
        assert_bad_input(&o, &["world_sizes", "s.toml:8:", needle]);
        assert!(t.elapsed().as_secs() < 20);
    }
}

// ---- 20. `--assume-tflops 0` -------------------------------------------------------------------

#[test]
fn item20_assume_tflops_must_be_positive() {
    for v in ["0", "-1", "inf", "NaN"] {
        let o = bin()
            .args(["run", "suites/quick-cpu.toml", "--dry-run", &format!("--assume-tflops={v}")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert_bad_input(&o, &["--assume-tflops", "positive"]);
    }
    let o = bin().args(["run", "suites/quick-cpu.toml", "--dry-run", "--assume-tflops", "0.05"]).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("inf s"));
}

// ---- 18. `kernel --worker /nonexistent` ------------------------------------------------------------

#[test]
fn item18_a_worker_that_does_not_exist_is_one_line_and_exit_2() {
    for w in ["/nonexistent", "no-such-attnbench-worker-cmd --flag"] {
        let o =
            run(&["kernel", "--backend", "ext:x", "--mask", "causal", "--seqlen", "32", "--heads", "1:1", "--head-dim", "8", "--dtype", "fp32", "--worker", w]);
        assert_bad_input(&o, &["--worker", "cannot start", w.split(' ').next().unwrap()]);
    }
}

// ---- 13. worker times ≤ 0 or beyond the deadline --------------------------------------------------

#[test]
fn item13_worker_times_that_cannot_be_true_are_a_protocol_violation() {
    let w = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/badtimes.py");
    for mode in ["zero", "negative", "huge"] {
        let o = bin()
            .args(["kernel", "--backend", "ext:badtimes", "--mask", "causal", "--seqlen", "32", "--heads", "1:1", "--head-dim", "8", "--dtype", "fp32"])
            .args(["--repeats", "2", "--warmup", "0", "--json", "--worker", &format!("{} {w} {mode}", python())])
            .env("ATTNBENCH_PYTHON", python())
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{mode}: {e}: {}", stderr(&o)));
        assert_eq!(v["status"], "error", "{mode}: {v}");
        assert!(v["error"].as_str().unwrap().contains("protocol violation"), "{mode}: {v}");
        assert!(v["ms_median"].is_null(), "{mode}: {v}");
    }
}
