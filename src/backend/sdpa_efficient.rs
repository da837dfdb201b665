//! `sdpa-efficient`: SDPA with only the memory-efficient (CUTLASS) backend; CUDA only. See [`super::sdpa`].

use super::sdpa::{Sdpa, SdpaPath};

pub static SDPA_EFFICIENT: Sdpa =
    Sdpa { name: "sdpa-efficient", summary: "SDPA with only the memory-efficient (CUTLASS) backend; CUDA only", path: SdpaPath::Efficient };
