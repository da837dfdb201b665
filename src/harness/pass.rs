//! The one fwd/bwd/fwd+bwd dispatch, for every timed or checked pass: a kernel, a CP engine on its
//! ranks, the single-device baseline of a CP case.

use crate::flops::Pass;

/// The two directions of what a pass runs (a kernel, a CP engine on its ranks, the single-device
/// baseline): a forward giving what the backward needs, and that backward.
pub trait Directions {
    type Fwd;
    type Error;
    fn forward(&mut self) -> Result<Self::Fwd, Self::Error>;
    fn backward(&mut self, fwd: &Self::Fwd) -> Result<(), Self::Error>;
}

/// THE fwd/bwd/fwd+bwd dispatch of one pass: `fwd` runs the forward, `bwd` the backward on `saved`
/// (one forward made outside the timed region; required for `bwd`), `fwdbwd` both.
pub fn one_pass<D: Directions>(d: &mut D, pass: Pass, saved: Option<&D::Fwd>) -> Result<(), D::Error> {
    match pass {
        Pass::Fwd => {
            d.forward()?;
        }
        Pass::Bwd => d.backward(saved.expect("a bwd pass is given the forward it reuses"))?,
        Pass::Fwdbwd => {
            let f = d.forward()?;
            d.backward(&f)?;
        }
    }
    Ok(())
}
