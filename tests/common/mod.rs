//! Helpers shared by the integration tests (each test file that needs them says `mod common;`).

use std::process::{Command, Output};

/// Runs the attnbench binary under `launch/mpirun -np NP` (the launcher users run) with `args`.
pub fn mpirun(np: usize, args: &[&str]) -> Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/launch/mpirun"))
        .arg("-np")
        .arg(np.to_string())
        .arg(env!("CARGO_BIN_EXE_attnbench"))
        .args(args)
        .output()
        .expect("mpirun runs")
}
