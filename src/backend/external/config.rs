//! Which program serves `ext:NAME`: a built-in adapter (`python -m attnbench_worker NAME`) or a
//! user's worker command, configured per suite (`[external]`) and per machine (environment).
//!
//! ```toml
//! [external]
//! python = "/opt/torch/.venv/bin/python"       # interpreter for the built-in adapters
//! [external.workers]
//! mykernel = ["./my_worker", "--tile", "128"]  # ext:mykernel; a relative program is relative to the suite
//! ```
//!
//! Precedence: the suite, then the environment (`ATTNBENCH_PYTHON`, `ATTNBENCH_WORKER_<NAME>` with
//! NAME upper-cased and `-` → `_`, split on whitespace), then the defaults (`python3`; the built-in
//! adapters).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::adapters::BUILTIN;

/// A worker command: one string (split on whitespace) or an argv array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkerCommand {
    Line(String),
    Argv(Vec<String>),
}

impl WorkerCommand {
    pub fn argv(&self) -> Vec<String> {
        match self {
            WorkerCommand::Line(s) => s.split_whitespace().map(str::to_string).collect(),
            WorkerCommand::Argv(v) => v.clone(),
        }
    }
}

/// The `[external]` table of a suite (also built from `attnbench kernel --python/--worker`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Python interpreter for the built-in adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// `ext:NAME` → the command that serves it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workers: BTreeMap<String, WorkerCommand>,
}

/// Environment variable that names the worker command of `ext:NAME` on this machine.
pub fn worker_env_var(name: &str) -> String {
    format!("ATTNBENCH_WORKER_{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// A backend name `ext:NAME` → `NAME`, when NAME is a usable name (letters, digits, `-`, `_`).
pub fn adapter_name(backend: &str) -> Option<&str> {
    let n = backend.strip_prefix(super::PREFIX)?;
    (!n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')).then_some(n)
}

impl ExternalConfig {
    /// Relative worker programs (`./w.py`, `../bin/w`) are taken relative to `dir` (the suite's folder).
    pub fn relative_to(mut self, dir: Option<&Path>) -> Self {
        let Some(dir) = dir else { return self };
        for cmd in self.workers.values_mut() {
            let mut argv = cmd.argv();
            if let Some(p) = argv.first_mut() {
                if p.starts_with("./") || p.starts_with("../") {
                    *p = dir.join(&*p).display().to_string();
                }
            }
            *cmd = WorkerCommand::Argv(argv);
        }
        self
    }

    /// The interpreter for the built-in adapters.
    pub fn python(&self) -> String {
        self.python.clone().or_else(|| std::env::var("ATTNBENCH_PYTHON").ok().filter(|s| !s.is_empty())).unwrap_or_else(|| "python3".into())
    }

    /// The argv that serves `ext:NAME`, or why there is none.
    pub fn command(&self, name: &str) -> Result<Vec<String>, String> {
        if let Some(c) = self.workers.get(name) {
            let argv = c.argv();
            return if argv.is_empty() { Err(format!("[external.workers] {name}: empty command")) } else { Ok(argv) };
        }
        let var = worker_env_var(name);
        if let Ok(line) = std::env::var(&var) {
            let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            return if argv.is_empty() { Err(format!("{var} is set but empty")) } else { Ok(argv) };
        }
        if BUILTIN.iter().any(|a| a.name == name) {
            return Ok(vec![self.python(), "-m".into(), "attnbench_worker".into(), name.into()]);
        }
        let known: Vec<&str> = BUILTIN.iter().map(|a| a.name).collect();
        Err(format!(
            "ext:{name}: not a built-in adapter ({}) and no worker configured: set [external.workers] {name} = [\"cmd\", ...] in the suite or {var}",
            known.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_commands() {
        assert_eq!(adapter_name("ext:flex"), Some("flex"));
        assert_eq!(adapter_name("ext:"), None);
        assert_eq!(adapter_name("ext:a b"), None);
        assert_eq!(adapter_name("flex"), None);
        assert_eq!(worker_env_var("my-kernel"), "ATTNBENCH_WORKER_MY_KERNEL");
        let mut c = ExternalConfig { python: Some("/py".into()), ..Default::default() };
        assert_eq!(c.command("flex").unwrap(), ["/py", "-m", "attnbench_worker", "flex"]);
        c.workers.insert("mine".into(), WorkerCommand::Line("./w.py --x 1".into()));
        let c = c.relative_to(Some(Path::new("/suites")));
        assert_eq!(c.command("mine").unwrap(), ["/suites/./w.py", "--x", "1"]);
        assert!(c.command("nosuch-worker-xyz").unwrap_err().contains("ATTNBENCH_WORKER_NOSUCH_WORKER_XYZ"));
    }
}
