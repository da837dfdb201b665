//! Attention masks: the range model ([`model`]), typed pattern parameters ([`params`]), document-length
//! sampling ([`doclen`]), the pattern zoo ([`zoo`]) and pictures ([`render`]).

pub mod doclen;
pub mod model;
pub mod params;
pub mod render;
pub mod zoo;

pub use model::{clip_slice, Mask, Slice, SliceKind};
pub use params::Params;
pub use zoo::{build_pattern, find_pattern, Pattern, PATTERNS};

use serde::{Deserialize, Serialize};

/// Errors from building or validating a mask. Messages are one line and name the offending key.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum MaskError {
    #[error("unknown mask pattern `{0}` (see `attnbench list`)")]
    UnknownPattern(String),
    #[error("pattern `{pattern}` has no parameter `{key}` (it takes: {known})")]
    UnknownParam { pattern: String, key: String, known: String },
    #[error("parameter `{key}`: {msg}")]
    BadParam { key: String, msg: String },
    #[error("invalid mask: {0}")]
    Invalid(String),
}

impl MaskError {
    pub fn bad(key: &str, msg: impl Into<String>) -> Self {
        MaskError::BadParam { key: key.to_string(), msg: msg.into() }
    }
}

/// The mask of one case: either one mask shared by all query heads, or (MoA-style heterogeneous
/// heads) one mask per contiguous head group — `groups.len()` must divide the number of query heads,
/// and group g covers heads `[g·Hq/G, (g+1)·Hq/G)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadMasks {
    pub groups: Vec<Mask>,
}

impl HeadMasks {
    pub fn shared(mask: Mask) -> Self {
        HeadMasks { groups: vec![mask] }
    }

    pub fn is_shared(&self) -> bool {
        self.groups.len() == 1
    }

    pub fn seqlen(&self) -> usize {
        self.groups[0].seqlen_q
    }

    /// Attended (query, key) pairs summed over `heads_q` query heads (one batch element). Exact.
    pub fn area_over_heads(&self, heads_q: usize) -> u128 {
        let g = self.groups.len();
        let per = (heads_q / g.max(1)) as u128;
        self.groups.iter().map(|m| m.area() as u128 * per).sum()
    }

    /// Mean area per head (what `mask_area` reports for heterogeneous heads).
    pub fn mean_area(&self) -> f64 {
        self.groups.iter().map(|m| m.area() as f64).sum::<f64>() / self.groups.len() as f64
    }

    pub fn density(&self) -> f64 {
        self.groups.iter().map(|m| m.density()).sum::<f64>() / self.groups.len() as f64
    }

    /// The group mask for query head `h` of `heads_q`.
    pub fn for_head(&self, h: usize, heads_q: usize) -> &Mask {
        let g = self.groups.len();
        &self.groups[h / (heads_q / g).max(1)]
    }

    /// Checks that the groups fit a head layout: G divides Hq.
    pub fn check_heads(&self, heads_q: usize) -> Result<(), MaskError> {
        let g = self.groups.len();
        if !heads_q.is_multiple_of(g) {
            return Err(MaskError::Invalid(format!("{g} head groups do not divide {heads_q} query heads")));
        }
        Ok(())
    }
}
