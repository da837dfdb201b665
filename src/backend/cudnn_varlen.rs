//! `cudnn-varlen`: cuDNN varlen (at::_cudnn_attention_forward, cum_seq_q/k); CUDA only. See [`super::varlen`].

use super::varlen::VarlenBackend;
use crate::attn::varlen::CudaVarlen;

pub static CUDNN_VARLEN: VarlenBackend =
    VarlenBackend { name: "cudnn-varlen", summary: "cuDNN varlen (at::_cudnn_attention_forward, cum_seq_q/k); CUDA only", kernel: CudaVarlen::Cudnn };
