//! `attnbench comm` end to end: under `mpirun -np 2` and `-np 3` (MPI communicator, CPU) and in one
//! process (`--comm local --world 3`), small sizes up to 64 KiB: every operation is exact (`wrong` = 0),
//! the bus/algorithm bandwidth ratio is nccl-tests' factor, sizes double, one JSON object from rank 0;
//! a bad flag exits 2 with one line. Run with `cargo test --features mpi --test comm_cli`.
#![cfg(feature = "mpi")]

use std::process::{Command, Output};

use serde_json::Value;

const SMALL: [&str; 10] = ["comm", "--max-bytes", "64K", "--step-factor", "4", "--warmup", "1", "--iters", "2", "--json"];

mod common;
use common::mpirun;

fn factor(op: &str, n: f64) -> f64 {
    match op {
        "allreduce" => 2.0 * (n - 1.0) / n,
        "allgather" | "reducescatter" | "alltoall" => (n - 1.0) / n,
        "sendrecv" => 1.0,
        other => panic!("unexpected op {other}"),
    }
}

fn check(out: &Output, n: usize, backend: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "n={n}: {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object, from rank 0 only:\n{stdout}");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["world_size"], n);
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["backend"], backend);
    let results = v["results"].as_array().unwrap();
    for op in ["allreduce", "allgather", "reducescatter", "alltoall", "sendrecv"] {
        let rows: Vec<&Value> = results.iter().filter(|r| r["op"] == op).collect();
        // requested 8, 32, …, 32768 bytes (×4 up to 64 KiB): seven sizes per op
        assert_eq!(rows.len(), 7, "{op}: {rows:?}");
        let bytes: Vec<u64> = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).collect();
        assert!(bytes.windows(2).all(|w| w[1] > w[0]), "{op}: sizes grow {bytes:?}");
        assert!(*bytes.last().unwrap() <= 65536 && *bytes.last().unwrap() > 16384, "{op}: {bytes:?}");
        for r in rows {
            assert_eq!(r["wrong"], 0, "{r}");
            let (t, alg, bus) = (r["time_us"].as_f64().unwrap(), r["algbw_gbps"].as_f64().unwrap(), r["busbw_gbps"].as_f64().unwrap());
            assert!(t > 0.0 && alg > 0.0, "{r}");
            let b = r["bytes"].as_f64().unwrap();
            assert!((alg - b / (t * 1e-6) / 1e9).abs() <= 1e-9 * alg.max(1.0), "algbw = bytes/time: {r}");
            assert!((bus / alg - factor(op, n as f64)).abs() < 1e-9, "busbw/algbw = factor: {r}");
        }
    }
}

#[test]
fn every_op_is_exact_under_mpirun_2() {
    check(&mpirun(2, &SMALL), 2, "mpi");
}

#[test]
fn every_op_is_exact_under_mpirun_3() {
    check(&mpirun(3, &SMALL), 3, "mpi");
}

#[test]
fn every_op_is_exact_on_a_local_world_of_3() {
    let out = Command::new(env!("CARGO_BIN_EXE_attnbench")).args(SMALL).args(["--comm", "local", "--world", "3"]).output().unwrap();
    check(&out, 3, "local");
}

#[test]
fn table_and_selected_ops() {
    let out = Command::new(env!("CARGO_BIN_EXE_attnbench"))
        .args(["comm", "--comm", "local", "--world", "2", "--ops", "allreduce,sendrecv", "--max-bytes", "1K", "--iters", "1"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{s}{}", String::from_utf8_lossy(&out.stderr));
    assert!(s.contains("busbw(GB/s)") && s.contains("#wrong"), "{s}");
    assert!(s.contains(" allreduce ") && s.contains(" sendrecv ") && !s.contains("alltoall"), "{s}");
    // 8 … 1024 bytes doubling: 8 sizes per op
    assert_eq!(s.lines().filter(|l| l.trim_start().starts_with("allreduce")).count(), 8, "{s}");
}

#[test]
fn bad_flags_exit_2_with_one_line_printed_once() {
    for (flags, needle) in [
        (vec!["--ops", "allreduce,bcast"], "--ops: unknown operation `bcast`"),
        (vec!["--max-bytes", "12Q"], "--max-bytes"),
        (vec!["--step-factor", "1"], "--step-factor: must be at least 2"),
        (vec!["--min-bytes", "1M", "--max-bytes", "1K"], "--max-bytes"),
    ] {
        let mut args = vec!["comm"];
        args.extend(flags.iter().copied());
        let out = mpirun(2, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}");
        assert_eq!(err.matches("error: ").count(), 1, "{flags:?}: printed once:\n{err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
        let local = Command::new(env!("CARGO_BIN_EXE_attnbench")).args(&args).args(["--comm", "local"]).output().unwrap();
        assert_eq!(local.status.code(), Some(2), "{flags:?}");
    }
}
