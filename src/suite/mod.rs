//! Suites: the TOML format ([`schema`]), planning ([`plan`]), filters ([`filter`]) and the crash-safe
//! runner ([`runner`]) with its worker process ([`worker`]) and its guards: the run-folder lock
//! ([`lock`]), resume identity and segments ([`identity`]), the memory guard ([`memory`]) and signal
//! handling ([`signals`]).

pub mod estimate;
#[cfg(feature = "test-hooks")]
pub mod faults;
pub mod filter;
pub mod identity;
pub mod memory;
pub mod oracle;
pub mod plan;
pub mod runner;
pub mod schema;
pub mod signals;
pub mod strategy_params;
pub mod worker;

pub use filter::Filter;
pub use plan::{load, Plan, PlannedCase, SuiteError, SupportOracle};

/// Whether `name` is one of the test-only fault backends and they are enabled; always false in a build
/// without the `test-hooks` feature (a released attnbench has no such backends).
pub(crate) fn is_fault_backend(name: &str) -> bool {
    #[cfg(feature = "test-hooks")]
    {
        faults::is_fault_backend(name)
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        let _ = name;
        false
    }
}
