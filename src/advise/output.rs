//! The answer as Markdown, as one JSON object, and as a picture (step time vs memory per GPU, the best
//! front drawn as a line) through the report's plot code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{Advice, Candidate};
use crate::report::plot::{write_figures, Colors, Content, Figure, LineStyle, Panel, Scale, Series};
use crate::suite::memory::human;

fn layout_label(c: &Candidate) -> String {
    if c.strategy.is_empty() {
        // One GPU: the kernel alone (`candidates::SINGLE_GPU`).
        "one GPU".into()
    } else if c.strategy_params.is_empty() {
        c.strategy.clone()
    } else {
        format!("{} {}", c.strategy, c.strategy_params)
    }
}

/// One line describing the question.
pub fn title(a: &Advice) -> String {
    let p = &a.plan;
    let masks: Vec<String> = p.masks.iter().map(|m| if p.masks.len() > 1 { format!("{} × {}", m.label(), m.weight) } else { m.label() }).collect();
    format!(
        "{} · {} heads, D {}, {}, {} · {} tokens on {} × {} ({}, {} per node), --impl {} · memory for attention {} ({})",
        masks.join(" + "),
        p.heads,
        p.head_dim,
        p.dtype,
        p.pass,
        p.seqlen,
        p.world,
        p.gpu,
        p.topology.name,
        p.topology.gpus_per_node,
        p.implementation.name(),
        human(p.mem_per_gpu),
        p.mem_source
    )
}

/// The question in a figure's subtitle width.
fn short_title(a: &Advice) -> String {
    let p = &a.plan;
    let masks: Vec<String> = p.masks.iter().map(|m| m.label()).collect();
    format!("{} · {} D{} {} {} · {}K tokens · --impl {}", masks.join(" + "), p.heads, p.head_dim, p.dtype, p.pass, p.seqlen / 1024, p.implementation.name())
}

fn err_cell(c: &Candidate) -> String {
    match (c.source.as_str(), c.model_error_pct) {
        ("measured", _) => "–".into(),
        (_, Some(e)) => format!("{e:.0} %"),
        _ => "not validated".into(),
    }
}

/// The Markdown answer: the ranked table, the candidates that do not fit, the ones not evaluated
/// (grouped by reason) and the notes.
pub fn markdown(a: &Advice) -> String {
    let mut s = format!("## attnbench advise\n\n{}\n\n", title(a));
    s.push_str("| # | kernel | strategy | degrees | step ms | TFLOPS/GPU | mem/GPU (est.) | source | model error (held-out mean) |\n|--:|:--|:--|:--|--:|--:|--:|:--|--:|\n");
    let row = |c: &Candidate| {
        format!(
            "| {}{} | {} | {} | {} | {:.3} | {:.1} | {} | {}{} | {} |\n",
            c.rank.map(|r| r.to_string()).unwrap_or_default(),
            if c.front { " ◆" } else { "" },
            c.backend,
            if c.strategy.is_empty() { "one GPU" } else { &c.strategy },
            c.strategy_params.replace(';', " "),
            c.step_ms.unwrap_or(f64::NAN),
            c.tflops_per_gpu.unwrap_or(f64::NAN),
            human(c.peak_mem_bytes),
            c.source,
            if c.ambiguous { " (ambiguous degrees)" } else { "" },
            err_cell(c)
        )
    };
    for c in a.candidates.iter().filter(|c| c.rank.is_some()) {
        s.push_str(&row(c));
    }
    let big: Vec<&Candidate> = a.candidates.iter().filter(|c| c.step_ms.is_some() && !c.fits).collect();
    if !big.is_empty() {
        s.push_str(&format!(
            "\n**Do not fit in {} per GPU:**\n\n| kernel | layout | step ms | mem/GPU (est.) | over by |\n|:--|:--|--:|--:|--:|\n",
            human(a.plan.mem_per_gpu)
        ));
        for c in big {
            s.push_str(&format!(
                "| {} | {} | {:.3} | {} | {} |\n",
                c.backend,
                layout_label(c),
                c.step_ms.unwrap_or(f64::NAN),
                human(c.peak_mem_bytes),
                human(c.over_by_bytes.unwrap_or(0))
            ));
        }
    }
    // Not evaluated, grouped by reason: which kernels × which layouts.
    let mut groups: BTreeMap<&str, (Vec<&str>, Vec<String>)> = BTreeMap::new();
    for c in a.candidates.iter().filter(|c| c.step_ms.is_none()) {
        let g = groups.entry(c.reason.as_deref().unwrap_or("")).or_default();
        if !g.0.contains(&c.backend.as_str()) {
            g.0.push(&c.backend);
        }
        let l = layout_label(c);
        if !g.1.contains(&l) {
            g.1.push(l);
        }
    }
    if !groups.is_empty() {
        let n = a.candidates.iter().filter(|c| c.step_ms.is_none()).count();
        s.push_str(&format!("\n**Not evaluated ({n} candidates):**\n\n"));
        for (why, (ks, ls)) in groups {
            s.push_str(&format!("- {why}: kernels {}; layouts {}\n", ks.join(", "), ls.join(", ")));
        }
    }
    s.push_str(&format!(
        "\n◆ = on the best front (no other candidate is both faster and smaller). Memory per GPU is an estimate of attention's working set (inputs, outputs, gradients, communication buffers; `src/advise/memory.rs`), not a measurement. Model error = the calibrated model's held-out mean |error| against LongCA-bench's published CP figures for the mask class ({}).\n",
        a.model_errors.iter().map(|e| format!("{} {:.1} % over {} points", e.class, e.mean_abs_pct, e.points)).collect::<Vec<_>>().join(", ")
    ));
    s
}

