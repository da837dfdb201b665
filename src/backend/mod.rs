//! Kernel backends: one file per backend, a trait they implement, and a registry.
//! (Being filled in; `sliced` first.)

pub mod shim;
pub mod sliced;
pub mod varlen;

/// Why a backend call failed. `Oom` is split out because a row records it as its own status.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run this case (kind of mask, dtype, device, head layout or pass).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The allocator ran out of memory.
    #[error("out of memory: {0}")]
    Oom(String),
    /// Inputs that violate the documented tensor conventions (shapes, GQA ratio, mask size).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Any other libtorch or shim error.
    #[error("{0}")]
    Torch(String),
}

impl From<tch::TchError> for BackendError {
    fn from(e: tch::TchError) -> Self {
        BackendError::from_message(e.to_string())
    }
}

impl BackendError {
    /// Classifies a libtorch error message: "out of memory" anywhere → [`BackendError::Oom`].
    pub fn from_message(msg: String) -> Self {
        let first = crate::results::one_line(&msg);
        if msg.to_ascii_lowercase().contains("out of memory") {
            BackendError::Oom(first)
        } else {
            BackendError::Torch(first)
        }
    }
}
