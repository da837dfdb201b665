//! `attnbench simulate` (not built yet).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {}

pub fn run(_args: SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`attnbench simulate` is not built yet")
}
