//! `attnbench cp` (not built yet).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CpArgs {}

pub fn run(_args: CpArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`attnbench cp` is not built yet")
}
