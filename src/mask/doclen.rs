//! Document-length sampling (being filled in).
