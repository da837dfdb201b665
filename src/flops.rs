//! FLOP and byte model, and the table of device peaks used for MFU.
//!
//! Forward FLOPs = 4 · area · Hq · D · batch: two matmuls (QKᵀ and PV), each 2 FLOPs per
//! multiply-accumulate, over the attended (query, key) pairs only — so sparse masks are not credited
//! with work they skip. Backward = 2.5 × forward (five matmuls of the same shape: dV, dP, dS·K, dSᵀ·Q
//! and the QKᵀ recompute), forward+backward = 3.5 × forward; this is the convention of
//! FlashAttention's and LongCA-bench's benchmarks, so TFLOPS are comparable with theirs. Softmax
//! FLOPs are not counted.

use serde::{Deserialize, Serialize};

/// Which passes a measurement covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Pass {
    Fwd,
    Bwd,
    Fwdbwd,
}

impl Pass {
    pub const ALL: [Pass; 3] = [Pass::Fwd, Pass::Bwd, Pass::Fwdbwd];

    pub fn name(self) -> &'static str {
        match self {
            Pass::Fwd => "fwd",
            Pass::Bwd => "bwd",
            Pass::Fwdbwd => "fwdbwd",
        }
    }

    /// FLOPs of this pass as a multiple of the forward FLOPs.
    pub fn factor(self) -> f64 {
        match self {
            Pass::Fwd => 1.0,
            Pass::Bwd => 2.5,
            Pass::Fwdbwd => 3.5,
        }
    }

    pub fn includes_backward(self) -> bool {
        self != Pass::Fwd
    }
}

impl std::str::FromStr for Pass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fwd" => Ok(Pass::Fwd),
            "bwd" => Ok(Pass::Bwd),
            "fwdbwd" | "fwd+bwd" => Ok(Pass::Fwdbwd),
            _ => Err(format!("unknown pass `{s}` (expected fwd, bwd or fwdbwd)")),
        }
    }
}

impl std::fmt::Display for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Forward FLOPs for `area_over_heads` = attended pairs summed over query heads (one batch element).
pub fn forward_flops(area_over_heads: u128, head_dim: usize, batch: usize) -> f64 {
    4.0 * area_over_heads as f64 * head_dim as f64 * batch as f64
}

/// FLOPs of `pass` for the given area (summed over query heads), head dim and batch.
pub fn pass_flops(area_over_heads: u128, head_dim: usize, batch: usize, pass: Pass) -> f64 {
    forward_flops(area_over_heads, head_dim, batch) * pass.factor()
}

/// TFLOPS = FLOPs / seconds / 1e12, from a time in milliseconds.
pub fn tflops(flops: f64, ms: f64) -> f64 {
    flops / (ms * 1e-3) / 1e12
}

/// Bytes an ideal kernel must move between memory and the chip for one forward: read Q, K, V once and
/// write O (plus the LSE, 4 bytes per query head and row). `elem` is the dtype's size in bytes.
pub fn forward_io_bytes(seqlen: usize, batch: usize, heads_q: usize, heads_kv: usize, head_dim: usize, elem: usize) -> u64 {
    let (s, b, d) = (seqlen as u64, batch as u64, head_dim as u64);
    let q_o = 2 * s * b * heads_q as u64 * d * elem as u64;
    let kv = 2 * s * b * heads_kv as u64 * d * elem as u64;
    q_o + kv + s * b * heads_q as u64 * 4
}

/// Dense peak throughput and memory bandwidth of a device, for MFU and roofline numbers.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DevicePeak {
    /// Name matched (case-insensitively, as a substring) against the device name.
    pub name: &'static str,
    /// Dense (no 2:4 sparsity) peak TFLOPS per dtype.
    pub bf16_tflops: f64,
    pub fp16_tflops: f64,
    pub fp32_tflops: f64,
    /// Dense TF32 tensor-core peak: what an fp32 case with TF32 allowed is held against.
    pub tf32_tflops: f64,
    /// HBM bandwidth, TB/s.
    pub mem_tbps: f64,
}

