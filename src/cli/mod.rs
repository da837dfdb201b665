//! One file per subcommand: its clap arguments and its `run`. `src/main.rs` only dispatches.

pub mod mask;
