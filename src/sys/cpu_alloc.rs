//! The counting CPU allocator of the shim: installed in front of libtorch's default CPU allocator
//! (`c10::SetAllocator`), it keeps the bytes of live CPU tensors and their peak in two atomics, so CPU
//! rows measure peak memory from the allocator like CUDA rows do from the caching allocator. It counts
//! tensor storage only (not Rust heap memory, not libtorch's internal scratch buffers that bypass the
//! registered allocator) and is process-wide: threads of one process share the counters.

use std::ffi::{c_char, c_int};

use super::{call, SysError};

extern "C" {
    fn ab_cpu_alloc_install(err: *mut c_char, errlen: usize) -> c_int;
    fn ab_cpu_mem_stats(current: *mut i64, peak: *mut i64, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_cpu_mem_reset_peak(err: *mut c_char, errlen: usize) -> c_int;
}

/// Installs the counting allocator (idempotent). Tensors allocated before keep their own deleter and
/// are simply not counted.
pub fn install() -> Result<(), SysError> {
    // SAFETY: the error buffer only.
    call(|e, n| unsafe { ab_cpu_alloc_install(e, n) })
}

/// (bytes of live CPU tensors now, peak since the last [`reset_peak`]); installs the allocator first.
pub fn stats() -> Result<(u64, u64), SysError> {
    install()?;
    let (mut cur, mut peak) = (0i64, 0i64);
    // SAFETY: out-pointers live for the call.
    call(|e, n| unsafe { ab_cpu_mem_stats(&mut cur, &mut peak, e, n) })?;
    Ok((cur.max(0) as u64, peak.max(0) as u64))
}

/// Peak := current (installs the allocator first).
pub fn reset_peak() -> Result<(), SysError> {
    install()?;
    // SAFETY: the error buffer only.
    call(|e, n| unsafe { ab_cpu_mem_reset_peak(e, n) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// The counters are process-wide and other tests allocate in parallel threads, so the check runs
    /// in a child process of this test binary that runs only [`counts_in_a_quiet_process`].
    #[test]
    fn counts_live_tensor_bytes_and_their_peak() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sys::cpu_alloc::tests::counts_in_a_quiet_process", "--ignored", "--nocapture", "--test-threads=1"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("counted:"), "{text}");
    }

    #[test]
    #[ignore = "run alone in a child process by counts_live_tensor_bytes_and_their_peak"]
    fn counts_in_a_quiet_process() {
        reset_peak().unwrap();
        let (base, _) = stats().unwrap();
        let a = Tensor::zeros([1 << 20], (Kind::Float, Device::Cpu)); // 4 MiB
        {
            let _b = Tensor::zeros([1 << 19], (Kind::Double, Device::Cpu)); // 4 MiB more, freed at once
        }
        let (cur, peak) = stats().unwrap();
        assert_eq!(cur - base, 4 << 20);
        assert_eq!(peak - base, 8 << 20);
        drop(a);
        assert_eq!(stats().unwrap().0, base);
        println!("counted: {} bytes live, {} peak", cur - base, peak - base);
    }
}
