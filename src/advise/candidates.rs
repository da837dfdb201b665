//! The candidates: every CP strategy the simulator knows with every degree that divides the GPU count
//! (and the heads, for a Ulysses degree) × every kernel backend that declares support for the masks on
//! the GPU. A layout that cannot run (Ulysses degree not dividing the heads) stays a candidate with
//! its reason, never dropped.

use serde::Serialize;

use super::input::Plan;
use crate::backend::external::adapters::BUILTIN;
use crate::case::{Case, CpOptions, DeviceKind};
use crate::cp::registry::STRATEGIES;
use crate::error::BadInput;
use crate::mask::build_pattern;
use crate::sim::Implementation;

/// A strategy with its degrees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub strategy: String,
    pub options: CpOptions,
    /// Why this layout cannot run here (it is still listed).
    pub invalid: Option<String>,
}

impl Layout {
    /// `ulysses_degree=8;inner_ring=2` (the `CpOptions` keys), empty for a strategy without degrees.
    pub fn params(&self) -> String {
        self.options.to_params().to_string()
    }
}

fn divisors(n: usize) -> Vec<usize> {
    (1..=n).filter(|d| n.is_multiple_of(*d)).collect()
}

/// The layout of one GPU: no context parallelism, the kernel alone (its strategy is empty, as the
/// `strategy` column of a kernel row).
pub const SINGLE_GPU: &str = "";

/// Every layout of the plan's strategies on `plan.world` GPUs, in registry order. One GPU has one
/// layout, the kernel alone ([`SINGLE_GPU`]): the question is then only which kernel.
pub fn layouts(plan: &Plan) -> Vec<Layout> {
    let w = plan.world;
    if w == 1 {
        return vec![Layout { strategy: SINGLE_GPU.into(), options: CpOptions::default(), invalid: None }];
    }
    let hq = plan.heads.q;
    let mut out = Vec::new();
    let want = |s: &str| plan.strategies.is_empty() || plan.strategies.iter().any(|x| x == s);
    let inner_ok = |i: usize| plan.inner_ring.is_none_or(|x| x == i);
    let u_ok = |u: usize| plan.ulysses_degree.is_none_or(|x| x == u);
    for def in STRATEGIES {
        if !want(def.name) {
            continue;
        }
        let plain = |invalid| Layout { strategy: def.name.to_string(), options: CpOptions::default(), invalid };
        match def.name {
            "ulysses" => {
                let invalid = (!hq.is_multiple_of(w)).then(|| format!("Ulysses degree {w} (the GPU count) does not divide the {hq} query heads"));
                out.push(plain(invalid));
            }
            "usp" => {
                // 1 < U < W: U = 1 is a ring, U = W is Ulysses (listed as such).
                for u in divisors(w).into_iter().filter(|u| *u > 1 && *u < w && u_ok(*u)) {
                    let invalid = (!hq.is_multiple_of(u)).then(|| format!("Ulysses degree {u} does not divide the {hq} query heads"));
                    let ring = w / u;
                    let mut inners = vec![None];
                    // Only the baselines' USP splits its ring (LoongTrain); attnbench's usp ignores it.
                    if plan.implementation == Implementation::Longca {
                        inners.extend(divisors(ring).into_iter().filter(|i| *i > 1 && *i < ring).map(Some));
                    }
                    for inner in inners.into_iter().filter(|i| plan.inner_ring.is_none() || *i == plan.inner_ring) {
                        out.push(Layout {
                            strategy: "usp".into(),
                            options: CpOptions { ulysses_degree: Some(u), inner_ring: inner, sharding: None },
                            invalid: invalid.clone(),
                        });
                    }
                }
            }
            "double-ring" => {
                for i in divisors(w).into_iter().filter(|i| *i > 1 && *i < w && inner_ok(*i)) {
                    out.push(Layout { strategy: "double-ring".into(), options: CpOptions { inner_ring: Some(i), ..CpOptions::default() }, invalid: None });
                }
            }
            _ => out.push(plain(None)),
        }
    }
    out
}

/// A kernel backend and how its support for the masks is known.
#[derive(Debug, Clone, Serialize)]
pub struct Kernel {
    pub backend: String,
    /// `declared` (the backend's own `supports` check on a CUDA case of these masks) or `worker`
    /// (an `ext:` adapter: its worker decides at run time).
    pub support: &'static str,
}

/// Backends listed only as references / stand-ins, never advised: the f64 reference, and the numpy
/// reference adapter (CPU only).
const NOT_ADVISED: [&str; 2] = ["reference", "ext:numpy-ref"];

