//! Pattern parameters: `key=value` strings from the CLI (`--set`) or suite TOML, checked against the
//! keys a pattern declares, with typed getters that produce one-line errors naming the key.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::MaskError;

/// Ordered so that a case's parameter string (and its hash) is stable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Params(pub BTreeMap<String, String>);

impl Params {
    pub fn new() -> Self {
        Params(BTreeMap::new())
    }

    /// Parses `key=value` items (the CLI's `--set`).
    pub fn parse_kv<S: AsRef<str>>(items: &[S]) -> Result<Self, MaskError> {
        let mut p = Params::new();
        for item in items {
            let item = item.as_ref();
            let (k, v) = item.split_once('=').ok_or_else(|| MaskError::bad(item, "expected key=value"))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(MaskError::bad(item, "empty key in key=value"));
            }
            p.0.insert(k.to_string(), v.trim().to_string());
        }
        Ok(p)
    }

    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.0.insert(key.to_string(), value.to_string());
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, what: &str) -> Result<Option<T>, MaskError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse::<T>().map(Some).map_err(|_| MaskError::bad(key, format!("expected {what}, got `{v}`"))),
        }
    }

    /// A non-negative integer (token count). A negative value gets its own message.
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize, MaskError> {
        if let Some(v) = self.get(key) {
            if v.trim_start().starts_with('-') {
                return Err(MaskError::bad(key, format!("must be ≥ 0, got `{v}`")));
            }
        }
        Ok(self.parse::<usize>(key, "a non-negative integer")?.unwrap_or(default))
    }

    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, MaskError> {
        Ok(self.parse::<u64>(key, "a non-negative integer")?.unwrap_or(default))
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, MaskError> {
        let v = self.parse::<f64>(key, "a number")?.unwrap_or(default);
        if !v.is_finite() {
            return Err(MaskError::bad(key, "must be finite"));
        }
        Ok(v)
    }

    /// A comma-separated list of non-negative integers, e.g. `doc_lens=100,200,50`.
    pub fn usize_list(&self, key: &str) -> Result<Option<Vec<usize>>, MaskError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        v.split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| MaskError::bad(key, format!("expected a comma-separated list of integers, got `{s}`"))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Rejects keys a pattern does not declare.
    pub fn check_known(&self, pattern: &str, known: &[&str]) -> Result<(), MaskError> {
        for k in self.0.keys() {
            if !known.contains(&k.as_str()) {
                return Err(MaskError::UnknownParam {
                    pattern: pattern.to_string(),
                    key: k.clone(),
                    known: if known.is_empty() { "no parameters".into() } else { known.join(", ") },
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for Params {
    /// `k1=v1;k2=v2` — the `mask_params` CSV column; empty when there are none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(";"))
    }
}
