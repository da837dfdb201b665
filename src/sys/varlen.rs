//! The varlen attention kernels of ATen that tch does not expose: FlashAttention-2
//! (`at::_flash_attention_forward`), memory-efficient (`at::_efficient_attention_forward`) and cuDNN
//! (`at::_cudnn_attention_forward`), each over packed `[total, H, D]` rows with cumulative sequence
//! offsets. CUDA only; on a CPU tensor the kernel's error comes back as a value.

use std::ffi::{c_char, c_int};

use tch::Tensor;
use torch_sys::C_tensor;

use super::{call, SysError};

extern "C" {
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
}

/// Outputs of a varlen forward: `out`, `lse`, and the random-number state its backward replays
/// (flash: `rng_state` and an unused tensor; efficient / cuDNN: philox seed and offset).
pub struct VarlenOut {
    pub out: Tensor,
    pub lse: Tensor,
    pub rng_state: [Tensor; 2],
}

type FourOutputs = [*mut C_tensor; 4];

/// Calls a shim function that returns four new tensors.
fn four_outputs(f: impl FnOnce(&mut FourOutputs, *mut c_char, usize) -> c_int) -> Result<VarlenOut, SysError> {
    let mut p: FourOutputs = [std::ptr::null_mut(); 4];
    call(|e, n| f(&mut p, e, n))?;
    // SAFETY: on success the shim stored four freshly allocated at::Tensor handles, owned by us now.
    unsafe { Ok(VarlenOut { out: Tensor::from_ptr(p[0]), lse: Tensor::from_ptr(p[1]), rng_state: [Tensor::from_ptr(p[2]), Tensor::from_ptr(p[3])] }) }
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
) -> Result<VarlenOut, SysError> {
    let (wl, wr) = (window.0.unwrap_or(-1), window.1.unwrap_or(-1));
    // SAFETY: valid tensor handles borrowed for the call; outputs written into `p`.
    four_outputs(|p, e, n| unsafe {
        let [a, b, c, d] = p;
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
) -> Result<VarlenOut, SysError> {
    // SAFETY: as above.
    four_outputs(|p, e, n| unsafe {
        let [a, b, c, d] = p;
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
) -> Result<VarlenOut, SysError> {
    // SAFETY: as above.
    four_outputs(|p, e, n| unsafe {
        let [a, b, c, d] = p;
        ab_cudnn_varlen_fwd(q.as_ptr(), k.as_ptr(), v.as_ptr(), cu_q.as_ptr(), cu_k.as_ptr(), max_q, max_k, scale, causal as c_int, a, b, c, d, e, n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_come_back_as_values() {
        // The flash kernel has no CPU implementation: the C++ exception must come back as an Err.
        let t = Tensor::zeros([4, 1, 8], (tch::Kind::Float, tch::Device::Cpu));
        let cu = Tensor::from_slice(&[0i32, 4]);
        let r = flash_varlen_fwd(&t, &t, &t, &cu, &cu, 4, 4, 1.0, false, (None, None));
        let msg = r.err().expect("no CPU kernel").to_string();
        assert!(!msg.is_empty());
    }
}
