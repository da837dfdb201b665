//! `sdpa-math`: SDPA with only the math backend (materialised, any mask). See [`super::sdpa`].

use super::sdpa::{Sdpa, SdpaPath};

pub static SDPA_MATH: Sdpa = Sdpa { name: "sdpa-math", summary: "SDPA with only the math backend (materialised, any mask)", path: SdpaPath::Math };
