//! SIGINT / SIGTERM / SIGHUP during `attnbench run`. The handler only records the signal; the runner
//! polls [`pending`] while it waits for a case (every [`POLL`]) and between cases, then stops the
//! worker or the `mpirun` process group, writes no row for the interrupted case and exits with
//! 128 + the signal number (130 for SIGINT, 143 for SIGTERM), after saying how to `--resume`.
//!
//! Children cannot outlive the runner by accident either: the worker and `mpirun` run in their own
//! process groups (a terminal's Ctrl-C reaches only the runner, which then stops them in order), and
//! they are started with `PR_SET_PDEATHSIG`, so even a SIGKILLed runner takes them down
//! ([`crate::child::die_with_parent`]).

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