/// The kernels that support every mask of the plan on the GPU. Errors when none of the requested
/// built-in backends does (a mask no backend supports).
pub fn kernels(plan: &Plan) -> Result<Vec<Kernel>, BadInput> {
    let mut names: Vec<String> = crate::backend::registry().iter().map(|b| b.name().to_string()).collect();
    names.extend(BUILTIN.iter().map(|b| format!("ext:{}", b.name)));
    if !plan.backends.is_empty() {
        names.retain(|n| plan.backends.contains(n));
        for b in &plan.backends {
            if !names.contains(b) {
                names.push(b.clone());
            }
        }
    }
    names.retain(|n| !NOT_ADVISED.contains(&n.as_str()) || plan.backends.contains(n));
    let mut out = Vec::new();
    let mut refusals = Vec::new();
    for name in names {
        let b = crate::backend::find_backend(&name).map_err(|e| BadInput::new(format!("--backend: {e}")))?;
        if crate::backend::external::is_external(&name) {
            out.push(Kernel { backend: name, support: "worker" });
            continue;
        }
        let mut why = None;
        for m in &plan.masks {
            let case = Case::kernel(&name, &m.pattern, m.params.clone(), plan.seqlen, plan.heads, plan.head_dim, plan.dtype, plan.pass, DeviceKind::Cuda);
            let masks = build_pattern(&m.pattern, plan.seqlen, &m.params).map_err(|e| BadInput::new(format!("--mask {}: {e}", m.label())))?;
            if let Err(e) = b.supports(&case, &masks) {
                why = Some(format!("{}: {e}", m.label()));
                break;
            }
        }
        match why {
            None => out.push(Kernel { backend: name, support: "declared" }),
            Some(w) => refusals.push(format!("{name} ({w})")),
        }
    }
    if !out.iter().any(|k| k.support == "declared") && !plan.backends.iter().any(|b| crate::backend::external::is_external(b)) {
        return Err(BadInput::new(format!(
            "no kernel backend supports {} on {} {}: {}",
            plan.masks.iter().map(|m| m.label()).collect::<Vec<_>>().join(" + "),
            plan.gpu,
            plan.dtype,
            refusals.join("; ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advise::input::Request;

    fn plan(w: usize, heads: &str, imp: &str) -> Plan {
        Request {
            mask: vec!["causal".into()],
            world_size: Some(w),
            seqlen_per_rank: Some(1024),
            heads: Some(heads.into()),
            implementation: Some(imp.into()),
            ..Request::default()
        }
        .plan()
        .unwrap()
    }

    fn labels(p: &Plan) -> Vec<String> {
        layouts(p).iter().map(|l| format!("{} {}{}", l.strategy, l.params(), if l.invalid.is_some() { " X" } else { "" })).collect()
    }

    #[test]
    fn every_degree_dividing_the_gpus_and_heads() {
        let l = labels(&plan(8, "64:8", "attnbench"));
        assert_eq!(
            l,
            [
                "ring-p2p ",
                "ring-p2p-zigzag ",
                "ring-allgather ",
                "ulysses ",
                "usp ulysses_degree=2",
                "usp ulysses_degree=4",
                "double-ring inner_ring=2",
                "double-ring inner_ring=4"
            ]
        );
        // LoongTrain (usp with an inner ring) only under the baselines' implementation.
        let l = labels(&plan(16, "64:8", "longca"));
        assert!(l.contains(&"usp inner_ring=2;ulysses_degree=4".to_string()), "{l:?}");
        assert!(l.contains(&"usp inner_ring=2;ulysses_degree=2".to_string()) && l.contains(&"usp inner_ring=4;ulysses_degree=2".to_string()), "{l:?}");
        assert!(!l.iter().any(|x| x.contains("ulysses_degree=8;") || x.contains("inner_ring=1")), "{l:?}");
    }

    #[test]
    fn a_layout_that_cannot_run_is_listed_with_its_reason() {
        let p = plan(64, "32:8", "attnbench");
        let ls = layouts(&p);
        let u = ls.iter().find(|l| l.strategy == "ulysses").unwrap();
        assert_eq!(u.invalid.as_deref(), Some("Ulysses degree 64 (the GPU count) does not divide the 32 query heads"));
        assert!(ls.iter().any(|l| l.strategy == "usp" && l.options.ulysses_degree == Some(32) && l.invalid.is_none()));
    }

    #[test]
    fn kernels_are_those_declaring_support_on_the_gpu_plus_ext() {
        let ks = kernels(&plan(8, "64:8", "attnbench")).unwrap();
        let names: Vec<&str> = ks.iter().map(|k| k.backend.as_str()).collect();
        assert!(names.contains(&"sliced") && names.contains(&"ext:fa3-varlen") && names.contains(&"ext:flex"), "{names:?}");
        assert!(!names.contains(&"reference") && !names.contains(&"ext:numpy-ref"));
    }
}
