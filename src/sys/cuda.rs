//! CUDA events (timing-enabled), device synchronisation and the caching allocator's statistics,
//! through device-generic ATen APIs (the PyPI wheel ships no CUDA headers).

use std::ffi::{c_char, c_int, c_void};

use super::{call, SysError};

extern "C" {
    fn ab_event_new(ev: *mut *mut c_void, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_event_free(ev: *mut c_void);
    fn ab_event_record(ev: *mut c_void, device: c_int, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_event_elapsed_ms(start: *mut c_void, end: *mut c_void, ms: *mut f64, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_device_synchronize(device: c_int, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_mem_stats(device: c_int, current: *mut i64, peak: *mut i64, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_mem_reset_peak(device: c_int, err: *mut c_char, errlen: usize) -> c_int;
}

/// A timing-enabled CUDA event (`c10::EventFlag::BACKEND_DEFAULT`; the default flag disables timing).
pub struct CudaEvent(*mut c_void);

impl CudaEvent {
    pub fn new() -> Result<Self, SysError> {
        let mut p = std::ptr::null_mut();
        // SAFETY: `p` receives a new event handle on success.
        call(|e, n| unsafe { ab_event_new(&mut p, e, n) })?;
        Ok(CudaEvent(p))
    }

    /// Records on the current stream of CUDA device `device` (stream order: after everything enqueued
    /// before, before everything enqueued after; the host does not wait).
    pub fn record(&self, device: usize) -> Result<(), SysError> {
        // SAFETY: a live event handle.
        call(|e, n| unsafe { ab_event_record(self.0, device as c_int, e, n) })
    }

    /// Milliseconds from `self` to `end`; the host waits for `end` to complete.
    pub fn elapsed_ms(&self, end: &CudaEvent) -> Result<f64, SysError> {
        let mut ms = 0.0;
        // SAFETY: two live event handles.
        call(|e, n| unsafe { ab_event_elapsed_ms(self.0, end.0, &mut ms, e, n) })?;
        Ok(ms)
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        // SAFETY: the handle came from ab_event_new and is freed once.
        unsafe { ab_event_free(self.0) }
    }
}

/// Blocks the host until every stream of CUDA device `device` is idle.
pub fn device_synchronize(device: usize) -> Result<(), SysError> {
    // SAFETY: plain int and the error buffer.
    call(|e, n| unsafe { ab_device_synchronize(device as c_int, e, n) })
}

/// (bytes allocated now, peak bytes since the last [`mem_reset_peak`]) of the CUDA caching allocator.
pub fn mem_stats(device: usize) -> Result<(u64, u64), SysError> {
    let (mut cur, mut peak) = (0i64, 0i64);
    // SAFETY: out-pointers live for the call.
    call(|e, n| unsafe { ab_mem_stats(device as c_int, &mut cur, &mut peak, e, n) })?;
    Ok((cur.max(0) as u64, peak.max(0) as u64))
}

pub fn mem_reset_peak(device: usize) -> Result<(), SysError> {
    // SAFETY: plain int and the error buffer.
    call(|e, n| unsafe { ab_mem_reset_peak(device as c_int, e, n) })
}
