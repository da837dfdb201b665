//! `attnbench report` (not built yet).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {}

pub fn run(_args: ReportArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`attnbench report` is not built yet")
}
