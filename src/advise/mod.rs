//! `attnbench advise`: for a mask mix, a shape and a GPU count, every kernel × CP layout that could
//! run it, ranked by predicted step time, each figure with its evidence (measured > projected from
//! measured pieces > projected from the calibrated model, with that model's held-out error) and an
//! estimate of its memory per GPU. docs/ADVISE.md describes it and its validation.
//!
//! [`input`] validates the request, [`candidates`] lists kernels and layouts, [`evidence`] finds or
//! makes each figure, [`memory`] estimates memory, [`ranking`] orders, [`output`] prints.

pub mod candidates;
pub mod evidence;
pub mod input;
pub mod memory;
pub mod output;
pub mod ranking;

use std::collections::HashMap;

use serde::Serialize;

use crate::error::BadInput;
use candidates::{kernels, layouts, Layout};
use evidence::{from_rows, held_out_errors, mask_class, ModelError, Rows, Source, FA3_KERNEL};
pub use input::{Plan, Request};
pub use ranking::Candidate;

/// The answer: the plan, the ranked candidates, the model errors used.
#[derive(Debug, Serialize)]
pub struct Advice {
    #[serde(skip)]
    pub plan: Plan,
    pub candidates: Vec<Candidate>,
    pub model_errors: Vec<ModelError>,
}

/// Evaluates every candidate of `plan` and ranks them.
pub fn advise(plan: Plan) -> Result<Advice, BadInput> {
    let rows = Rows::load(&plan.results)?;
    let kernels = kernels(&plan)?;
    let layouts = layouts(&plan);
    let errors = held_out_errors();
    // Projections depend on the layout and mask, not on which kernel row asked for them.
    let mut sims: HashMap<(usize, usize), Result<evidence::Figure, String>> = HashMap::new();
    let mut out = Vec::new();
    for (li, layout) in layouts.iter().enumerate() {
        let mem = memory::estimate(&plan, layout);
        for k in &kernels {
            let mut c = Candidate {
                backend: k.backend.clone(),
                strategy: layout.strategy.clone(),
                strategy_params: layout.params(),
                peak_mem_bytes: mem.bytes,
                mem_detail: mem.detail.clone(),
                fits: mem.bytes <= plan.mem_per_gpu,
                over_by_bytes: (mem.bytes > plan.mem_per_gpu).then(|| mem.bytes - plan.mem_per_gpu),
                ..Candidate::default()
            };
            if let Some(why) = &layout.invalid {
                c.reason = Some(why.clone());
                out.push(c);
                continue;
            }
            evaluate(&plan, &rows, &errors, &mut sims, li, layout, &k.backend, &mut c);
            out.push(c);
        }
    }
    ranking::rank(&mut out);
    Ok(Advice { plan, candidates: out, model_errors: errors })
}

/// Fills `c`'s figures from the evidence, or its reason.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    plan: &Plan,
    rows: &Rows,
    errors: &[ModelError],
    sims: &mut HashMap<(usize, usize), Result<evidence::Figure, String>>,
    li: usize,
    layout: &Layout,
    kernel: &str,
    c: &mut Candidate,
) {
    let (mut t, mut f, mut wsum) = (0.0, 0.0, 0.0);
    let mut source = Source::Measured;
    let mut err: Option<f64> = None;
    let mut unvalidated = Vec::new();
    for (mi, m) in plan.masks.iter().enumerate() {
        let fig = match from_rows(rows, plan, kernel, layout, m) {
            Some(x) => x,
            None if plan.world == 1 => {
                c.reason = Some(format!(
                    "no evidence: no --results kernel row of it on {} (one GPU: only measured kernel rows rank kernels; the FA3 tile model is fitted to the published kernel bars)",
                    m.label()
                ));
                return;
            }
            None if kernel != FA3_KERNEL => {
                c.reason = Some(format!(
                    "no evidence: no --results row of this kernel and layout on {}, and the calibrated model projects FA3 ({FA3_KERNEL}) only",
                    m.label()
                ));
                return;
            }
            None if !plan.simulate => {
                c.reason = Some(format!("no --results row of this layout on {} (simulation off: --no-simulate)", m.label()));
                return;
            }
            None => match sims.entry((li, mi)).or_insert_with(|| evidence::simulate(plan, layout, m)) {
                Ok(x) => x.clone(),
                Err(e) => {
                    c.reason = Some(format!("the simulator cannot project it: {e}"));
                    return;
                }
            },
        };
        if fig.source != Source::Measured {
            match mask_class(m).and_then(|cl| errors.iter().find(|e| e.class == cl)) {
                Some(e) => err = Some(err.unwrap_or(0.0).max(e.mean_abs_pct)),
                None => unvalidated.push(m.pattern.clone()),
            }
        }
        t += m.weight * fig.step_s;
        f += m.weight * fig.flops;
        wsum += m.weight;
        source = source.max(fig.source);
        c.ambiguous |= fig.ambiguous;
        c.evidence.push(format!("{}: {}", m.label(), fig.detail));
    }
    let step_s = t / wsum;
    c.step_ms = Some(step_s * 1e3);
    c.tflops_per_gpu = Some(f / wsum / step_s / plan.world as f64 / 1e12);
    c.source = source.name().to_string();
    if source != Source::Measured {
        c.model_error_pct = if unvalidated.is_empty() { err } else { None };
        c.model_error_note = if !unvalidated.is_empty() {
            format!("not validated for {}", unvalidated.join(", "))
        } else {
            format!(
                "held-out mean |error| vs LongCA-bench's published CP figures{}",
                if plan.implementation == crate::sim::Implementation::Longca { "" } else { " (measured for --impl longca)" }
            )
        };
    }
}
