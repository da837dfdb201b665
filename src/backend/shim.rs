//! Safe wrappers over the C++ shim (`shim/shim.cpp`): SDPA backend toggles, the varlen ATen kernels tch
//! does not expose, CUDA events and allocator statistics. Also loads `libtorch_cuda.so` once, before any
//! CUDA query (rustc links with `--as-needed`, which drops it, and CUDA would silently look absent).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Once;

use tch::Tensor;
use torch_sys::C_tensor;

use super::BackendError;

const ERR_LEN: usize = 2048;

extern "C" {
    fn ab_sdp_set(flash: c_int, mem_efficient: c_int, math: c_int, cudnn: c_int, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_sdp_get(bits: *mut c_int, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_flash_varlen_fwd(
        q: *const C_tensor,
        k: *const C_tensor,
        v: *const C_tensor,
        cu_q: *const C_tensor,
        cu_k: *const C_tensor,
        max_q: i64,
        max_k: i64,
        scale: f64,
        is_causal: c_int,
        window_left: i64,
        window_right: i64,
        out: *mut *mut C_tensor,
        lse: *mut *mut C_tensor,
        rng: *mut *mut C_tensor,
        unused: *mut *mut C_tensor,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn ab_efficient_varlen_fwd(
        q: *const C_tensor,
        k: *const C_tensor,
        v: *const C_tensor,
        cu_q: *const C_tensor,
        cu_k: *const C_tensor,
        max_q: i64,
        max_k: i64,
        scale: f64,
        custom_mask_type: i64,
        window: i64,
        out: *mut *mut C_tensor,
        lse: *mut *mut C_tensor,
        seed: *mut *mut C_tensor,
        offset: *mut *mut C_tensor,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn ab_cudnn_varlen_fwd(
        q: *const C_tensor,
        k: *const C_tensor,
        v: *const C_tensor,
        cu_q: *const C_tensor,
        cu_k: *const C_tensor,
        max_q: i64,
        max_k: i64,
        scale: f64,
        is_causal: c_int,
        out: *mut *mut C_tensor,
        lse: *mut *mut C_tensor,
        seed: *mut *mut C_tensor,
        offset: *mut *mut C_tensor,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn ab_event_new(ev: *mut *mut c_void, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_event_free(ev: *mut c_void);
    fn ab_event_record(ev: *mut c_void, device: c_int, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_event_elapsed_ms(start: *mut c_void, end: *mut c_void, ms: *mut f64, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_device_synchronize(device: c_int, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_mem_stats(device: c_int, current: *mut i64, peak: *mut i64, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_mem_reset_peak(device: c_int, err: *mut c_char, errlen: usize) -> c_int;
}

/// Runs a shim call with an error buffer; a non-zero return becomes a classified [`BackendError`].
fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), BackendError> {
    let mut buf = vec![0 as c_char; ERR_LEN];
    if f(buf.as_mut_ptr(), ERR_LEN) == 0 {
        return Ok(());
    }
    let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
    Err(BackendError::from_message(msg))
}

static CUDA_INIT: Once = Once::new();

/// `dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_GLOBAL)` once, so CUDA kernels register before the first
/// `tch::Cuda` query. A failure (CPU-only machine: the library or the driver is missing) is fine: CUDA then
/// reports not available.
pub fn ensure_cuda_loaded() {
    CUDA_INIT.call_once(|| {
        for name in [c"libtorch_cuda.so"] {
            // SAFETY: dlopen with a valid NUL-terminated name; the handle is intentionally leaked.
            unsafe {
                libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
            }
        }
    });
}

/// Whether a CUDA device is usable (after loading libtorch_cuda).
pub fn cuda_available() -> bool {
    ensure_cuda_loaded();
    tch::Cuda::is_available()
}

/// Which SDPA backends are allowed. Set with [`sdp_set`]; the global context is process-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpToggles {
    pub flash: bool,
    pub mem_efficient: bool,
    pub math: bool,
    pub cudnn: bool,
}

impl SdpToggles {
    pub const ALL: SdpToggles = SdpToggles { flash: true, mem_efficient: true, math: true, cudnn: true };
}

pub fn sdp_set(t: SdpToggles) -> Result<(), BackendError> {
    call(|e, n| unsafe { ab_sdp_set(t.flash as c_int, t.mem_efficient as c_int, t.math as c_int, t.cudnn as c_int, e, n) })
}

pub fn sdp_get() -> Result<SdpToggles, BackendError> {
    let mut bits: c_int = 0;
    call(|e, n| unsafe { ab_sdp_get(&mut bits, e, n) })?;
    Ok(SdpToggles { flash: bits & 1 != 0, mem_efficient: bits & 2 != 0, math: bits & 4 != 0, cudnn: bits & 8 != 0 })
}

/// Runs `f` with exactly the given SDPA backends enabled and restores the previous toggles afterwards.
pub fn with_sdp<T>(t: SdpToggles, f: impl FnOnce() -> T) -> Result<T, BackendError> {
    let before = sdp_get()?;
    sdp_set(t)?;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    sdp_set(before)?;
    match r {
        Ok(v) => Ok(v),
        Err(p) => std::panic::resume_unwind(p),
    }
}

unsafe fn take(p: *mut C_tensor) -> Tensor {
    Tensor::from_ptr(p)
}

/// Outputs of a varlen forward: `out`, `lse`, and the two auxiliary tensors its backward needs
/// (flash: rng_state, unused; efficient / cuDNN: philox seed, offset).
pub struct VarlenOut {
    pub out: Tensor,
    pub lse: Tensor,
    pub aux0: Tensor,
    pub aux1: Tensor,
}

fn four(
    f: impl FnOnce(*mut *mut C_tensor, *mut *mut C_tensor, *mut *mut C_tensor, *mut *mut C_tensor, *mut c_char, usize) -> c_int,
) -> Result<VarlenOut, BackendError> {
    let mut p = [std::ptr::null_mut::<C_tensor>(); 4];
    let [a, b, c, d] = &mut p;
    call(|e, n| f(a, b, c, d, e, n))?;
    // SAFETY: on success the shim stored four freshly allocated at::Tensor handles.
    unsafe { Ok(VarlenOut { out: take(p[0]), lse: take(p[1]), aux0: take(p[2]), aux1: take(p[3]) }) }
}

/// `at::_flash_attention_forward` varlen: q `[total_q, Hq, D]`, k/v `[total_k, Hkv, D]`, cu_* int32.
/// Window sizes `None` = unbounded.
#[allow(clippy::too_many_arguments)]
pub fn flash_varlen_fwd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_q: &Tensor,
    cu_k: &Tensor,
    max_q: i64,
    max_k: i64,
    scale: f64,
    causal: bool,
    window: (Option<i64>, Option<i64>),
) -> Result<VarlenOut, BackendError> {
    let (wl, wr) = (window.0.unwrap_or(-1), window.1.unwrap_or(-1));
    four(|a, b, c, d, e, n| unsafe {
        ab_flash_varlen_fwd(q.as_ptr(), k.as_ptr(), v.as_ptr(), cu_q.as_ptr(), cu_k.as_ptr(), max_q, max_k, scale, causal as c_int, wl, wr, a, b, c, d, e, n)
    })
}

/// `at::_efficient_attention_forward` varlen: q `[1, total_q, H, D]`, k/v `[1, total_k, H, D]`;
/// `custom_mask_type` 0 none, 1 causal top-left, 2 causal bottom-right.
#[allow(clippy::too_many_arguments)]
pub fn efficient_varlen_fwd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_q: &Tensor,
    cu_k: &Tensor,
    max_q: i64,
    max_k: i64,
    scale: f64,
    custom_mask_type: i64,
    window: Option<i64>,
) -> Result<VarlenOut, BackendError> {
    four(|a, b, c, d, e, n| unsafe {
        ab_efficient_varlen_fwd(
            q.as_ptr(),
            k.as_ptr(),
            v.as_ptr(),
            cu_q.as_ptr(),
            cu_k.as_ptr(),
            max_q,
            max_k,
            scale,
            custom_mask_type,
            window.unwrap_or(-1),
            a,
            b,
            c,
            d,
            e,
            n,
        )
    })
}

/// `at::_cudnn_attention_forward` with cum_seq_q/k (packed `[total, H, D]`).
#[allow(clippy::too_many_arguments)]
pub fn cudnn_varlen_fwd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_q: &Tensor,
    cu_k: &Tensor,
    max_q: i64,
    max_k: i64,
    scale: f64,
    causal: bool,
) -> Result<VarlenOut, BackendError> {
    four(|a, b, c, d, e, n| unsafe {
        ab_cudnn_varlen_fwd(q.as_ptr(), k.as_ptr(), v.as_ptr(), cu_q.as_ptr(), cu_k.as_ptr(), max_q, max_k, scale, causal as c_int, a, b, c, d, e, n)
    })
}

/// A timing-enabled CUDA event.
pub struct CudaEvent(*mut c_void);

impl CudaEvent {
    pub fn new() -> Result<Self, BackendError> {
        let mut p = std::ptr::null_mut();
        call(|e, n| unsafe { ab_event_new(&mut p, e, n) })?;
        Ok(CudaEvent(p))
    }

    /// Records on the current stream of CUDA device `device`.
    pub fn record(&self, device: usize) -> Result<(), BackendError> {
        call(|e, n| unsafe { ab_event_record(self.0, device as c_int, e, n) })
    }

    /// Milliseconds from `self` to `end` (waits for `end`).
    pub fn elapsed_ms(&self, end: &CudaEvent) -> Result<f64, BackendError> {
        let mut ms = 0.0;
        call(|e, n| unsafe { ab_event_elapsed_ms(self.0, end.0, &mut ms, e, n) })?;
        Ok(ms)
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        unsafe { ab_event_free(self.0) }
    }
}

pub fn device_synchronize(device: usize) -> Result<(), BackendError> {
    call(|e, n| unsafe { ab_device_synchronize(device as c_int, e, n) })
}

/// (bytes allocated now, peak bytes since the last [`mem_reset_peak`]) of the CUDA caching allocator.
pub fn mem_stats(device: usize) -> Result<(u64, u64), BackendError> {
    let (mut cur, mut peak) = (0i64, 0i64);
    call(|e, n| unsafe { ab_mem_stats(device as c_int, &mut cur, &mut peak, e, n) })?;
    Ok((cur.max(0) as u64, peak.max(0) as u64))
}

pub fn mem_reset_peak(device: usize) -> Result<(), BackendError> {
    call(|e, n| unsafe { ab_mem_reset_peak(device as c_int, e, n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_toggles_round_trip() {
        let only_math = SdpToggles { flash: false, mem_efficient: false, math: true, cudnn: false };
        let before = sdp_get().unwrap();
        let seen = with_sdp(only_math, || sdp_get().unwrap()).unwrap();
        assert_eq!(seen, only_math);
        assert_eq!(sdp_get().unwrap(), before);
    }

    #[test]
    fn shim_errors_come_back_as_values() {
        // The flash kernel has no CPU implementation: the C++ exception must come back as an Err.
        let t = Tensor::zeros([4, 1, 8], (tch::Kind::Float, tch::Device::Cpu));
        let cu = Tensor::from_slice(&[0i32, 4]);
        let r = flash_varlen_fwd(&t, &t, &t, &cu, &cu, 4, 4, 1.0, false, (None, None));
        assert!(r.is_err());
        let msg = r.err().unwrap().to_string();
        assert!(!msg.is_empty());
    }
}
