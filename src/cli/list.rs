//! `attnbench list` (not built yet).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ListArgs {}

pub fn run(_args: ListArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`attnbench list` is not built yet")
}
