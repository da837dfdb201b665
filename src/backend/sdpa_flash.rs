//! `sdpa-flash`: SDPA with only the flash backend (CUDA: FlashAttention-2; CPU: torch's flash kernel). See [`super::sdpa`].

use super::sdpa::{Sdpa, SdpaPath};

pub static SDPA_FLASH: Sdpa =
    Sdpa { name: "sdpa-flash", summary: "SDPA with only the flash backend (CUDA: FlashAttention-2; CPU: torch's flash kernel)", path: SdpaPath::Flash };
