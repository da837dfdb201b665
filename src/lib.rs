//! attnbench: a benchmark harness for attention kernels and context parallelism.
//!
//! Data path: `suite` (TOML) → `plan` (cases) → `backend` (one device) | `cp` strategy (many ranks)
//! → `measure` → `results` (rows, CSV, meta.json) → `report` (plots, tables, compare, simulate).

pub mod advise;
pub mod attn;
pub mod backend;
pub mod case;
pub mod child;
pub mod cli;
pub mod cp;
pub mod envinfo;
pub mod error;
pub mod flops;
pub mod harness;
pub mod mask;
pub mod measure;
pub mod png;
pub mod report;
pub mod results;
pub mod sim;
pub mod suite;
pub mod sys;

pub use error::{BadInput, CheckFailed};
