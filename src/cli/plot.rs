//! `attnbench plot` (not built yet).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct PlotArgs {}

pub fn run(_args: PlotArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`attnbench plot` is not built yet")
}
