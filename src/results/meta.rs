//! `meta.json`: where and how a run was made, written once when the run starts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunMeta {
    pub run_id: String,
    pub started_utc: String,
    pub attnbench_version: String,
    pub git_sha: String,
    pub host: String,
    pub cpu: String,
    pub cpu_cores: usize,
    pub gpu: String,
    pub driver: String,
    pub cuda: String,
    pub torch: String,
    pub tch: String,
    pub mpi: String,
    /// GPU SM clock / CPU frequency information when available.
    pub clocks: String,
    /// Host allocator settings in effect (see `measure::allocator`).
    #[serde(default)]
    pub host_allocator: String,
    pub suite_file: String,
    /// SHA-256 of the suite file's bytes.
    pub suite_sha256: String,
    pub command_line: String,
    /// Measurement settings in effect (warmup, repeats, timing mode, ...).
    pub settings: serde_json::Value,
}
