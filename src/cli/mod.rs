//! One file per subcommand: its clap arguments and its `run`. `src/main.rs` only dispatches.

pub mod comm;
pub mod compare;
pub mod cp;
pub mod env;
pub mod kernel;
pub mod list;
pub mod mask;
pub mod plot;
pub mod report;
pub mod run;
pub mod simulate;
pub mod table;
