//! Bad device input through the real binary: `--device cuda` on a machine without CUDA, a GPU index
//! (attnbench takes none), GPUs hidden by CUDA_VISIBLE_DEVICES, and `--comm nccl` where NCCL cannot be
//! used — each one clear line on stderr and exit code 2, never a panic or a row. On a GPU machine the
//! CUDA-absent cases do not apply and are skipped.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attnbench"));
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

fn cuda_here() -> bool {
    let out = bin().args(["env", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["cuda_available"].as_bool().unwrap()
}

/// Runs attnbench and returns its one stderr line, asserting exit code 2 and nothing else on stderr.
fn one_line_exit_2(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = bin();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    err
}

const KERNEL: &[&str] = &["kernel", "--backend", "naive", "--mask", "causal", "--seqlen", "64"];
const CP: &[&str] = &["cp", "--strategy", "ring-p2p", "--mask", "causal", "--seqlen", "64"];

fn with(base: &[&str], more: &[&str]) -> Vec<String> {
    base.iter().chain(more).map(|s| s.to_string()).collect()
}

fn run(args: &[String], env: &[(&str, &str)]) -> String {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    one_line_exit_2(&a, env)
}

#[test]
fn a_gpu_index_is_refused_with_the_rule_that_picks_the_gpu() {
    for base in [KERNEL, CP] {
        let e = run(&with(base, &["--device", "cuda:7"]), &[]);
        assert!(e.contains("cuda:7") && e.contains("CUDA_VISIBLE_DEVICES"), "{e}");
    }
    let e = one_line_exit_2(&["comm", "--comm", "local", "--device", "cuda:3"], &[]);
    assert!(e.contains("cuda:3"), "{e}");
}

#[test]
fn cuda_without_a_visible_gpu_is_one_line_exit_2() {
    if cuda_here() {
        // Hide every GPU instead: CUDA then sees none, the same situation.
        let e = run(&with(KERNEL, &["--device", "cuda"]), &[("CUDA_VISIBLE_DEVICES", "")]);
        assert!(e.contains("CUDA"), "{e}");
        return;
    }
    for (args, env) in [
        (with(KERNEL, &["--device", "cuda"]), vec![]),
        (with(CP, &["--device", "cuda"]), vec![]),
        (vec!["comm".to_string(), "--comm".into(), "mpi".into(), "--device".into(), "cuda".into()], vec![]),
        // A nonexistent GPU selected through CUDA_VISIBLE_DEVICES: no device is visible.
        (with(KERNEL, &["--device", "cuda"]), vec![("CUDA_VISIBLE_DEVICES", "7")]),
    ] {
        let e = run(&args, &env);
        assert!(e.contains("CUDA"), "{args:?}: {e}");
    }
}

#[test]
fn nccl_where_it_cannot_run_is_one_line_exit_2() {
    if cuda_here() {
        return;
    }
    // Without CUDA (and, in a build without the `nccl` feature, without NCCL at all) the NCCL
    // communicator cannot start; a build with it whose libnccl cannot be opened answers the same way
    // (cli::nccl_init_exit_code, unit-tested).
    let e = one_line_exit_2(&["comm", "--comm", "nccl"], &[]);
    assert!(e.contains("CUDA") || e.contains("nccl"), "{e}");
    let e = run(&with(CP, &["--comm", "nccl"]), &[]);
    assert!(e.contains("CUDA") || e.contains("nccl"), "{e}");
}
