//! `sdpa-cudnn`: SDPA with only the cuDNN backend; CUDA only. See [`super::sdpa`].

use super::sdpa::{Sdpa, SdpaPath};

pub static SDPA_CUDNN: Sdpa = Sdpa { name: "sdpa-cudnn", summary: "SDPA with only the cuDNN backend; CUDA only", path: SdpaPath::Cudnn };
