//! `attnbench table` (not built yet).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct TableArgs {}

pub fn run(_args: TableArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`attnbench table` is not built yet")
}
