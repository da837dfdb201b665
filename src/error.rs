//! Error kinds the CLI maps to exit codes: [`BadInput`] → 2, [`CheckFailed`] → 1. Everything else
//! (I/O, a backend crashing outside a case) is also exit 1 but printed as an unexpected failure.

/// The user gave us something we cannot use (a file, a flag, a key). One line, names what and where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl BadInput {
    pub fn new(msg: impl Into<String>) -> Self {
        BadInput(msg.into())
    }
}

/// A check the user asked for failed: a regression beyond noise, a wrong result with `--fail-on-wrong`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

impl From<crate::mask::MaskError> for BadInput {
    fn from(e: crate::mask::MaskError) -> Self {
        BadInput(e.to_string())
    }
}

/// Exit code for an error chain: 2 for bad input anywhere in the chain, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<BadInput>().is_some() || cause.downcast_ref::<crate::mask::MaskError>().is_some() {
            return 2;
        }
    }
    1
}

/// An error message as one line (a CSV cell, a row's `error`, the CLI's one-line errors): newlines and
/// runs of whitespace flattened, libtorch's C++ stack trace cut off, at most 500 bytes.
pub fn one_line(s: &str) -> String {
    // libtorch appends a C++ stack trace ("Exception raised from …", "frame #0: …"): not for a CSV cell.
    let s = ["Exception raised from", "frame #0"].iter().filter_map(|m| s.find(m)).min().map_or(s, |p| &s[..p]);
    let mut t: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.len() > 500 {
        let mut cut = 500;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
        t.push('…');
    }
    t
}
