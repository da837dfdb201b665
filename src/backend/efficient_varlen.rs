//! `efficient-varlen`: memory-efficient varlen (at::_efficient_attention_forward, cu_seqlens); CUDA only. See [`super::varlen`].

use super::varlen::VarlenBackend;
use crate::attn::varlen::CudaVarlen;

pub static EFFICIENT_VARLEN: VarlenBackend = VarlenBackend {
    name: "efficient-varlen",
    summary: "memory-efficient varlen (at::_efficient_attention_forward, cu_seqlens); CUDA only",
    kernel: CudaVarlen::Efficient,
    backward_off: None,
};
