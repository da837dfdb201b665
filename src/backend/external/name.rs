//! The names of external kernels, `ext:NAME`: a leaf every file of this folder may read (the backend,
//! the configuration that finds NAME's worker, the built-in adapters), so none of them imports another
//! for a name.

/// Backend names of external kernels start with this.
pub const PREFIX: &str = "ext:";

pub fn is_external(backend: &str) -> bool {
    backend.starts_with(PREFIX)
}

/// Environment variable that names the worker command of `ext:NAME` on this machine.
pub fn worker_env_var(name: &str) -> String {
    format!("ATTNBENCH_WORKER_{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// A backend name `ext:NAME` → `NAME`, when NAME is a usable name (letters, digits, `-`, `_`).
pub fn adapter_name(backend: &str) -> Option<&str> {
    let n = backend.strip_prefix(PREFIX)?;
    (!n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')).then_some(n)
}
