//! Host allocator hygiene for CPU timings. glibc hands freed memory back to the OS whenever the top
//! of the heap grows past its trim threshold, and serves large blocks with fresh `mmap`s that are
//! unmapped on free; both thresholds adapt only when a big enough block happens to be freed. A CPU
//! kernel that allocates and frees tens of MB per call then page-faults its working set back in on
//! every timed iteration until something larger has been freed once — so the first case of a
//! process measured slower than the same case run later (ring-p2p full, S = 1024, 2 ranks, 4 runs:
//! first case 15.2–15.6 ms, the same case third 14.3–18.4 ms; with the thresholds below every case
//! 13.1–13.5 ms). Raising the trim threshold and pinning the mmap threshold at its maximum makes
//! steady-state iterations reuse the heap from the first one. CPU memory columns come from tensor
//! shapes, not RSS, so they are unaffected. `ATTNBENCH_MALLOC_DEFAULTS=1` keeps glibc's defaults.

use std::sync::OnceLock;

static IN_EFFECT: OnceLock<&'static str> = OnceLock::new();

/// Applies the thresholds once per process (glibc only; a no-op elsewhere); the binary calls it at
/// start-up, before any thread exists. Returns what is in effect.
pub fn tune_for_timing() -> &'static str {
    IN_EFFECT.get_or_init(|| {
        if std::env::var_os("ATTNBENCH_MALLOC_DEFAULTS").is_some_and(|v| v == "1") {
            "glibc defaults (ATTNBENCH_MALLOC_DEFAULTS=1)"
        } else {
            apply()
        }
    })
}

/// What [`tune_for_timing`] put in effect (for `meta.json`); "defaults" when it was never called (the
/// library used without the binary).
pub fn in_effect() -> &'static str {
    IN_EFFECT.get().copied().unwrap_or("defaults")
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> &'static str {
    /// Largest value glibc accepts for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2).
    const MMAP_THRESHOLD: i32 = 32 << 20;
    const TRIM_THRESHOLD: i32 = 1 << 30;
    // SAFETY: mallopt only changes allocator parameters; called once at start-up before threads.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 };
    if ok {
        "glibc mmap threshold 32 MiB, trim threshold 1 GiB"
    } else {
        "glibc defaults (mallopt refused)"
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> &'static str {
    "system allocator defaults"
}
