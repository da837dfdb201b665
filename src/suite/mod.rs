//! Suites: the TOML format ([`schema`]), planning ([`plan`]), filters ([`filter`]) and the crash-safe
//! runner ([`runner`]) with its worker process ([`worker`]).

pub mod faults;
pub mod filter;
pub mod oracle;
pub mod plan;
pub mod runner;
pub mod schema;
pub mod worker;

pub use filter::Filter;
pub use plan::{load, Plan, PlannedCase, SuiteError, SupportOracle};
