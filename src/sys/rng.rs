//! The process's torch generator. libtorch's default CPU generator is global: a seed set by one thread
//! and the draws that follow can be interleaved with another thread's draws (the ranks of a local CP
//! world are threads; so are the tests of one test binary). Every seeded draw in attnbench runs inside
//! [`with_seed`], every other draw through [`randn`], both under one lock.

use tch::{Device, Kind, Tensor};

static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` with the global generator seeded to `seed`, alone. `f` draws with `Tensor::randn` directly
/// (the lock is held; [`randn`] inside would wait for itself).
pub fn with_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    let _g = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    f()
}

/// A standard normal tensor from the global generator, drawn under the lock so that it cannot fall
/// between another thread's seeding and its draws.
pub fn randn(shape: impl AsRef<[i64]>, options: (Kind, Device)) -> Result<Tensor, tch::TchError> {
    let _g = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Tensor::f_randn(shape.as_ref(), options)
}
