//! `flash-varlen`: FlashAttention-2 varlen (at::_flash_attention_forward) over document / window masks; CUDA only. See [`super::varlen`].

use super::varlen::VarlenBackend;
use crate::attn::varlen::CudaVarlen;

pub static FLASH_VARLEN: VarlenBackend = VarlenBackend {
    name: "flash-varlen",
    summary: "FlashAttention-2 varlen (at::_flash_attention_forward) over document / window masks; CUDA only",
    kernel: CudaVarlen::Flash,
    backward_off: None,
};
