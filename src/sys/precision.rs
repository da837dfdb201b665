//! TF32 (tensor-float-32) for fp32 work on CUDA, process-wide: cuBLAS matmuls (the `naive`, `sliced`
//! dense and SDPA-math paths) and cuDNN. libtorch's defaults differ between the two (matmul off, cuDNN
//! on), and TF32 changes both the results (10-bit mantissa) and the peak an fp32 case is held against,
//! so attnbench sets both explicitly for every case — off unless asked (`--tf32`, `[measure] tf32`) —
//! and records what was in effect in each row and in `meta.json`.

use std::ffi::{c_char, c_int};

use super::{call, SysError};

extern "C" {
    fn ab_tf32_set(cublas: c_int, cudnn: c_int, err: *mut c_char, errlen: usize) -> c_int;
    fn ab_tf32_get(cublas: *mut c_int, cudnn: *mut c_int, err: *mut c_char, errlen: usize) -> c_int;
}

/// Whether TF32 is allowed for fp32 cuBLAS matmuls and for cuDNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tf32 {
    pub cublas: bool,
    pub cudnn: bool,
}

impl Tf32 {
    /// Both on or both off.
    pub fn uniform(on: bool) -> Tf32 {
        Tf32 { cublas: on, cudnn: on }
    }
    /// True when any fp32 work may run in TF32.
    pub fn any(self) -> bool {
        self.cublas || self.cudnn
    }
}

pub fn set_tf32(t: Tf32) -> Result<(), SysError> {
    // SAFETY: plain ints and the error buffer.
    call(|e, n| unsafe { ab_tf32_set(t.cublas as c_int, t.cudnn as c_int, e, n) })
}

/// What libtorch has in effect now.
pub fn tf32() -> Result<Tf32, SysError> {
    let (mut a, mut b): (c_int, c_int) = (0, 0);
    // SAFETY: out-pointers live for the call.
    call(|e, n| unsafe { ab_tf32_get(&mut a, &mut b, e, n) })?;
    Ok(Tf32 { cublas: a != 0, cudnn: b != 0 })
}

/// Sets TF32 as asked and returns what is then in effect (read back, not assumed).
pub fn apply_tf32(on: bool) -> Result<Tf32, SysError> {
    set_tf32(Tf32::uniform(on))?;
    tf32()
}

/// The `meta.json` text for a run made with `on`.
pub fn describe(on: bool) -> String {
    if on {
        "on: fp32 cuBLAS matmuls and cuDNN may use TF32 tensor cores; fp32 MFU against the TF32 peak".into()
    } else {
        "off: fp32 cuBLAS matmuls and cuDNN in IEEE fp32 (set explicitly; libtorch's own default has cuDNN TF32 on)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_is_set_both_ways_and_read_back() {
        // libtorch's own default has cuDNN TF32 ON: attnbench must not inherit it.
        let before = tf32().unwrap();
        assert_eq!(apply_tf32(false).unwrap(), Tf32::uniform(false));
        assert_eq!(apply_tf32(true).unwrap(), Tf32::uniform(true));
        set_tf32(before).unwrap();
        assert_eq!(tf32().unwrap(), before);
    }

    #[test]
    fn meta_json_records_the_tf32_setting() {
        use crate::measure::MeasureSettings;
        let on = crate::suite::identity::command_meta("kernel", Some(&MeasureSettings { tf32: true, ..Default::default() }), None);
        let off = crate::suite::identity::command_meta("kernel", Some(&MeasureSettings::default()), None);
        assert!(on.tf32.starts_with("on:") && off.tf32.starts_with("off:"), "{} / {}", on.tf32, off.tf32);
        // TF32 changes the numbers, so it changes the measurement identity; off keeps the old one.
        assert_ne!(on.measure_id, off.measure_id);
        assert!(serde_json::to_string(&MeasureSettings::default()).unwrap().find("tf32").is_none());
    }
}
