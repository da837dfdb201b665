//! The built-in Python adapters (`python/attnbench_worker`): their names, the helper package carried
//! inside the binary (so the helper always matches the protocol this binary speaks, wherever the binary
//! is copied) and the availability probe behind `attnbench list` and `attnbench env`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A built-in adapter: `ext:<name>`, served by `python -m attnbench_worker <name>`.
pub struct Builtin {
    pub name: &'static str,
    /// The Python package the adapter needs (what `unsupported: … not installed` names).
    pub package: &'static str,
}

/// In the order `attnbench list` shows them (the Python side's `ADAPTERS` lists the same names; a unit
/// test keeps them equal).
pub const BUILTIN: &[Builtin] = &[
    Builtin { name: "numpy-ref", package: "numpy" },
    Builtin { name: "torch-sdpa", package: "torch" },
    Builtin { name: "flex", package: "torch" },
    Builtin { name: "fa2-varlen", package: "flash_attn" },
    Builtin { name: "fa3-varlen", package: "flash_attn_interface" },
    Builtin { name: "magi-ffa", package: "magi_attention" },
    Builtin { name: "flashmask", package: "paddle" },
];

macro_rules! py {
    ($($f:literal),*) => { &[$(($f, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/python/", $f)))),*] };
}

/// The helper package, byte for byte as in `python/` when this binary was built.
pub const PACKAGE: &[(&str, &str)] = py!(
    "attnbench_worker/__init__.py",
    "attnbench_worker/__main__.py",
    "attnbench_worker/helper.py",
    "attnbench_worker/adapters/__init__.py",
    "attnbench_worker/adapters/numpy_ref.py",
    "attnbench_worker/adapters/torch_sdpa.py",
    "attnbench_worker/adapters/flex.py",
    "attnbench_worker/adapters/fa_varlen.py",
    "attnbench_worker/adapters/magi_ffa.py",
    "attnbench_worker/adapters/flashmask.py"
);

/// Where this binary's copy of the helper goes: the user's attnbench cache (`$ATTNBENCH_CACHE`, else
/// `$XDG_CACHE_HOME/attnbench`, else `~/.cache/attnbench`) — not a shared temporary folder, where another
/// user could plant code under the predictable name before a worker imports it.
fn cache_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("ATTNBENCH_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("attnbench")))
        .or_else(|| env("HOME").map(|p| p.join(".cache/attnbench")))
        // SAFETY: getuid cannot fail.
        .unwrap_or_else(|| std::env::temp_dir().join(format!("attnbench-{}", unsafe { libc::getuid() })))
}

/// The folder to put on `PYTHONPATH` so `import attnbench_worker` finds the helper: `ATTNBENCH_PYTHONPATH`
/// when set (working on the adapters), else this binary's copy, written once into the cache in a folder
/// named by the hash of its contents.
pub fn helper_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ATTNBENCH_PYTHONPATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut h = Sha256::new();
    for (name, text) in PACKAGE {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
    }
    let tag: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let base = cache_dir();
    let dir = base.join(format!("worker-py-{tag}"));
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    let tmp = base.join(format!("worker-py-{tag}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        for (name, text) in PACKAGE {
            let p = tmp.join(name);
            std::fs::create_dir_all(p.parent().unwrap())?;
            std::fs::write(p, text)?;
        }
        std::fs::write(tmp.join(".complete"), b"")
    };
    write().map_err(|e| format!("writing the Python helper to {}: {e}", tmp.display()))?;
    // Another process may have won the race; its copy is identical.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if dir.join(".complete").exists() {
        Ok(dir)
    } else {
        Err(format!("could not place the Python helper at {}", dir.display()))
    }
}

/// `PYTHONPATH` for a worker: the helper first, then whatever the caller had.
pub fn pythonpath() -> Result<String, String> {
    let helper = helper_path()?.display().to_string();
    Ok(match std::env::var("PYTHONPATH") {
        Ok(p) if !p.is_empty() => format!("{helper}:{p}"),
        _ => helper,
    })
}

/// One adapter as the probe saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterStatus {
    pub name: String,
    #[serde(default)]
    pub summary: String,
    pub available: bool,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub version: String,
    /// `seed` (draws its own inputs) or `file` (reads attnbench's).
    #[serde(default)]
    pub inputs: String,
}

/// What `python -m attnbench_worker --probe` reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub python: String,
    #[serde(default)]
    pub python_version: String,
    pub adapters: Vec<AdapterStatus>,
}

