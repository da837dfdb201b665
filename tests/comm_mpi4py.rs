//! `attnbench comm` against an independent timing of the same MPI calls: mpi4py (pinned by
//! `launch/setup`, `$ATTNBENCH_CACHE/mpi4py-4.1.2/site`) under `launch/mpirun -np 2`, the same sizes
//! (64 KiB–16 MiB, ×4) and operations (allreduce, allgather, alltoall), interleaved with attnbench
//! over five rounds (order alternating). The median over (op, size) of the ratio of the two best times
//! (attnbench / mpi4py) must lie within 0.90–1.10 — loose, for a noisy 2-core machine; the issue asks
//! for exactly this check. Before `comm` timed the collective alone (an output tensor and host copies
//! per call inside the timed loop) the median was 1.16–1.25 (1.12 measured with this test). Measured
//! after: 0.93–0.96 at load 3–6, 0.90–1.16 at load 7–9 (five helpers building on the 2 cores).
//! Prints the figure (`--nocapture`); ≈ 15 s on a quiet machine.
#![cfg(feature = "mpi")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const ROUNDS: usize = 5;
/// Cycles per run (`--cycles`, nccl-tests' -N). One: best-of-cycles inside one process was less steady
/// here (medians 0.83–0.97) than best-of-rounds across processes.
const CYCLES: &str = "1";
const WARMUP: &str = "3";
const ITERS: &str = "10";

fn mpi4py_site() -> PathBuf {
    let cache = std::env::var("ATTNBENCH_CACHE").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/attnbench"));
    let p = cache.join("mpi4py-4.1.2/site");
    assert!(p.join("mpi4py").exists(), "{} is missing: run ./launch/setup (it unpacks the pinned mpi4py wheel these tests use)", p.display());
    p
}

fn mpirun() -> Command {
    let mut c = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/launch/mpirun"));
    c.args(["-np", "2"]);
    c
}

fn stdout_json(out: std::process::Output, what: &str) -> Value {
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{what}: {:?}\n{s}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{what}: {e}: {s}"))
}

/// attnbench comm's times, `op:bytes` → µs (one entry per cycle).
fn attnbench() -> Vec<(String, f64)> {
    let out = mpirun()
        .arg(env!("CARGO_BIN_EXE_attnbench"))
        .args(["comm", "--ops", "allreduce,allgather,alltoall", "--min-bytes", "64K", "--max-bytes", "16M", "--step-factor", "4"])
        .args(["--warmup", WARMUP, "--iters", ITERS, "--cycles", CYCLES, "--json"])
        .output()
        .unwrap();
    let v = stdout_json(out, "attnbench comm");
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["wrong"], 0, "{r}");
            (format!("{}:{}", r["op"].as_str().unwrap(), r["bytes"]), r["time_us"].as_f64().unwrap())
        })
        .collect()
}

/// The (op, size) points, in attnbench's order: `op:bytes`.
fn specs() -> Vec<String> {
    ["allreduce", "allgather", "alltoall"].iter().flat_map(|op| [65536, 262144, 1048576, 4194304, 16777216].map(|b| format!("{op}:{b}"))).collect()
}

fn mpi4py(site: &PathBuf, specs: &[String]) -> Value {
    let out = mpirun()
        .env("PYTHONPATH", site)
        .args(["python3.11", "-s", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mpi4py/comm_timing.py"), WARMUP, ITERS, CYCLES])
        .args(specs)
        .output()
        .unwrap();
    stdout_json(out, "mpi4py")
}

#[test]
fn comm_times_match_an_independent_mpi4py_timing() {
    let site = mpi4py_site();
    // Per (op, size): each side's best time over the rounds (the machine's other load only ever adds
    // time, and on 2 shared cores a single descheduling can multiply a 64 KiB time by 100), then
    // their ratio; the check is on the median over the 15 (op, size) points.
    let mut best: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for round in 0..ROUNDS {
        // Alternate which goes first, so a warm-up or drift trend does not favour one side.
        let (ours, theirs) = if round % 2 == 0 {
            let a = attnbench();
            (a, mpi4py(&site, &specs()))
        } else {
            let m = mpi4py(&site, &specs());
            (attnbench(), m)
        };
        let cycles: usize = CYCLES.parse().unwrap();
        assert_eq!(
            ours.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            (0..cycles).flat_map(|_| specs()).collect::<Vec<_>>(),
            "3 ops × 5 sizes, per cycle"
        );
        for (k, t) in &ours {
            let m = theirs[k].as_array().unwrap_or_else(|| panic!("mpi4py has no {k}: {theirs}"));
            assert_eq!(m.len(), cycles, "{k}");
            let best_m = m.iter().map(|x| x.as_f64().unwrap()).fold(f64::INFINITY, f64::min);
            let e = best.entry(k.clone()).or_insert((f64::INFINITY, f64::INFINITY));
            *e = (e.0.min(*t), e.1.min(best_m));
        }
    }
    let mut ratios: Vec<(f64, String)> = best.iter().map(|(k, (a, m))| (a / m, k.clone())).collect();
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    let median = (ratios[ratios.len() / 2].0 + ratios[(ratios.len() - 1) / 2].0) / 2.0;
    println!(
        "attnbench comm / mpi4py (best of {ROUNDS} interleaved rounds × {CYCLES} cycles each, {} points): median {median:.3}, min {:.3} ({}), max {:.3} ({})",
        ratios.len(),
        ratios[0].0,
        ratios[0].1,
        ratios[ratios.len() - 1].0,
        ratios[ratios.len() - 1].1
    );
    assert!((0.90..=1.10).contains(&median), "median ratio {median:.3} outside 0.90–1.10: {ratios:?}");
}
