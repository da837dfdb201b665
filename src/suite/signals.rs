//! SIGINT / SIGTERM / SIGHUP during `attnbench run`. The handler only records the signal; the runner
//! polls [`pending`] while it waits for a case (every [`POLL`]) and between cases, then stops the
//! worker or the `mpirun` process group, writes no row for the interrupted case and exits with
//! 128 + the signal number (130 for SIGINT, 143 for SIGTERM), after saying how to `--resume`.
//!
//! Children cannot outlive the runner by accident either: the worker and `mpirun` run in their own
//! process groups (a terminal's Ctrl-C reaches only the runner, which then stops them in order), and
//! they are started with `PR_SET_PDEATHSIG`, so even a SIGKILLed runner takes them down
//! ([`die_with_parent`]).

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

static PENDING: AtomicI32 = AtomicI32::new(0);

/// How often a waiting runner looks at [`pending`]: the worst-case delay between a signal and the
/// worker being stopped.
pub const POLL: Duration = Duration::from_millis(50);

extern "C" fn record(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe. The first signal wins.
    let _ = PENDING.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// Installs the recording handler for SIGINT, SIGTERM and SIGHUP (replacing the default action,
/// which would kill the runner and leave its worker running).
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a plain sigaction with a handler that only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = record as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The signal received since [`install`], if any.
pub fn pending() -> Option<i32> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Name for messages: `SIGTERM`, `SIGINT`, `SIGHUP`.
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        s => format!("signal {s}"),
    }
}

/// The shell's convention: 128 + signal number.
pub fn exit_code(sig: i32) -> u8 {
    (128 + sig).clamp(0, 255) as u8
}

/// For `Command::pre_exec`: the child gets `sig` when the runner's thread that spawned it dies,
/// however it dies (SIGKILL included): SIGKILL for the worker, SIGTERM for `mpirun` (which then takes
/// its ranks down). Also closes the window where the runner died before the `prctl`: then the child
/// exits at once. Spawn from a long-lived thread (the runner's main thread): the signal follows the
/// spawning thread, not the process.
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
pub fn stop_group(child: &mut std::process::Child, grace: Duration) {
    let g = -(child.id() as i32);
    // SAFETY: kill(2) on our own child's process group.
    unsafe { libc::kill(g, libc::SIGTERM) };
    let start = std::time::Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Members that ignored SIGTERM (or were left behind by the leader); the leader itself if alive.
    unsafe { libc::kill(g, libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}
