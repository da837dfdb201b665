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
//! NAME upper-cased and `-` → `_`, split on whitespace), then the defaults (the CPU torch interpreter
//! `launch/setup` installed in the cache, else `python3`; the built-in adapters).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::adapters::BUILTIN;
pub use super::name::{adapter_name, worker_env_var};

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
        self.python_choice().0
    }

    /// The interpreter for the built-in adapters and where that choice came from (what `attnbench
    /// env` shows): the suite's `[external] python` (or `kernel --python`), else `ATTNBENCH_PYTHON`,
    /// else the CPU torch interpreter `launch/setup` installed, else `python3`.
    pub fn python_choice(&self) -> (String, &'static str) {
        if let Some(p) = &self.python {
            return (p.clone(), "[external] python in the suite (or kernel --python)");
        }
        if let Some(p) = std::env::var("ATTNBENCH_PYTHON").ok().filter(|s| !s.is_empty()) {
            return (p, "ATTNBENCH_PYTHON");
        }
        if let Some(p) = setup_python(&setup_cache_dir()) {
            return (p.display().to_string(), "the CPU torch interpreter launch/setup installed");
        }
        ("python3".into(), "default (python3 on PATH)")
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

/// The folder `launch/setup` caches into: `$ATTNBENCH_CACHE`, else `~/.cache/attnbench`.
fn setup_cache_dir() -> PathBuf {
    match std::env::var_os("ATTNBENCH_CACHE").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/attnbench"),
    }
}

/// The interpreter `launch/setup` builds in `cache`, `python-torch-<version>-cpu/bin/python` (torch,
/// numpy), the newest torch version when there are several.
pub fn setup_python(cache: &Path) -> Option<PathBuf> {
    let version = |name: &str| -> Option<Vec<u64>> { name.strip_prefix("python-torch-")?.strip_suffix("-cpu")?.split('.').map(|p| p.parse().ok()).collect() };
    std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let python = e.path().join("bin/python");
            Some((version(&name)?, python)).filter(|(_, p)| p.exists())
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p)| p)
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

    #[test]
    fn setup_python_is_the_newest_installed_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(setup_python(dir.path()), None);
        for v in ["2.9.1", "2.11.0", "2.10.0"] {
            let bin = dir.path().join(format!("python-torch-{v}-cpu/bin"));
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("python"), b"").unwrap();
        }
        // A folder without an interpreter, and one that is not setup's, are not candidates.
        std::fs::create_dir_all(dir.path().join("python-torch-2.12.0-cpu")).unwrap();
        std::fs::create_dir_all(dir.path().join("python-torch-x-cpu/bin")).unwrap();
        assert_eq!(setup_python(dir.path()), Some(dir.path().join("python-torch-2.11.0-cpu/bin/python")));
    }
}
