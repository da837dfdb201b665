//! `mpirun -np {2,4}` integration tests of `attnbench cp` on CPU: every strategy × {full, causal,
//! causal_document, sliding_window} × forward and backward (one fwdbwd run checks out, LSE, dQ, dK, dV
//! against the single-device result on rank 0), one combined job per world size; and failure handling:
//! a bad mask on one rank, a rank failing or killed mid-run end the job non-zero with a clear message,
//! rows written before stay intact. Run with `cargo test --features mpi --test cp_mpi`.
#![cfg(feature = "mpi")]

use std::process::Output;

mod common;
use common::mpirun;

fn all_cases(np: usize, seqlen: &str, doc_lens: &str) {
    let docs = format!("causal_document?doc_lens={doc_lens}");
    let masks = ["full", "causal", docs.as_str(), "sliding_window?window_left=16&window_right=8"];
    let mut args = vec![
        "cp",
        "--strategy",
        "all",
        "--seqlen",
        seqlen,
        "--heads",
        "8:2",
        "--head-dim",
        "16",
        "--pass",
        "fwdbwd",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--json",
    ];
    for m in masks {
        args.push("--mask");
        args.push(m);
    }
    let out = mpirun(np, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "np={np}: {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 6 * 4, "one row per strategy × mask, from rank 0 only:\n{stdout}");
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["world_size"], np, "{r}");
        assert_eq!(r["kind"], "cp");
        assert!(r["max_abs_err"].as_f64().unwrap() < 1e-4, "{r}");
        assert!(r["bytes_sent"].as_u64().unwrap() > 0, "{r}");
        assert!(!r["note"].as_str().unwrap().contains("differ from the schedule"), "{r}");
    }
}

#[test]
fn every_strategy_and_mask_matches_single_device_at_world_2() {
    all_cases(2, "96", "30,50,16");
}

#[test]
fn every_strategy_and_mask_matches_single_device_at_world_4() {
    all_cases(4, "128", "30,50,48");
}

fn one_case(np: usize, csv: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "cp",
        "--strategy",
        "ring-p2p",
        "--mask",
        "causal",
        "--seqlen",
        "64",
        "--heads",
        "4:2",
        "--head-dim",
        "16",
        "--repeats",
        "2",
        "--out",
        csv.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    mpirun(np, &args)
}

