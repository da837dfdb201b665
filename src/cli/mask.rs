//! `attnbench mask area|show` (being filled in).

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum MaskCommand {
    /// Exact attended area and density.
    Area,
}

pub fn run(_c: MaskCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
