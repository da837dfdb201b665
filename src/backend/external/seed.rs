//! The seed contract, checked: a worker that draws its own inputs must produce q, k, v, dout bitwise
//! equal to attnbench's for the same seed, shape, dtype and device (torch.manual_seed, then torch.randn
//! in float32 on the CPU for q, k, v, dout in that order, each cast to the dtype and moved to the
//! device). The worker answers an `inputs` request by writing the tensors it built; they are compared
//! byte for byte with [`Inputs::new`]'s.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::config::ExternalConfig;
use super::process::{self, Failure};
use super::protocol::{self, InputsMode, Reply};
use super::{files, worker_env};
use crate::backend::Inputs;
use crate::case::{Case, DType, DeviceKind, HeadLayout};
use crate::flops::Pass;
use crate::mask::{build_pattern, Params};

/// One comparison: a device and a dtype.
#[derive(Debug, Clone, Serialize)]
pub struct SeedCheck {
    pub device: String,
    pub dtype: String,
    /// `true` when q, k, v and dout are bitwise equal.
    pub equal: bool,
    /// What differs, when something does.
    pub detail: String,
}

/// What the check of one worker found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SeedOutcome {
    Checked {
        checks: Vec<SeedCheck>,
    },
    /// The worker reads attnbench's tensor file, or is not available here: nothing to check.
    NotApplicable {
        reason: String,
    },
    /// The worker could not be asked.
    Failed {
        reason: String,
    },
}

/// The shape checked: small (a fraction of a second), with GQA and an odd-sized head dim so a
/// transposed or reordered draw cannot pass by accident.
fn small_case(name: &str, dtype: DType, device: DeviceKind) -> Case {
    let mut c = Case::kernel(name, "causal", Params::new(), 96, HeadLayout { q: 4, kv: 2 }, 24, dtype, Pass::Fwdbwd, device);
    c.batch = 2;
    c
}

/// Checks the worker of `ext:NAME` on `devices` × {bf16, fp32} with `seed`.
pub fn check(backend: &str, cfg: &ExternalConfig, devices: &[DeviceKind], seed: u64) -> SeedOutcome {
    let argv = match super::config::adapter_name(backend).ok_or_else(|| format!("`{backend}` is not an ext:NAME backend")).and_then(|n| cfg.command(n)) {
        Ok(a) => a,
        Err(e) => return SeedOutcome::Failed { reason: e },
    };
    let env = match worker_env() {
        Ok(e) => e,
        Err(e) => return SeedOutcome::Failed { reason: e },
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let result = process::with_worker(&argv, &env, deadline, |w| {
        if !w.hello.available {
            return Ok((SeedOutcome::NotApplicable { reason: format!("not available here: {}", w.hello.reason) }, true));
        }
        if w.hello.inputs == InputsMode::File {
            return Ok((SeedOutcome::NotApplicable { reason: "reads its inputs from attnbench's tensor file".into() }, true));
        }
        let dir = tempfile::tempdir().map_err(|e| Failure::Start(e.to_string()))?;
        let mut checks = Vec::new();
        for &device in devices {
            for dtype in [DType::Bf16, DType::Fp32] {
                let case = small_case(backend, dtype, device);
                let masks = build_pattern(&case.pattern, case.seqlen, &case.params).expect("causal builds");
                let path = dir.path().join(format!("inputs-{}-{}.safetensors", device.name(), dtype.name()));
                let req = json!({"type": "inputs", "id": super::new_id(&case), "case": protocol::case_spec(&case, &masks), "seed": seed,
                                 "inputs_path": null, "path": path.display().to_string()});
                let fail = |detail: String| SeedCheck { device: device.name().into(), dtype: dtype.name().into(), equal: false, detail };
                match w.request(&req, deadline)? {
                    Reply::Done { .. } => {}
                    Reply::Unsupported { reason, .. } => {
                        checks.push(fail(format!("unsupported: {reason}")));
                        continue;
                    }
                    Reply::Error { message, .. } => {
                        checks.push(fail(format!("error: {message}")));
                        continue;
                    }
                    other => return Err(Failure::Garbage(format!("expected a `done` answer, got {other:?}"))),
                }
                let ours = match Inputs::new(&case, masks, seed, false) {
                    Ok(x) => x,
                    Err(e) => {
                        checks.push(fail(format!("attnbench could not build its inputs: {e}")));
                        continue;
                    }
                };
                let verdict = files::read_tensors(&path).map(|mut theirs| {
                    let mut problems = Vec::new();
                    for (name, t) in [("q", &ours.q), ("k", &ours.k), ("v", &ours.v), ("dout", &ours.dout)] {
                        match theirs.remove(name) {
                            Some(th) => {
                                if let Err(e) = files::bitwise_equal(name, t, &th) {
                                    problems.push(e);
                                }
                            }
                            None => problems.push(format!("{name}: missing from the worker's file")),
                        }
                    }
                    problems
                });
                checks.push(match verdict {
                    Ok(p) if p.is_empty() => SeedCheck { device: device.name().into(), dtype: dtype.name().into(), equal: true, detail: String::new() },
                    Ok(p) => fail(p.join("; ")),
                    Err(e) => fail(e),
                });
            }
        }
        Ok((SeedOutcome::Checked { checks }, true))
    });
    result.unwrap_or_else(|f| SeedOutcome::Failed {
        reason: match f {
            Failure::Timeout => "no answer within 180 s".into(),
            Failure::Died(m) | Failure::Garbage(m) | Failure::Start(m) => m,
        },
    })
}
