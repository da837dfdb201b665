//! The one owner of a run folder: its lock (one writer at a time, see [`super::lock`]), `meta.json`
//! (written atomically, see [`super::meta`]) and its results CSV (rows appended and fsync'd one at a
//! time, see [`super::csvio`]). `attnbench run` (under its resume rules, `suite::identity`),
//! `attnbench cp --out` and `attnbench simulate --out` all write through it, so every results folder
//! has a `meta.json` that says how its rows were made, and every row names its run and segment.

use std::path::{Path, PathBuf};

use super::csvio::{check_appendable, CsvAppender, CsvError};
use super::lock::{LockError, RunLock};
use super::meta::{MetaError, RunMeta, Segment};
use super::row::Row;

/// Why a run folder could not be opened or written. Every variant names its path.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("--out {path}: cannot create the folder: {err}")]
    Create { path: PathBuf, err: std::io::Error },
    #[error("{path}: not an attnbench meta.json ({why}); refusing to replace it — choose another --out")]
    ForeignMeta { path: PathBuf, why: String },
}

/// Refuses a `meta.json` someone else wrote: a non-empty file that is not a JSON object with a
/// `run_id`. Ours is written atomically, so it is whole or (a full disk at start) empty — the empty
/// one is left to the writers' repair rules.
fn check_meta_ours(path: &Path) -> Result<(), FolderError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(FolderError::Meta(MetaError::Io { path: path.to_path_buf(), err })),
    };
    if text.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(());
    }
    let why = match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(v) if v.get("run_id").is_some_and(|r| r.is_string()) => return Ok(()),
        Ok(_) => "a JSON document without a run_id".to_string(),
        Err(e) => format!("not JSON: {e}"),
    };
    Err(FolderError::ForeignMeta { path: path.to_path_buf(), why })
}

impl FolderError {
    /// For the CLI: what the user can fix (a folder path that cannot be created, a folder in use, a CSV
    /// of another version or with a malformed line) is bad input, exit 2; other I/O failures stay
    /// errors (exit 1). One line either way.
    pub fn into_cli(self) -> anyhow::Error {
        match self {
            FolderError::Lock(LockError::Busy(b)) => b.into(),
            e @ (FolderError::Create { .. } | FolderError::ForeignMeta { .. }) => crate::error::BadInput::new(e.to_string()).into(),
            FolderError::Csv(e) => e.into_cli(),
            other => anyhow::anyhow!("{other}"),
        }
    }
}

/// What a writer decided about `meta.json` after reading it.
pub enum MetaDecision {
    /// The file is right as it is.
    Keep(RunMeta),
    /// Write this (atomically) before any row.
    Write(RunMeta),
}

/// An open, locked run folder.
pub struct RunFolder {
    pub dir: PathBuf,
    pub meta: RunMeta,
    pub csv: CsvAppender,
    _lock: RunLock,
}

impl RunFolder {
    /// Creates `dir` if needed, takes its lock, checks that `csv_name` can be appended to, then lets
    /// `decide` choose the meta this writer works under from the current `meta.json` (`None`: absent;
    /// `Some(Err)`: unreadable) and writes it when asked, and opens the CSV (repairing a torn last
    /// line). `decide` runs under the lock, before anything in the folder changes.
    pub fn open<E: From<FolderError>>(
        dir: &Path,
        csv_name: &str,
        decide: impl FnOnce(&Path, Option<Result<RunMeta, MetaError>>) -> Result<MetaDecision, E>,
    ) -> Result<RunFolder, E> {
        std::fs::create_dir_all(dir).map_err(|err| FolderError::Create { path: dir.to_path_buf(), err })?;
        let lock = RunLock::acquire(dir).map_err(FolderError::from)?;
        let csv_path = dir.join(csv_name);
        check_appendable(&csv_path).map_err(FolderError::from)?;
        let meta_path = dir.join("meta.json");
        check_meta_ours(&meta_path)?;
        let existing = meta_path.exists().then(|| RunMeta::read(&meta_path));
        let meta = match decide(&csv_path, existing)? {
            MetaDecision::Keep(m) => m,
            MetaDecision::Write(m) => {
                m.write_atomic(&meta_path).map_err(FolderError::from)?;
                m
            }
        };
        let csv = CsvAppender::open(&csv_path).map_err(FolderError::from)?;
        Ok(RunFolder { dir: dir.to_path_buf(), meta, csv, _lock: lock })
    }

