//! `attnbench compare` (not built yet).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CompareArgs {}

pub fn run(_args: CompareArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`attnbench compare` is not built yet")
}
