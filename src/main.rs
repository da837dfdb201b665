//! The `attnbench` command line: parses arguments, calls the library, maps errors to exit codes
//! (0 ok, 1 a check failed or an unexpected failure, 2 bad input).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use attnbench::cli;

#[derive(Parser)]
#[command(name = "attnbench", version, about = "Benchmark attention kernels and context parallelism", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mask patterns: exact area/density, or a picture.
    #[command(subcommand)]
    Mask(cli::mask::MaskCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mask(c) => cli::mask::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = attnbench::error::exit_code(&e);
            // One line: the outermost context and its causes joined, never a backtrace.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::from(code)
        }
    }
}
