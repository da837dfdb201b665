//! The pattern zoo. (Being filled in: full and causal only so far.)

use super::{HeadMasks, Mask, MaskError, Params, Slice, SliceKind};

/// A declared parameter of a pattern: key, default (as text, may depend on seqlen, e.g. `seqlen/4`),
/// and a one-line description.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub key: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// One pattern of the zoo: name, a one-line definition, its parameters and its builder.
pub struct Pattern {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: &'static [ParamSpec],
    pub build: fn(usize, &Params) -> Result<HeadMasks, MaskError>,
}

pub const PATTERNS: &[Pattern] = &[
    Pattern { name: "full", summary: "every query attends every key", params: &[], build: full },
    Pattern { name: "causal", summary: "j ≤ i", params: &[], build: causal },
];

pub fn find_pattern(name: &str) -> Result<&'static Pattern, MaskError> {
    PATTERNS.iter().find(|p| p.name == name).ok_or_else(|| MaskError::UnknownPattern(name.to_string()))
}

/// Builds pattern `name` at `seqlen` with `params`, rejecting undeclared keys.
pub fn build_pattern(name: &str, seqlen: usize, params: &Params) -> Result<HeadMasks, MaskError> {
    let p = find_pattern(name)?;
    if seqlen == 0 {
        return Err(MaskError::bad("seqlen", "must be at least 1"));
    }
    let keys: Vec<&str> = p.params.iter().map(|s| s.key).collect();
    params.check_known(name, &keys)?;
    (p.build)(seqlen, params)
}

/// `full`: attend iff true (every (i, j)).
fn full(s: usize, _: &Params) -> Result<HeadMasks, MaskError> {
    Ok(HeadMasks::shared(Mask::new(s, vec![Slice::new(0..s, 0..s, SliceKind::Full)])?))
}

/// `causal`: attend iff j ≤ i.
fn causal(s: usize, _: &Params) -> Result<HeadMasks, MaskError> {
    Ok(HeadMasks::shared(Mask::new(s, vec![Slice::new(0..s, 0..s, SliceKind::Causal)])?))
}
