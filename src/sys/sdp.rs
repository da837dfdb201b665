//! SDPA backend toggles (`at::globalContext().setSDPUse*`), process-wide.

use std::ffi::{c_char, c_int};

use super::{call, SysError};

extern "C" {
    fn ab_sdp_set(flash: c_int, mem_efficient: c_int, math: c_int, cudnn: c_int, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_sdp_get(bits: *mut c_int, err: *mut c_char, errlen: usize) -> c_int;
}

/// Which SDPA backends are allowed. Set with [`sdp_set`]; the global context is process-wide. FA3 is
/// always off, so `flash` means FlashAttention-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpToggles {
    pub flash: bool,
    pub mem_efficient: bool,
    pub math: bool,
    pub cudnn: bool,
}

impl SdpToggles {
    pub const ALL: SdpToggles = SdpToggles { flash: true, mem_efficient: true, math: true, cudnn: true };
    pub const NONE: SdpToggles = SdpToggles { flash: false, mem_efficient: false, math: false, cudnn: false };
}

pub fn sdp_set(t: SdpToggles) -> Result<(), SysError> {
    // SAFETY: plain ints and the error buffer `call` provides.
    call(|e, n| unsafe { ab_sdp_set(t.flash as c_int, t.mem_efficient as c_int, t.math as c_int, t.cudnn as c_int, e, n) })
}

pub fn sdp_get() -> Result<SdpToggles, SysError> {
    let mut bits: c_int = 0;
    // SAFETY: `bits` outlives the call.
    call(|e, n| unsafe { ab_sdp_get(&mut bits, e, n) })?;
    Ok(SdpToggles { flash: bits & 1 != 0, mem_efficient: bits & 2 != 0, math: bits & 4 != 0, cudnn: bits & 8 != 0 })
}

/// Runs `f` with exactly the given SDPA backends enabled and restores the previous toggles afterwards
/// (also when `f` panics).
pub fn with_sdp<T>(t: SdpToggles, f: impl FnOnce() -> T) -> Result<T, SysError> {
    let before = sdp_get()?;
    sdp_set(t)?;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    sdp_set(before)?;
    match r {
        Ok(v) => Ok(v),
        Err(p) => std::panic::resume_unwind(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_toggles_round_trip() {
        let only_math = SdpToggles { math: true, ..SdpToggles::NONE };
        let before = sdp_get().unwrap();
        let seen = with_sdp(only_math, || sdp_get().unwrap()).unwrap();
        assert_eq!(seen, only_math);
        assert_eq!(sdp_get().unwrap(), before);
    }
}
