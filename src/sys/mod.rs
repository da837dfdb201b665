//! The Rust side of the C++ shim (`shim/shim.cpp`): what tch 0.24 does not expose. SDPA backend
//! toggles ([`sdp`]), the varlen ATen kernels ([`varlen`]), CUDA events, device synchronisation and
//! allocator statistics ([`cuda`]), and the counting CPU allocator ([`cpu_alloc`]). Also loads
//! `libtorch_cuda.so` once, before any CUDA query: rustc links with `--as-needed`, which drops it, and
//! CUDA would silently look absent.
//!
//! This layer knows nothing of cases, backends or measurements; everything above calls down into it.

pub mod cpu_alloc;
pub mod cuda;
pub mod precision;
pub mod rng;
pub mod sdp;
pub mod varlen;

use std::ffi::{c_char, c_int, CStr};
use std::sync::Once;

/// A shim call failed. Out-of-memory is split out because a row records it as its own status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SysError {
    #[error("out of memory: {0}")]
    Oom(String),
    #[error("{0}")]
    Torch(String),
}

impl SysError {
    /// Classifies a libtorch error message: "out of memory" anywhere (CUDA: "CUDA out of memory"; CPU
    /// allocator: "DefaultCPUAllocator: can't allocate memory" / "not enough memory") → [`SysError::Oom`].
    /// The message is flattened to one line without libtorch's C++ stack trace.
    pub fn classify(msg: &str) -> SysError {
        let first = crate::error::one_line(msg);
        let lower = msg.to_ascii_lowercase();
        if ["out of memory", "can't allocate memory", "not enough memory"].iter().any(|p| lower.contains(p)) {
            SysError::Oom(first)
        } else {
            SysError::Torch(first)
        }
    }
}

impl From<tch::TchError> for SysError {
    fn from(e: tch::TchError) -> Self {
        SysError::classify(&e.to_string())
    }
}

const ERR_LEN: usize = 2048;

/// Runs a shim call with an error buffer; a non-zero return becomes a classified [`SysError`].
fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), SysError> {
    let mut buf = vec![0 as c_char; ERR_LEN];
    if f(buf.as_mut_ptr(), ERR_LEN) == 0 {
        return Ok(());
    }
    // SAFETY: the shim writes a NUL-terminated message into the buffer on failure.
    let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
    Err(SysError::classify(&msg))
}

static CUDA_INIT: Once = Once::new();

/// `dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_GLOBAL)` once, so CUDA kernels register before the first
/// `tch::Cuda` query. A failure (CPU-only machine: the library or the driver is missing) is fine: CUDA
/// then reports not available.
pub fn ensure_cuda_loaded() {
    CUDA_INIT.call_once(|| {
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is intentionally leaked.
        unsafe {
            libc::dlopen(c"libtorch_cuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        }
    });
}

/// Whether a CUDA device is usable (after loading libtorch_cuda).
pub fn cuda_available() -> bool {
    ensure_cuda_loaded();
    tch::Cuda::is_available()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_messages_are_classified_and_cut_to_one_line() {
        assert!(
            matches!(SysError::classify("CUDA out of memory. Tried to allocate 2 GiB\nException raised from malloc at x.cpp:1"), SysError::Oom(m) if m == "CUDA out of memory. Tried to allocate 2 GiB")
        );
        assert!(matches!(SysError::classify("DefaultCPUAllocator: can't allocate memory: you tried"), SysError::Oom(_)));
        assert!(matches!(SysError::classify("\n  shape\n mismatch\nframe #0: at::foo"), SysError::Torch(m) if m == "shape mismatch"));
    }
}
