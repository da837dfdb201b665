//! The backend registry: adding a backend is one file plus one line here.

use super::Backend;
use super::{cudnn_varlen, efficient_varlen, flash_varlen, naive, reference, sdpa_cudnn, sdpa_efficient, sdpa_flash, sdpa_math, sliced};

pub static REGISTRY: &[&dyn Backend] = &[
    &sdpa_flash::SDPA_FLASH,
    &sdpa_efficient::SDPA_EFFICIENT,
    &sdpa_cudnn::SDPA_CUDNN,
    &sdpa_math::SDPA_MATH,
    &flash_varlen::FLASH_VARLEN,
    &efficient_varlen::EFFICIENT_VARLEN,
    &cudnn_varlen::CUDNN_VARLEN,
    &naive::NAIVE,
    &sliced::SLICED,
    &reference::REFERENCE,
];

/// Every backend, in listing order.
pub fn registry() -> &'static [&'static dyn Backend] {
    REGISTRY
}

/// The backend called `name` (`ext:NAME`: an external kernel's worker), or an error listing the known ones.
pub fn find_backend(name: &str) -> Result<&'static dyn Backend, String> {
    if let Some(b) = super::external::find(name) {
        return Ok(b);
    }
    REGISTRY.iter().copied().find(|b| b.name() == name).ok_or_else(|| {
        let known: Vec<&str> = REGISTRY.iter().map(|b| b.name()).collect();
        format!("unknown backend `{name}` (known: {}, ext:NAME for an external kernel)", known.join(", "))
    })
}