    /// Opens the folder of `csv_path` to append the rows of one command (`attnbench cp --out`,
    /// `simulate --out`): a folder without a readable `meta.json` gets `fresh` as its run (segment 1);
    /// a folder with one keeps its run and records this command as its next segment.
    pub fn for_appending(csv_path: &Path, fresh: RunMeta) -> Result<RunFolder, FolderError> {
        let dir = csv_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = csv_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "results.csv".into());
        RunFolder::open(dir, &name, |_, existing| -> Result<MetaDecision, FolderError> {
            Ok(MetaDecision::Write(match existing {
                Some(Ok(mut old)) => {
                    let mut seg = fresh.segments.last().cloned().unwrap_or_default();
                    seg.segment = old.current_segment() + 1;
                    if old.segments.is_empty() {
                        old.segments.push(Segment {
                            segment: 1,
                            started_utc: old.started_utc.clone(),
                            command_line: old.command_line.clone(),
                            ..Default::default()
                        });
                    }
                    old.segments.push(seg);
                    old
                }
                _ => fresh,
            }))
        })
    }

    /// The segment new rows belong to.
    pub fn segment(&self) -> u32 {
        self.meta.current_segment()
    }

    /// Appends `row` (stamped with this run's id, the current segment and its measurement setup) and
    /// makes it durable before returning.
    pub fn append(&mut self, row: &mut Row) -> Result<(), CsvError> {
        row.run_id = self.meta.run_id.clone();
        row.segment = self.segment();
        row.measure_id = self.meta.segments.last().map(|s| s.measure_id.clone()).filter(|m| !m.is_empty()).unwrap_or_else(|| self.meta.measure_id.clone());
        self.csv.append(row)
    }

    pub fn csv_path(&self) -> &Path {
        self.csv.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;

    fn fresh(cmd: &str) -> RunMeta {
        RunMeta {
            run_id: format!("run-{cmd}"),
            command_line: cmd.into(),
            measure_id: format!("m-{cmd}"),
            segments: vec![Segment { segment: 1, command_line: cmd.into(), measure_id: format!("m-{cmd}"), ..Default::default() }],
            ..Default::default()
        }
    }

    /// Two commands appending to one CSV: the folder keeps the first run's identity, the second
    /// becomes segment 2, and each row names its run, segment and measurement setup.
    #[test]
    fn appending_commands_become_segments_of_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("sub").join("rows.csv");
        let case = Case::kernel("naive", "causal", Default::default(), 16, HeadLayout { q: 1, kv: 1 }, 8, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
        for cmd in ["a", "b"] {
            let mut f = RunFolder::for_appending(&csv, fresh(cmd)).unwrap();
            let mut row = Row::for_case("", &case, "cpu");
            f.append(&mut row).unwrap();
        }
        let meta = RunMeta::read(&dir.path().join("sub/meta.json")).unwrap();
        assert_eq!(meta.run_id, "run-a");
        assert_eq!(meta.segments.iter().map(|s| (s.segment, s.command_line.as_str())).collect::<Vec<_>>(), vec![(1, "a"), (2, "b")]);
        let rows = crate::results::read_rows(&csv).unwrap();
        let got: Vec<(&str, u32, &str)> = rows.iter().map(|r| (r.run_id.as_str(), r.segment, r.measure_id.as_str())).collect();
        assert_eq!(got, vec![("run-a", 1, "m-a"), ("run-a", 2, "m-b")]);
    }

    /// While one writer holds a folder, another is refused with a line naming the holder.
    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("results.csv");
        let _first = RunFolder::for_appending(&csv, fresh("a")).unwrap();
        let second = RunFolder::for_appending(&csv, fresh("b")).err().expect("locked");
        assert!(second.to_string().contains("pid"), "{second}");
    }
}
