//! `cudnn-varlen`: cuDNN varlen (at::_cudnn_attention_forward, cum_seq_q/k); CUDA only. See [`super::varlen`].

use super::varlen::VarlenBackend;
use crate::attn::varlen::CudaVarlen;

pub static CUDNN_VARLEN: VarlenBackend = VarlenBackend {
    name: "cudnn-varlen",
    summary: "cuDNN varlen (at::_cudnn_attention_forward, cum_seq_q/k); CUDA only",
    kernel: CudaVarlen::Cudnn,
    // Evidence, not caution: on an H200 (torch 2.11.0+cu130, cuDNN 9.19; results/gpu-h200-2026-12-04)
    // the gate found non-finite dq for full, causal and both document masks at 1K, and the 32K causal
    // backward raised an illegal memory access that poisoned the process. The library test
    // `cuda_varlen_kernels_match_cpu` keeps the 1K case, so a GPU run shows when it is right.
    backward_off: Some("wrong (non-finite gradients) at 1K and an illegal memory access at 32K on an H200 with torch 2.11 (2026-12-04)"),
};
