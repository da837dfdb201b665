//! One run folder, one writer. Whoever writes a run folder ([`super::RunFolder`]: `attnbench run`,
//! `cp --out`, `simulate --out`) holds an exclusive advisory lock (`flock`) on `DIR/attnbench.lock`
//! for as long as it writes; the file says who holds it (pid, host, since when). A second writer on
//! the same folder — a `--resume` next to a running sweep, or two plain runs started at the same
//! instant — does not get the lock and stops with one line naming the holder (exit 2).
//!
//! The kernel releases a `flock` when its holder dies, however it dies, so a killed run never leaves a
//! stale lock behind; the file itself stays (deleting it would let a third runner lock a fresh inode
//! while a second still holds the old one). The descriptor is close-on-exec: workers and `mpirun`
//! never inherit the lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::BadInput;

/// File name of the lock inside a run folder.
pub const LOCK_FILE: &str = "attnbench.lock";

/// Held for the lifetime of the value; dropping it (or the process ending) releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it: one line, exit 2.
    #[error(transparent)]
    Busy(#[from] BadInput),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

impl RunLock {
    /// Takes the lock on `dir` (which must exist) without waiting.
    pub fn acquire(dir: &Path) -> Result<RunLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |err| LockError::Io { path: path.clone(), err };
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        // A `probe` by another starting runner holds a shared lock for microseconds: try a few times
        // over ~50 ms before calling the folder busy (a real holder holds it for the whole run).
        let mut tries = 0;
        // SAFETY: flock on a descriptor we own.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            tries += 1;
            if tries == 10 {
                return Err(LockError::Busy(busy(dir, &path)));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let me = format!("pid {} on host {} since {}\n", std::process::id(), hostname(), chrono::Utc::now().to_rfc3339());
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(me.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(RunLock { _file: file, path })
    }
}

/// Fails (one line naming the holder) when a runner holds `dir`'s lock right now. Creates nothing:
/// for the checks made before a run touches its folder. [`RunLock::acquire`] is the real test.
pub fn probe(dir: &Path) -> Result<(), BadInput> {
    let path = dir.join(LOCK_FILE);
    let Ok(file) = File::open(&path) else { return Ok(()) };
    // SAFETY: flock on a descriptor we own; a shared lock conflicts only with a holder's exclusive one.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
        return Err(busy(dir, &path));
    }
    Ok(())
}

fn busy(dir: &Path, path: &Path) -> BadInput {
    BadInput::new(format!(
        "{}: this run folder is in use by {} (lock {}); wait for that run to finish, stop it, or choose another --out",
        dir.display(),
        holder(path),
        path.display()
    ))
}

/// What the holder wrote into the lock file. It writes right after taking the lock, so a runner that
/// lost a race by microseconds may find it still empty: look again for a moment before giving up.
fn holder(path: &Path) -> String {
    for _ in 0..20 {
        let mut text = String::new();
        if let Ok(mut f) = File::open(path) {
            let _ = f.read_to_string(&mut text);
        }
        let text = text.trim();
        if !text.is_empty() {
            return text.to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    "another attnbench process (it has not written its pid yet)".into()
}

/// This machine's name, for the lock file (a run folder on a shared file system can be locked from
/// another host).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if end > 0 {
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    "unknown-host".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder_and_first_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in this process conflicts too.
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        assert!(err.contains("in use"), "{err}");
        drop(first);
        let again = RunLock::acquire(dir.path());
        assert!(again.is_ok());
    }
}
