//! `attnbench kernel` (not built yet).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct KernelArgs {}

pub fn run(_args: KernelArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`attnbench kernel` is not built yet")
}