#[test]
fn failing_ranks_end_the_job_and_keep_written_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let ok = one_case(2, &csv, &[]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let before = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(before.lines().count(), 2, "header + one row");

    // A bad mask on rank 1 only: every rank exits 2, rank 1 names itself, once.
    let bad = one_case(2, &csv, &["--fault", "1:mask"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert_eq!(err.matches("error: rank 1: --mask causal").count(), 1, "{err}");

    // A rank failing mid-run aborts the job with its message.
    let failed = one_case(2, &csv, &["--fault", "1:error"]);
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(err.contains("error: rank 1: injected failure"), "{err}");

    // A rank killed mid-run: the job ends non-zero (mpirun reports the signal).
    let killed = one_case(2, &csv, &["--fault", "1:kill"]);
    assert!(!killed.status.success());

    // Bad flags: exit 2, printed once (rank 0).
    let flags = one_case(2, &csv, &["--dtype", "fp8"]);
    let err = String::from_utf8_lossy(&flags.stderr);
    assert!(!flags.status.success(), "{err}");
    assert_eq!(err.matches("error: --dtype").count(), 1, "{err}");

    assert_eq!(std::fs::read_to_string(&csv).unwrap(), before, "rows written before the failures are intact");
    attnbench::results::read_rows(&csv).expect("still a valid results CSV");
}

#[test]
fn a_flag_clap_rejects_is_reported_once_not_once_per_rank() {
    let out = mpirun(3, &["cp", "--strategy", "ring-p2p", "--mask", "causal", "--seqlen", "64", "--no-such-flag"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error:")).count(), 1, "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

/// `--comm nccl` in a build without the `nccl` feature: exit 2 and one line from rank 0. `cp` says
/// how to build it (the shared `cli::with_nccl`); `comm --comm nccl` benchmarks GPU buffers, so on a
/// machine without CUDA it stops one check earlier, saying that instead.
#[cfg(not(feature = "nccl"))]
#[test]
fn nccl_without_the_feature_is_one_line_and_exit_2() {
    attnbench::sys::ensure_cuda_loaded();
    let cuda = attnbench::sys::cuda_available();
    let cases: [(&[&str], &str); 2] = [
        (&["cp", "--comm", "nccl", "--strategy", "ring-p2p", "--mask", "causal", "--seqlen", "64"], "built without the `nccl` feature"),
        (&["comm", "--comm", "nccl", "--max-bytes", "4K"], if cuda { "built without the `nccl` feature" } else { "CUDA is not available" }),
    ];
    for (args, says) in cases {
        let out = mpirun(2, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("error:")).count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// Runs an MPMD job: rank r runs attnbench with `per_rank[r]` (mpirun's `-np 1 prog args : -np 1 …`).
fn mpirun_mpmd(per_rank: &[Vec<&str>]) -> (Output, std::time::Duration) {
    let bin = env!("CARGO_BIN_EXE_attnbench");
    let mut cmd = std::process::Command::new("mpirun");
    cmd.args(["--oversubscribe", "--bind-to", "none", "-x", "OMP_NUM_THREADS"]);
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1").env("OMP_NUM_THREADS", "1");
    for (i, args) in per_rank.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-np", "1", bin]).args(args);
    }
    let t = std::time::Instant::now();
    let out = cmd.output().expect("mpirun runs");
    (out, t.elapsed())
}

/// Ranks started with different arguments — another length, another strategy, a dtype only one rank
/// cannot parse — stop together with exit 2 and one `error:` line, before any tensor moves (before,
/// such jobs segfaulted, aborted inside MPI or hung).
#[test]
fn ranks_that_disagree_stop_with_exit_2_and_one_line() {
    let base = ["cp", "--strategy", "ring-p2p", "--mask", "causal", "--seqlen", "64", "--heads", "4:2", "--head-dim", "8", "--repeats", "1"];
    let with = |k: &str, v: &'static str| -> Vec<&'static str> {
        let mut a: Vec<&str> = base.to_vec();
        let i = a.iter().position(|x| *x == k).unwrap();
        a[i + 1] = v;
        a
    };
    for (odd, says) in [
        (with("--seqlen", "96"), "rank 1 was started with a different case than rank 0"),
        (with("--strategy", "ulysses"), "rank 1 was started with a different case than rank 0"),
        ([base.to_vec(), vec!["--dtype", "fp7"]].concat(), "rank 1: --dtype: unknown dtype `fp7`"),
    ] {
        let (out, took) = mpirun_mpmd(&[base.to_vec(), odd.clone()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{odd:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{odd:?}: {stderr}");
        assert!(errors[0].contains(says), "{odd:?}: {stderr}");
        assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
    }
}

/// A CP case runs on another per-rank kernel than `sliced` — `naive`'s materialised attention — and is
/// checked against that kernel's single-device result; a backend that cannot compute CP pieces is
/// refused before any rank computes. `--out` writes rows through the run folder: `meta.json` and one
/// segment per command.
#[test]
fn cp_on_the_naive_kernel_and_out_writes_a_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("cp").join("rows.csv");
    let csv_s = csv.display().to_string();
    let args = [
        "cp",
        "--backend",
        "naive",
        "--strategy",
        "ring-p2p-zigzag",
        "--strategy",
        "ulysses",
        "--mask",
        "causal_document?doc_lens=20,30,14",
        "--seqlen",
        "64",
        "--heads",
        "4:2",
        "--head-dim",
        "8",
        "--pass",
        "fwdbwd",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--json",
        "--out",
        &csv_s,
    ];
    for _ in 0..2 {
        let out = mpirun(2, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        for line in stdout.lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!((r["status"].as_str(), r["backend"].as_str()), (Some("ok"), Some("naive")), "{r}");
            assert!(r["note"].as_str().unwrap().contains("per-rank kernel naive"), "{r}");
            assert!(r["max_abs_err"].as_f64().unwrap() < 1e-4, "{r}");
        }
    }
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("cp/meta.json")).unwrap()).unwrap();
    assert_eq!(meta["segments"].as_array().unwrap().len(), 2, "{meta}");
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(rows.lines().count(), 1 + 4, "header + 2 strategies × 2 commands:\n{rows}");
    let out = mpirun(2, &["cp", "--backend", "sdpa-flash", "--strategy", "ring-p2p", "--mask", "causal", "--seqlen", "64"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot compute CP pieces"), "{stderr}");
}
