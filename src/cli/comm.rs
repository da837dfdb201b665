//! `attnbench comm` (not built yet).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CommArgs {}

pub fn run(_args: CommArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`attnbench comm` is not built yet")
}
