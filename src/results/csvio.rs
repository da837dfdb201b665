//! Crash-safe CSV: rows are appended and flushed (and fsync'd) one at a time, so a sweep killed at any
//! moment leaves every finished case on disk. A process killed mid-write can leave a partial last line;
//! [`CsvAppender::open`] detects it (no trailing newline, or a line that does not parse as a row) and
//! truncates the file back to the last complete row.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::row::Row;

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: line {line}: {msg}")]
    Parse { path: PathBuf, line: u64, msg: String },
    #[error("{path}: header does not match this attnbench's row schema (expected `{expected}…`)")]
    Header { path: PathBuf, expected: String },
    /// A CSV from another attnbench version: readable, but rows cannot be appended to it.
    #[error("{path}: written by another attnbench version (columns: {detail}); rows cannot be appended to it — start a new --out")]
    Columns { path: PathBuf, detail: String },
    /// A file that is not an attnbench results CSV at all: never truncated, repaired or appended to.
    #[error("{path}: not an attnbench results CSV (its first line is `{first}`); refusing to change it — choose another --out")]
    Foreign { path: PathBuf, first: String },
}

impl CsvError {
    /// For the CLI: a CSV that cannot be continued (another version's columns, a malformed line that
    /// is not the torn last one) is the user's input to fix, exit 2; I/O errors stay errors. The
    /// message names the path (printed once).
    pub fn into_cli(self) -> anyhow::Error {
        match self {
            // A path that is a folder, or a place this user may not write, is theirs to fix.
            CsvError::Io { ref source, .. }
                if matches!(source.kind(), io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory | io::ErrorKind::PermissionDenied) =>
            {
                crate::error::BadInput::new(self.to_string()).into()
            }
            CsvError::Io { .. } => anyhow::anyhow!("{self}"),
            other => crate::error::BadInput::new(other.to_string()).into(),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CsvError + '_ {
    move |source| CsvError::Io { path: path.to_path_buf(), source }
}

/// Appends rows to a results CSV, writing the header when the file is new.
pub struct CsvAppender {
    path: PathBuf,
    file: File,
    /// Rows already present when the file was opened (after repair).
    pub existing: Vec<Row>,
    /// Bytes dropped from a truncated last line, if any (reported by the runner).
    pub repaired_bytes: u64,
}

impl CsvAppender {
    /// Opens (creating if needed) `path` for appending. Existing complete rows are parsed and kept in
    /// `existing`; a torn last line is cut off. A file whose header is not exactly this attnbench's
    /// columns is refused: appending would write rows that no longer line up with their header.
    pub fn open(path: &Path) -> Result<Self, CsvError> {
        check_ours(path)?;
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_err(path))?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io_err(path))?;
        let (existing, good_len) = parse_prefix(&text, path)?;
        if good_len > 0 {
            check_columns(&text, path)?;
        }
        let mut repaired_bytes = 0;
        if good_len < text.len() {
            repaired_bytes = (text.len() - good_len) as u64;
            file.set_len(good_len as u64).map_err(io_err(path))?;
            file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
        }
        if good_len == 0 {
            let header = Row::header().join(",") + "\n";
            file.write_all(header.as_bytes()).map_err(io_err(path))?;
            file.sync_data().map_err(io_err(path))?;
        }
        Ok(CsvAppender { path: path.to_path_buf(), file, existing, repaired_bytes })
    }