/// Vendor datasheet numbers (dense; the sparse figures halved). fp32 is the non-tensor-core FP32 rate,
/// the peak of fp32 rows with TF32 off (the default); `tf32` the TF32 tensor-core rate, the peak of fp32
/// rows with `--tf32`. Order matters: more specific names first.
pub const DEVICE_PEAKS: &[DevicePeak] = &[
    DevicePeak { name: "H200", bf16_tflops: 989.0, fp16_tflops: 989.0, fp32_tflops: 67.0, tf32_tflops: 494.5, mem_tbps: 4.8 },
    DevicePeak { name: "H100 PCIe", bf16_tflops: 756.0, fp16_tflops: 756.0, fp32_tflops: 51.0, tf32_tflops: 378.0, mem_tbps: 2.0 },
    DevicePeak { name: "H100", bf16_tflops: 989.0, fp16_tflops: 989.0, fp32_tflops: 67.0, tf32_tflops: 494.5, mem_tbps: 3.35 },
    DevicePeak { name: "A100", bf16_tflops: 312.0, fp16_tflops: 312.0, fp32_tflops: 19.5, tf32_tflops: 156.0, mem_tbps: 2.04 },
    DevicePeak { name: "B200", bf16_tflops: 2250.0, fp16_tflops: 2250.0, fp32_tflops: 80.0, tf32_tflops: 1125.0, mem_tbps: 8.0 },
];

/// Peak for a device name; `None` for CPUs and unknown devices (MFU is then left empty — we do not
/// invent a CPU peak).
pub fn device_peak(device_name: &str) -> Option<&'static DevicePeak> {
    let n = device_name.to_ascii_uppercase();
    DEVICE_PEAKS.iter().find(|p| n.contains(&p.name.to_ascii_uppercase()))
}

/// Peak TFLOPS of a device for a dtype name (`bf16`, `fp16`, `fp32`).
pub fn peak_tflops(device_name: &str, dtype: &str) -> Option<f64> {
    let p = device_peak(device_name)?;
    match dtype {
        "bf16" => Some(p.bf16_tflops),
        "fp16" => Some(p.fp16_tflops),
        "fp32" => Some(p.fp32_tflops),
        "tf32" => Some(p.tf32_tflops),
        _ => None,
    }
}

/// The peak an fp32 case is held against: `tf32` when TF32 was in effect, else the dtype itself.
pub fn peak_dtype(dtype: &str, tf32: bool) -> &str {
    if tf32 && dtype == "fp32" {
        "tf32"
    } else {
        dtype
    }
}

/// Model FLOP utilisation in [0, 1] (not percent), or `None` without a known peak.
pub fn mfu(tflops: f64, device_name: &str, dtype: &str) -> Option<f64> {
    peak_tflops(device_name, dtype).map(|p| tflops / p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_mask_flops_match_flash_attention_convention() {
        // FlashAttention's benchmark: 4 · b · s² · h · d for a full forward.
        let (s, h, d, b) = (4096u128, 16usize, 128usize, 2usize);
        let f = forward_flops(s * s * h as u128, d, b);
        assert_eq!(f, 4.0 * (b as f64) * (s * s) as f64 * h as f64 * d as f64);
        assert_eq!(pass_flops(s * s * h as u128, d, b, Pass::Bwd), 2.5 * f);
        assert_eq!(pass_flops(s * s * h as u128, d, b, Pass::Fwdbwd), 3.5 * f);
    }

    #[test]
    fn tflops_from_ms() {
        assert!((tflops(2e12, 1000.0) - 2.0).abs() < 1e-12);
        assert!((tflops(1e12, 1.0) - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn peaks_by_name() {
        assert_eq!(peak_tflops("NVIDIA H200", "bf16"), Some(989.0));
        assert_eq!(peak_tflops("NVIDIA H100 80GB HBM3", "bf16"), Some(989.0));
        assert_eq!(peak_tflops("NVIDIA H100 PCIe", "bf16"), Some(756.0));
        assert_eq!(peak_tflops("cpu", "fp32"), None);
        assert!(mfu(494.5, "NVIDIA H200", "bf16").unwrap() - 0.5 < 1e-12);
        // fp32 with TF32 on is held against the TF32 tensor-core peak, not the fp32 CUDA-core one.
        assert_eq!(peak_tflops("NVIDIA H200", peak_dtype("fp32", true)), Some(494.5));
        assert_eq!(peak_tflops("NVIDIA H200", peak_dtype("fp32", false)), Some(67.0));
        assert_eq!(peak_dtype("bf16", true), "bf16");
    }

    #[test]
    fn io_bytes() {
        // 1 token, 1 head each, D=1, 2-byte elems: q,o = 4 bytes, k,v = 4 bytes, lse 4 bytes.
        assert_eq!(forward_io_bytes(1, 1, 1, 1, 1, 2), 12);
    }
}
