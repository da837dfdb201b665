//! Projection of CP strategies to many GPUs: an α–β communication model ([`comm_model`]) combined
//! with per-rank compute measured on virtual ranks.

pub mod comm_model;