    /// Appends one row and makes it durable before returning.
    pub fn append(&mut self, row: &Row) -> Result<(), CsvError> {
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        w.serialize(row).map_err(|e| CsvError::Parse { path: self.path.clone(), line: 0, msg: e.to_string() })?;
        let bytes = w.into_inner().map_err(|e| CsvError::Parse { path: self.path.clone(), line: 0, msg: e.to_string() })?;
        self.file.write_all(&bytes).map_err(io_err(&self.path))?;
        self.file.flush().map_err(io_err(&self.path))?;
        self.file.sync_data().map_err(io_err(&self.path))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The rows of `text` and the length in bytes of the part they come from. Only the *last* line may
/// be left out, as torn (no trailing newline, or not a row: a run killed while appending it); a bad
/// line anywhere else is an error naming it — dropping it and everything after would lose rows.
fn parse_prefix(text: &str, path: &Path) -> Result<(Vec<Row>, usize), CsvError> {
    let complete = text.rfind('\n').map_or(0, |p| p + 1);
    let first_try = match parse_rows(&text[..complete], path) {
        Ok(rows) => return Ok((rows, complete)),
        Err(e @ CsvError::Header { .. }) if complete > 0 => return Err(e),
        Err(e) => e,
    };
    // The last complete line itself may be the torn one (a fragment that happens to end the file with
    // a newline): drop it, but only it.
    match text[..complete.saturating_sub(1)].rfind('\n') {
        Some(p) if p > 0 => match parse_rows(&text[..p + 1], path) {
            Ok(rows) => Ok((rows, p + 1)),
            Err(_) => Err(first_try),
        },
        _ if complete == 0 => Ok((vec![], 0)),
        _ => Err(first_try),
    }
}

/// Rows of a run's CSV as `--resume` will see them (a torn last line left out), without changing the
/// file. A missing file has no rows.
pub fn peek_rows(path: &Path) -> Result<Vec<Row>, CsvError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_prefix(&text, path)?.0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(CsvError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// Whether rows can be appended to `path` (missing, empty, or with exactly this attnbench's columns
/// and parseable rows), without changing it: checked before a run records anything.
pub fn check_appendable(path: &Path) -> Result<(), CsvError> {
    check_ours(path)?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CsvError::Io { path: path.to_path_buf(), source: e }),
    };
    let (_, good_len) = parse_prefix(&text, path)?;
    if good_len > 0 {
        check_columns(&text, path)?;
    }
    Ok(())
}

/// Refuses an existing, non-empty file that is not an attnbench results CSV (before anything reads it
/// as rows, cuts a "torn" line or appends): ours starts with our header or a prefix of it (a header
/// cut by a kill), or with another version's header (a first line naming `case_id` and `status`, which
/// [`check_columns`] explains). Binary and non-UTF-8 files are foreign too.
fn check_ours(path: &Path) -> Result<(), CsvError> {
    let mut head = Vec::new();
    match File::open(path) {
        Ok(f) => {
            f.take(64 << 10).read_to_end(&mut head).map_err(io_err(path))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CsvError::Io { path: path.to_path_buf(), source: e }),
    }
    if head.is_empty() {
        return Ok(());
    }
    let header = Row::header().join(",") + "\n";
    let text = String::from_utf8_lossy(&head);
    let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
    let ours = text.starts_with(&header) || header.starts_with(text.as_ref()) || {
        let cols: Vec<&str> = first.split(',').collect();
        cols.contains(&"case_id") && cols.contains(&"status")
    };
    if ours {
        return Ok(());
    }
    let shown: String = first.chars().take(60).collect();
    Err(CsvError::Foreign { path: path.to_path_buf(), first: shown })
}

/// The header line must be exactly [`Row::header`] for rows to be appended under it.
fn check_columns(text: &str, path: &Path) -> Result<(), CsvError> {
    let got: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
    let want = Row::header();
    if got == want.iter().map(String::as_str).collect::<Vec<_>>() {
        return Ok(());
    }
    let missing: Vec<&str> = want.iter().map(String::as_str).filter(|w| !got.contains(w)).collect();
    let extra: Vec<&str> = got.iter().copied().filter(|g| !want.iter().any(|w| w == g)).collect();
    Err(CsvError::Columns { path: path.to_path_buf(), detail: format!("missing [{}], unknown [{}]", missing.join(", "), extra.join(", ")) })
}

/// Parses the text of a results CSV (`path` names it in errors); `read_rows` reads a file.
pub fn parse_rows(text: &str, path: &Path) -> Result<Vec<Row>, CsvError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let expected = Row::header();
    let header = rdr.headers().map_err(|e| CsvError::Parse { path: path.to_path_buf(), line: 1, msg: e.to_string() })?;
    if header.is_empty() && text.trim().is_empty() {
        return Ok(vec![]);
    }
    let got: Vec<&str> = header.iter().collect();
    if got.len() < 4 || got[..4] != expected.iter().map(String::as_str).collect::<Vec<_>>()[..4] {
        return Err(CsvError::Header { path: path.to_path_buf(), expected: expected[..4].join(",") });
    }
    let mut rows = Vec::new();
    for rec in rdr.deserialize::<Row>() {
        match rec {
            Ok(r) => rows.push(r),
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                return Err(CsvError::Parse { path: path.to_path_buf(), line, msg: e.to_string() });
            }
        }
    }
    Ok(rows)
}

/// Reads every row of a results CSV (strict: a malformed line is an error naming the line).
pub fn read_rows(path: &Path) -> Result<Vec<Row>, CsvError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    parse_rows(&lf_lines(text), path)
}

/// `text` with CRLF line ends made LF (a CSV saved by a spreadsheet on Windows): the csv reader's line
/// numbers are then the file's, so an error names the line the user sees.
pub fn lf_lines(text: String) -> String {
    if text.contains('\r') {
        text.replace("\r\n", "\n")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;
    use crate::results::Status;

    fn row(seqlen: usize) -> Row {
        let c = Case::kernel("naive", "causal", Default::default(), seqlen, HeadLayout { q: 2, kv: 1 }, 8, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
        let mut r = Row::for_case("run", &c, "cpu");
        r.status = Status::Ok;
        r.ms_median = Some(1.5);
        r.error = "a, \"quoted\" message".into();
        r
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_not_a_silent_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        {
            let mut a = CsvAppender::open(&p).unwrap();
            for s in [16, 32, 64] {
                a.append(&row(s)).unwrap();
            }
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[2] = "garbage,not,a,row";
        let broken = lines.join("\n") + "\n";
        std::fs::write(&p, &broken).unwrap();
        let err = CsvAppender::open(&p).err().expect("refused").to_string();
        assert!(err.contains("r.csv") && err.contains("line"), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), broken, "nothing dropped");
    }

    #[test]
    fn append_reopen_and_repair_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        {
            let mut a = CsvAppender::open(&p).unwrap();
            a.append(&row(16)).unwrap();
            a.append(&row(32)).unwrap();
        }
        let full = std::fs::read_to_string(&p).unwrap();
        // Simulate a kill in the middle of the third row.
        let third = {
            let mut a = CsvAppender::open(&p).unwrap();
            assert_eq!(a.existing.len(), 2);
            a.append(&row(64)).unwrap();
            std::fs::read_to_string(&p).unwrap()
        };
        let torn = &third[..full.len() + (third.len() - full.len()) / 2];
        std::fs::write(&p, torn).unwrap();
        let a = CsvAppender::open(&p).unwrap();
        assert_eq!(a.existing.len(), 2);
        assert!(a.repaired_bytes > 0);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), full);
        assert_eq!(read_rows(&p).unwrap()[1], row(32));
    }
}
