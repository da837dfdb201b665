//! The suite file format (TOML). A suite is a list of grids; each grid's axes multiply into cases.
//! Unknown keys are errors everywhere (`deny_unknown_fields`), and every axis keeps its source span so
//! a semantic error (unknown backend, seqlen 0, `64:7`) can name the file and line.
//!
//! ```toml
//! name = "quick-cpu"
//! [measure]                 # crate::measure::MeasureSettings; every key optional
//! warmup = 1
//! repeats = 5
//! [[grid]]
//! patterns = ["full", "causal", { name = "sliding_window", params = { window_left = 256, window_right = 256 } }]
//! seqlens = [1024, 2048]
//! heads = ["8:2"]
//! head_dims = [64]
//! dtypes = ["fp32"]
//! passes = ["fwd", "bwd"]
//! backends = ["sdpa-flash", "naive"]
//! device = "cpu"
//! [[exclude]]
//! backend = "naive"
//! seqlen_min = 4096
//! [external]                # workers of ext:NAME backends (backend::external::config)
//! python = "/opt/torch/.venv/bin/python"
//! workers = { mine = ["./my_worker.py"] }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::measure::MeasureSettings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub measure: MeasureSettings,
    pub grid: Spanned<Vec<Grid>>,
    #[serde(default)]
    pub include: Vec<Spanned<CaseFilter>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<CaseFilter>>,
    /// Workers of `ext:` backends: `python`, `[external.workers]` (see `backend::external::config`).
    #[serde(default)]
    pub external: crate::backend::external::ExternalConfig,
}

/// A pattern on an axis: a bare name, or a name with parameters.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum PatternSpec {
    Name(String),
    WithParams {
        name: String,
        #[serde(default)]
        params: BTreeMap<String, toml::Value>,
        /// Optional display label (defaults to the name).
        label: Option<String>,
    },
}

/// One grid: the product of its axes. Kernel grids name `backends`; CP grids name `strategies` and
/// `world_sizes` (and the per-rank `backends`, default `sliced`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub patterns: Spanned<Vec<PatternSpec>>,
    pub seqlens: Spanned<Vec<i64>>,
    #[serde(default = "default_batch")]
    pub batch: Spanned<Vec<i64>>,
    #[serde(default = "default_heads")]
    pub heads: Spanned<Vec<String>>,
    #[serde(default = "default_head_dims")]
    pub head_dims: Spanned<Vec<i64>>,
    #[serde(default = "default_dtypes")]
    pub dtypes: Spanned<Vec<String>>,
    #[serde(default = "default_passes")]
    pub passes: Spanned<Vec<String>>,
    #[serde(default)]
    pub backends: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub strategies: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub world_sizes: Option<Spanned<Vec<i64>>>,
    /// For CP grids: `seqlens` are tokens per rank (LongCA-bench's 8K × world size) when true,
    /// total tokens when false.
    #[serde(default)]
    pub seqlen_per_rank: bool,
    /// Strategy options: shared keys go to the grid's strategies that take them
    /// (`{ ulysses_degree = 2 }`), a table per strategy gives its own, arrays sweep
    /// (`{ usp = { ulysses_degree = [2, 4] } }`); see `suite::strategy_params`.
    #[serde(default)]
    pub strategy_params: BTreeMap<String, toml::Value>,
    #[serde(default = "default_device")]
    pub device: Spanned<String>,
}

fn spanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}
fn default_batch() -> Spanned<Vec<i64>> {
    spanned(vec![1])
}
fn default_heads() -> Spanned<Vec<String>> {
    spanned(vec!["64:8".into()])
}
fn default_head_dims() -> Spanned<Vec<i64>> {
    spanned(vec![128])
}
fn default_dtypes() -> Spanned<Vec<String>> {
    spanned(vec!["bf16".into()])
}
fn default_passes() -> Spanned<Vec<String>> {
    spanned(vec!["fwd".into()])
}
fn default_device() -> Spanned<String> {
    spanned("cpu".into())
}

/// Matches cases; every given key must match (AND). Used by `[[include]]` / `[[exclude]]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct CaseFilter {
    pub backend: Option<String>,
    pub strategy: Option<String>,
    pub pattern: Option<String>,
    pub pass: Option<String>,
    pub dtype: Option<String>,
    pub heads: Option<String>,
    pub seqlen: Option<i64>,
    pub seqlen_min: Option<i64>,
    pub seqlen_max: Option<i64>,
    pub world_size: Option<i64>,
}

/// TOML scalar → the string form pattern parameters use.
pub fn value_to_param(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(a) => a.iter().map(value_to_param).collect::<Option<Vec<_>>>().map(|v| v.join(",")),
        _ => None,
    }
}
