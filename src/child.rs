//! Child processes that answer in lines: the runner's kernel worker (`attnbench worker`) and the
//! external kernel workers. One way to start them and one way to stop them:
//!
//! - each child leads its own process group (a terminal's Ctrl-C reaches the parent only, which stops
//!   the child in order; killing the group also kills what the child started, e.g. torch.compile's
//!   compile workers);
//! - each child dies with its parent, however the parent dies (`PR_SET_PDEATHSIG`), so no worker is
//!   left running as an orphan;
//! - stderr goes to a file the parent reads when the child fails; stdout is read on a thread, and only
//!   lines starting with the protocol's prefix are answers (stray library output is ignored).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// For `Command::pre_exec`: the child gets `sig` when the parent's thread that spawned it dies,
/// however it dies (SIGKILL included): SIGKILL for a worker, SIGTERM for `mpirun` (which then takes its
/// ranks down). Also closes the window where the parent died before the `prctl`: then the child exits
/// at once. Spawn from a long-lived thread (a main thread): the signal follows the spawning thread,
/// not the process.
///
/// # Safety
/// Runs between fork and exec: only async-signal-safe calls (prctl, getppid, _exit).
pub unsafe fn die_with_parent(expected_parent: libc::pid_t, sig: libc::c_int) -> std::io::Result<()> {
    if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if libc::getppid() != expected_parent {
        libc::_exit(1);
    }
    Ok(())
}

/// Stops a child that leads its own process group (started with `process_group(0)`) and everything
/// in that group: SIGTERM first (so `mpirun` can take its ranks down), SIGKILL to the whole group once
/// the leader has exited or after `grace`, then reaps the leader.
pub fn stop_group(child: &mut Child, grace: Duration) {
    let g = -(child.id() as i32);
    // SAFETY: kill(2) on our own child's process group.
    unsafe { libc::kill(g, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Members that ignored SIGTERM (or were left behind by the leader); the leader itself if alive.
    // SAFETY: as above.
    unsafe { libc::kill(g, libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}

/// How a child ended, in words for a row's `error`.
pub fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) if s.signal().is_some() => format!("died with signal {}", s.signal().unwrap_or(0)),
        Some(s) => format!("exited with {s}"),
        None => "closed its stdout".into(),
    }
}

/// What waiting for an answer gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// An answer line, the prefix stripped.
    Line(String),
    /// The child closed its stdout (it exited or crashed).
    Eof,
    /// Nothing within the wait.
    Timeout,
}

/// Longest stdout line kept, in bytes. An answer is one JSON line (a row, or a worker's `times` with at
/// most a million repeats, ≈ 25 MB); a child writing one endless line would otherwise grow this process
/// to gigabytes before its timeout (issue 30). A longer answer line is a protocol violation: the
/// reader hands over [`overlong`]'s text (not JSON, so the protocol layer rejects it, naming the cause)
/// and stops reading, which the child meets as a closed pipe. Longer lines that are not answers are
/// skipped without being kept.
pub const MAX_LINE: usize = 64 << 20;

/// The text handed over in place of an answer line longer than `max` bytes.
pub fn overlong(max: usize) -> String {
    format!("protocol violation: an answer line longer than {} MiB (the rest was not read)", max >> 20)
}

/// Reads `r` line by line, keeping at most `max` bytes of a line, and sends each line that starts
/// with `prefix` (prefix stripped) to `tx` until end of input, a read error, or an overlong answer.
fn read_answers(mut r: impl BufRead, prefix: &str, max: usize, tx: &mpsc::Sender<String>) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match std::io::Read::take(r.by_ref(), max as u64 + 1).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.len() > max && buf.last() != Some(&b'\n') {
            if buf.starts_with(prefix.as_bytes()) {
                let _ = tx.send(overlong(max));
                return;
            }
            // Not an answer: skip the rest of the line without keeping it.
            loop {
                buf.clear();
                match std::io::Read::take(r.by_ref(), max as u64).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if buf.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
            continue;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let line = String::from_utf8_lossy(&buf);
        if let Some(answer) = line.strip_prefix(prefix) {
            if tx.send(answer.to_string()).is_err() {
                return;
            }
        }
    }
}