/// Asks the interpreter `python` (the choice of `config::ExternalConfig::python`) which built-in adapters
/// can run here (imports nothing heavy: about 0.1 s). `Err` says why the interpreter itself cannot be
/// used. Takes the interpreter, not the configuration: the configuration names the adapters (this
/// file's [`BUILTIN`]), so this file does not import it back.
pub fn probe(python: &str) -> Result<Probe, String> {
    #[derive(Deserialize)]
    struct Raw {
        python: String,
        adapters: Vec<AdapterStatus>,
    }
    let python = python.to_string();
    let child = Command::new(&python)
        .args(["-m", "attnbench_worker", "--probe"])
        .env("PYTHONPATH", pythonpath()?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{python}`: {e} (set ATTNBENCH_PYTHON or [external] python)"))?;
    let out = wait_with_timeout(child, Duration::from_secs(60)).ok_or_else(|| format!("`{python} -m attnbench_worker --probe` did not answer within 60 s"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{'));
    let raw: Raw = match line.map(serde_json::from_str::<Raw>) {
        Some(Ok(r)) => r,
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            return Err(format!("`{python} -m attnbench_worker --probe` failed: {last}"));
        }
    };
    Ok(Probe { python, python_version: raw.python, adapters: raw.adapters })
}

/// What `list` and `env` show: every built-in adapter, available here or why not, and the user workers
/// configured in this environment (`ATTNBENCH_WORKER_<NAME>`).
#[derive(Debug, Clone, Serialize)]
pub struct Availability {
    pub python: String,
    /// Where the interpreter choice came from (see `config::ExternalConfig::python_choice`).
    pub python_source: String,
    pub python_version: String,
    pub adapters: Vec<AdapterStatus>,
    /// (backend name, command) of each `ATTNBENCH_WORKER_<NAME>` variable.
    pub user_workers: Vec<(String, String)>,
}

/// `python_choice`: the interpreter and where that choice came from (`ExternalConfig::python_choice`).
pub fn availability(python_choice: (String, &str)) -> Availability {
    let user_workers = std::env::vars()
        .filter_map(|(k, v)| {
            k.strip_prefix("ATTNBENCH_WORKER_").filter(|n| !n.is_empty()).map(|n| (format!("{}{}", super::name::PREFIX, n.to_ascii_lowercase()), v))
        })
        .collect();
    let (python, python_source) = (python_choice.0, python_choice.1.to_string());
    match probe(&python) {
        Ok(p) => Availability { python: p.python, python_source, python_version: p.python_version, adapters: p.adapters, user_workers },
        Err(why) => Availability {
            python,
            python_source,
            python_version: String::new(),
            adapters: BUILTIN
                .iter()
                .map(|b| AdapterStatus {
                    name: b.name.into(),
                    summary: String::new(),
                    available: false,
                    reason: why.clone(),
                    version: String::new(),
                    inputs: String::new(),
                })
                .collect(),
            user_workers,
        },
    }
}

fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> Option<std::process::Output> {
    let start = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_registry_lists_the_same_adapters() {
        let registry = PACKAGE.iter().find(|(n, _)| *n == "attnbench_worker/adapters/__init__.py").unwrap().1;
        // Entries look like `    "numpy-ref": ("numpy_ref", "NumpyReference"),`.
        let names: Vec<&str> = registry.lines().filter(|l| l.contains("\": (\"")).filter_map(|l| l.trim().strip_prefix('"')?.split('"').next()).collect();
        assert_eq!(names, BUILTIN.iter().map(|b| b.name).collect::<Vec<_>>());
    }

    #[test]
    fn helper_is_written_once_and_complete() {
        let a = helper_path().unwrap();
        assert!(a.join("attnbench_worker/helper.py").exists());
        assert_eq!(helper_path().unwrap(), a);
    }
}