/// The JSON answer: `{ "request": …, "candidates": [ranked], "model_errors": […] }`.
pub fn json(a: &Advice) -> Value {
    let p = &a.plan;
    json!({
        "request": {
            "masks": p.masks.iter().map(|m| json!({"mask": m.pattern, "mask_params": m.params.to_string(), "weight": m.weight})).collect::<Vec<_>>(),
            "heads": p.heads.to_string(), "head_dim": p.head_dim, "dtype": p.dtype.name(), "pass": p.pass.name(),
            "seqlen": p.seqlen, "seqlen_per_rank": p.seqlen / p.world, "world_size": p.world,
            "topology": p.topology.name, "gpus_per_node": p.topology.gpus_per_node, "gpu": p.gpu,
            "mem_per_gpu": p.mem_per_gpu, "impl": p.implementation.name(),
            "results": p.results.iter().map(|r| r.display().to_string()).collect::<Vec<_>>(),
        },
        "candidates": a.candidates,
        "model_errors": a.model_errors,
        "memory": "estimate: attention's working set per GPU (src/advise/memory.rs), not measured",
    })
}

/// Step time vs memory per GPU of the evaluated candidates, one colour per strategy, the best front as
/// a line; writes `advise.svg`, `advise.png` and `plots.json` into `dir`.
pub fn picture(a: &Advice, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut colors = Colors::default();
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for c in a.candidates.iter().filter(|c| c.step_ms.is_some()) {
        let kind = if c.source == "measured" { "" } else { " (projected)" };
        by.entry(format!("{} · {}{kind}", c.backend, c.strategy)).or_default().push((c.peak_mem_bytes as f64, c.step_ms.unwrap_or(f64::NAN)));
    }
    let mut series: Vec<Series> = by.into_iter().map(|(label, points)| Series { color: colors.get(&label), label, style: LineStyle::Points, points }).collect();
    let mut front: Vec<(f64, f64)> = a.candidates.iter().filter(|c| c.front).map(|c| (c.peak_mem_bytes as f64, c.step_ms.unwrap_or(f64::NAN))).collect();
    front.sort_by(|x, y| x.0.total_cmp(&y.0));
    front.dedup();
    series.push(Series { label: "best front".into(), color: colors.get("best front"), style: LineStyle::Solid, points: front });
    let legend = series.iter().map(|s| (s.label.clone(), s.color, s.style)).collect();
    let fig = Figure {
        name: "advise".into(),
        title: "attnbench advise: step time vs memory per GPU".into(),
        subtitle: short_title(a),
        panels: vec![Panel {
            title: format!("{} × {}", a.plan.world, a.plan.gpu),
            x_label: "memory per GPU (estimate)".into(),
            y_label: format!("step time, ms ({})", a.plan.pass),
            x_scale: Scale::Log2Bytes,
            y_scale: Scale::Log2,
            y_from_zero: false,
            content: Content::Lines(series),
        }],
        legend,
    };
    Ok(write_figures(&[fig], dir)?)
}