/// A running child speaking a line protocol (see the module doc).
pub struct LineChild {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr_path: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl LineChild {
    /// Starts `cmd` (stdio is set here) in its own process group, to be sent `death_signal` when this
    /// process dies; lines starting with `prefix` on its stdout are its answers.
    pub fn spawn(mut cmd: Command, prefix: &'static str, death_signal: libc::c_int) -> std::io::Result<LineChild> {
        let dir = tempfile::tempdir()?;
        let stderr_path = dir.path().join("stderr");
        let stderr = std::fs::File::create(&stderr_path)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr).process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: die_with_parent only makes async-signal-safe calls.
        unsafe { cmd.pre_exec(move || die_with_parent(parent, death_signal)) };
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || read_answers(BufReader::new(stdout), prefix, MAX_LINE, &tx));
        Ok(LineChild { child, stdin, lines: rx, stderr_path, _stderr_dir: dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one request line (a newline is added) and flushes it.
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()
    }

    /// The next answer line, waiting at most `wait`.
    pub fn recv(&self, wait: Duration) -> Recv {
        match self.lines.recv_timeout(wait) {
            Ok(line) => Recv::Line(line),
            Err(RecvTimeoutError::Timeout) => Recv::Timeout,
            Err(RecvTimeoutError::Disconnected) => Recv::Eof,
        }
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The last three non-empty stderr lines, joined with ` | ` (for a row's `error`).
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr_text())
    }

    /// Whether the child is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status, waiting up to `wait` for the child to finish exiting.
    pub fn exit_status(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }

    /// Stops the child's whole process group (see [`stop_group`]) and reaps the child.
    pub fn stop(&mut self, grace: Duration) {
        stop_group(&mut self.child, grace);
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already reaped: its pid may belong to someone else now
        }
        self.stop(Duration::ZERO);
    }
}

/// The last three non-empty lines of `text`, joined with ` | `.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_prefixed_lines_and_stderr_is_kept() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "read x; echo noise; echo \"@@ got $x\"; echo oops >&2; exit 3"]);
        let mut c = LineChild::spawn(cmd, "@@ ", libc::SIGKILL).unwrap();
        c.send_line("hi").unwrap();
        assert_eq!(c.recv(Duration::from_secs(10)), Recv::Line("got hi".into()));
        assert_eq!(c.recv(Duration::from_secs(10)), Recv::Eof);
        assert_eq!(describe_exit(c.exit_status(Duration::from_secs(5))), "exited with exit status: 3");
        assert_eq!(c.stderr_tail(), "oops");
    }

    #[test]
    fn an_endless_answer_line_is_cut_at_the_cap() {
        // A child that writes one answer line without end: the reader keeps at most the cap and hands
        // over the protocol-violation text; noise lines beyond the cap are skipped.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "head -c 300000 /dev/zero | tr '\\0' x; echo; echo '@@ small'; printf '@@ '; cat /dev/zero"]);
        let (tx, rx) = mpsc::channel();
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let t = std::thread::spawn(move || read_answers(BufReader::new(out), "@@ ", 100_000, &tx));
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "small");
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), overlong(100_000));
        t.join().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        // And through LineChild, with the real cap: the line arrives as the protocol-violation text.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "printf '@@ '; cat /dev/zero"]);
        let c = LineChild::spawn(cmd, "@@ ", libc::SIGKILL).unwrap();
        assert_eq!(c.recv(Duration::from_secs(60)), Recv::Line(overlong(MAX_LINE)));
    }

    #[test]
    fn stop_kills_the_whole_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 60 & echo \"@@ $!\"; wait"]);
        let mut c = LineChild::spawn(cmd, "@@ ", libc::SIGKILL).unwrap();
        let Recv::Line(grandchild) = c.recv(Duration::from_secs(10)) else { panic!("no pid") };
        c.stop(Duration::ZERO);
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !std::path::Path::new(&format!("/proc/{grandchild}")).exists()
                || std::fs::read_to_string(format!("/proc/{grandchild}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
        });
        assert!(gone, "the child's own child {grandchild} survived");
    }
}
