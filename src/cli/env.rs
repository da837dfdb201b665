//! `attnbench env` (not built yet).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct EnvArgs {}

pub fn run(_args: EnvArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`attnbench env` is not built yet")
}
