//! attnbench: a benchmark harness for attention kernels and context parallelism.
//!
//! Data path: `suite` (TOML) → `plan` (cases) → `backend` (one device) | `cp` strategy (many ranks)
//! → `measure` → `results` (rows, CSV, meta.json) → `report` (plots, tables, compare, simulate).

pub mod case;
pub mod cli;
pub mod error;
pub mod flops;
pub mod mask;
pub mod measure;
pub mod results;

pub use error::{BadInput, CheckFailed};
