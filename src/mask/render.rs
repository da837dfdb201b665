//! Mask pictures (being filled in).
