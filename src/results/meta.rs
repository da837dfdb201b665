//! `meta.json`: where and how a run was made. Written when the run starts and again when a resume
//! starts a new segment — always atomically (temporary file, fsync, rename), so a full disk or a kill
//! leaves either the old file or the new one, never a torn or empty one.
//!
//! The top-level suite and settings fields describe the run's latest segment (what a `--resume` must
//! match); `segments` is the history, one entry per segment, and every row's `segment` column points
//! into it.

use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// TF32 for fp32 work on CUDA as attnbench set it for every case (`sys::precision`): `off` or `on`,
    /// with what that covers. Each row's `tf32` column has what was read back.
    #[serde(default)]
    pub tf32: String,
    pub suite_file: String,
    /// SHA-256 of the suite file's bytes.
    pub suite_sha256: String,
    pub command_line: String,
    /// Measurement settings in effect (warmup, repeats, timing mode, ...).
    pub settings: serde_json::Value,
    /// The suite's `name` (or file stem): a resume with another suite is refused.
    #[serde(default)]
    pub suite_name: String,
    /// The suite file's text, so a refused resume can say what changed, key by key.
    #[serde(default)]
    pub suite_toml: String,
    /// Hash of everything besides the case that changes a case's numbers (see
    /// `suite::identity`); the rows' `measure_id` column.
    #[serde(default)]
    pub measure_id: String,
    /// What `measure_id` hashes, in readable form.
    #[serde(default)]
    pub measure_setup: serde_json::Value,
    /// One entry per segment, oldest first; empty in a meta.json written before segments existed.
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// Non-empty for data that was not measured (test fixtures, examples): how it was made. Every
    /// report rendered from such a run says so on the page.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub synthetic: String,
    // issue 33: what bounds the power and clocks the rows' energy columns were measured under.
    /// Per GPU, as NVML gives them: enforced power limit (W), application clocks (MHz), persistence
    /// mode. Empty without NVML.
    #[serde(default)]
    pub gpu_power: Vec<crate::measure::power::nvml::GpuPowerSettings>,
    /// Where the rows' power columns come from on this machine: `nvml` / `rapl` / `unavailable` for
    /// GPU and CPU cases.
    #[serde(default)]
    pub power_sources: String,
}

/// One stretch of a run made with one suite text and one measurement setup. Segment 1 is the run as
/// started; `attnbench run --resume --new-segment` after a change adds the next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub segment: u32,
    pub started_utc: String,
    pub suite_file: String,
    pub suite_sha256: String,
    pub measure_id: String,
    pub command_line: String,
    /// What changed against the previous segment (one line), empty for segment 1.
    #[serde(default)]
    pub changed: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The I/O error is part of the message, not a `source`: the CLI prints the error chain on one
    /// line, and a source would repeat it.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: not a run meta.json ({msg})")]
    Parse { path: PathBuf, msg: String },
}

impl RunMeta {
    /// The latest segment number (1 for a meta.json without segments).
    pub fn current_segment(&self) -> u32 {
        self.segments.last().map(|s| s.segment).unwrap_or(1)
    }

    /// Reads and parses `path`. An empty file is a parse error like any other.
    pub fn read(path: &Path) -> Result<RunMeta, MetaError> {
        let text = std::fs::read_to_string(path).map_err(|source| MetaError::Io { path: path.to_path_buf(), err: source })?;
        if text.trim().is_empty() {
            return Err(MetaError::Parse { path: path.to_path_buf(), msg: format!("empty file, {} bytes", text.len()) });
        }
        serde_json::from_str(&text).map_err(|e| MetaError::Parse { path: path.to_path_buf(), msg: e.to_string() })
    }

    /// Writes `path` atomically: `path.tmp` is written and synced, then renamed over `path`, then the
    /// directory is synced so the rename itself survives a crash.
    pub fn write_atomic(&self, path: &Path) -> Result<(), MetaError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |err| MetaError::Io { path: p, err }
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| MetaError::Parse { path: path.to_path_buf(), msg: e.to_string() })? + "\n";
        let tmp = path.with_extension("json.tmp");
        let result = (|| {
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(text.as_bytes()).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, path).map_err(io(path))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta.json");
        std::fs::write(&p, "").unwrap();
        assert!(matches!(RunMeta::read(&p), Err(MetaError::Parse { .. })));
        let m = RunMeta { run_id: "r".into(), segments: vec![Segment { segment: 1, ..Default::default() }], ..Default::default() };
        m.write_atomic(&p).unwrap();
        assert_eq!(RunMeta::read(&p).unwrap().run_id, "r");
        assert_eq!(RunMeta::read(&p).unwrap().current_segment(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no meta.json.tmp left");
    }

    #[test]
    fn old_meta_without_segments_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta.json");
        let old = serde_json::json!({"run_id": "x", "started_utc": "", "attnbench_version": "", "git_sha": "", "host": "", "cpu": "", "cpu_cores": 1,
            "gpu": "", "driver": "", "cuda": "", "torch": "", "tch": "", "mpi": "", "clocks": "", "suite_file": "", "suite_sha256": "",
            "command_line": "", "settings": {}});
        std::fs::write(&p, old.to_string()).unwrap();
        let m = RunMeta::read(&p).unwrap();
        assert_eq!((m.run_id.as_str(), m.current_segment()), ("x", 1));
    }
}
