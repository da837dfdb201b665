//! Helpers shared by the integration tests (each test file that needs them says `mod common;`; each
//! file compiles its own copy, so a helper one file does not call is allowed to be dead there).

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the attnbench binary under `launch/mpirun -np NP` (the launcher users run) with `args`.
#[allow(dead_code)]
pub fn mpirun(np: usize, args: &[&str]) -> Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/launch/mpirun"))
        .arg("-np")
        .arg(np.to_string())
        .arg(env!("CARGO_BIN_EXE_attnbench"))
        .args(args)
        .output()
        .expect("mpirun runs")
}

/// The Python the tests run: the CPU-only torch 2.11 + numpy that `launch/setup` builds
/// (`$ATTNBENCH_CACHE/python-torch-2.11.0-cpu/bin/python`), or `$ATTNBENCH_TEST_PYTHON`. Panics with
/// the command that installs it when it is missing.
#[allow(dead_code)]
pub fn python() -> String {
    if let Ok(p) = std::env::var("ATTNBENCH_TEST_PYTHON") {
        return p;
    }
    let cache = std::env::var("ATTNBENCH_CACHE").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/attnbench"));
    let p = cache.join("python-torch-2.11.0-cpu/bin/python");
    assert!(p.exists(), "{} is missing: run ./launch/setup (it builds the CPU Python torch the tests use)", p.display());
    p.display().to_string()
}
