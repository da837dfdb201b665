//! The comparison with the published figures as Markdown (`attnbench simulate --compare-published`):
//! the kernel table, the per-point table, summaries, best strategies, trends and the ablation table.

use std::collections::BTreeMap;

use super::comm_model::{CpParams, H100_CP};
use super::fa3::{h100_fa3, Fa3Model, Fa3Pass, H100_MEM_TBPS};
use super::fit::{ablations, compare, fit_cp, fit_kernel, kernel_role, kernel_tflops, prepare_points, sensitivity, Perturbation, Variant};
use super::published::{kernel_points, CpPoint, IMPLEMENTED};
use super::stats::{headline, shape, spearman, summary, CompRow, Headline, Summary, Trend, TIE};
use super::SimError;

/// The comparison as markdown: per-point table (calibration points marked), summary, orderings and
/// trends.
pub fn markdown(rows: &[CompRow], cp: &CpParams, kernel: &Fa3Model, packs: usize) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Projected by the attnbench CP model (FA3 tile model, varlen calls: fwd × {:.3} + {:.1} µs/item + {:.0} µs/call, bwd × {:.3} + {:.1} µs/item + {:.0} µs/call; \
         inter-node {:.1} GB/s, glue at {:.2} × {:.2} TB/s + {:.0} µs/launch; implementation `longca`; {} pack(s) per document point).\n\n",
        kernel.varlen_fwd.efficiency,
        kernel.varlen_fwd.item_us,
        kernel.varlen_fwd.launch_us,
        kernel.varlen_bwd.efficiency,
        kernel.varlen_bwd.item_us,
        kernel.varlen_bwd.launch_us,
        cp.inter_gbps,
        cp.mem_efficiency,
        H100_MEM_TBPS,
        cp.launch_us,
        packs
    ));
    s.push_str("| mask | pass | strategy (ours) | W | published | projected | error | set |\n|:--|:--|:--|--:|--:|--:|--:|:--|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} ({}) | {} | {:.0} | {:.0} | {:+.0} % | {} |\n",
            r.mask,
            r.pass,
            r.strategy,
            r.ours,
            r.world,
            r.published,
            r.projected,
            r.error * 100.0,
            if r.calibration { "calibration" } else { "held-out" }
        ));
    }
    s.push_str("\n| set | masks | points | mean abs error |\n|:--|:--|--:|--:|\n");
    for ((cal, group), (e, n)) in summary(rows) {
        s.push_str(&format!("| {} | {} | {} | {:.1} % |\n", if cal { "calibration" } else { "held-out" }, group, n, e * 100.0));
    }
    let h = headline(rows);
    if h.worst.4 > 0 {
        s.push_str(&format!("\nWorst held-out point: {} {} {} at W = {}, {:+.0} %.\n", h.worst.1, h.worst.2, h.worst.3, h.worst.4, h.worst.0 * 100.0));
    }
    // Where the held-out error on the document masks sits: per world size and per strategy.
    let held: Vec<&CompRow> = rows.iter().filter(|r| !r.calibration && r.mask.ends_with("_document")).collect();
    if !held.is_empty() {
        let mae = |f: &dyn Fn(&CompRow) -> bool| {
            let v: Vec<f64> = held.iter().filter(|r| f(r)).map(|r| r.error.abs()).collect();
            (v.iter().sum::<f64>() / v.len().max(1) as f64 * 100.0, v.len())
        };
        s.push_str("\nHeld-out document points, mean |error| by world size and by strategy (mean signed error in brackets):\n\n| group | points | mean abs error | mean error |\n|:--|--:|--:|--:|\n");
        let signed = |f: &dyn Fn(&CompRow) -> bool| {
            let v: Vec<f64> = held.iter().filter(|r| f(r)).map(|r| r.error).collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64 * 100.0
        };
        let mut worlds: Vec<usize> = held.iter().map(|r| r.world).collect();
        worlds.sort_unstable();
        worlds.dedup();
        for w in worlds {
            let (e, n) = mae(&|r: &CompRow| r.world == w);
            s.push_str(&format!("| W = {w} | {n} | {e:.1} % | {:+.1} % |\n", signed(&|r: &CompRow| r.world == w)));
        }
        for st in IMPLEMENTED {
            let (e, n) = mae(&|r: &CompRow| r.strategy == st);
            if n > 0 {
                s.push_str(&format!("| {st} | {n} | {e:.1} % | {:+.1} % |\n", signed(&|r: &CompRow| r.strategy == st)));
            }
        }
    }
    let sh = shape(rows);
    let agree = sh.best.iter().filter(|b| b.3 == b.4).count();
    s.push_str(&format!(
        "\nBest strategy on the document masks (published / projected; projected values within {:.0} % of the best tie): {agree} of {} agree.\n\n",
        TIE * 100.0,
        sh.best.len()
    ));
    s.push_str("| mask | pass | W | published best | projected best |\n|:--|:--|--:|:--|:--|\n");
    for (m, p, w, a, b) in &sh.best {
        s.push_str(&format!("| {m} | {p} | {w} | {a} | {b}{} |\n", if a == b { "" } else { " ✗" }));
    }
    let down = sh.trends.iter().filter(|t| (t.3 < 1.0) == (t.4 < 1.0)).count();
    s.push_str(&format!(
        "\nChange with W on the document masks (T at the largest W / T at the smallest): direction agrees for {down} of {} series. \
         Per mask and pass, the strategies ranked by how much they degrade (Spearman ρ between the published and projected ratios; \
         1 = same order) and the strongest degrader:\n\n",
        sh.trends.len()
    ));
    s.push_str("| mask | pass | ρ | strongest degrader published / projected |\n|:--|:--|--:|:--|\n");
    let mut groups: BTreeMap<(String, String), Vec<&Trend>> = BTreeMap::new();
    for t in &sh.trends {
        groups.entry((t.0.clone(), t.1.to_string())).or_default().push(t);
    }
    for ((m, p), v) in &groups {
        let a: Vec<f64> = v.iter().map(|t| t.3).collect();
        let b: Vec<f64> = v.iter().map(|t| t.4).collect();
        let worst = |x: &[f64]| v[x.iter().enumerate().min_by(|i, j| i.1.total_cmp(j.1)).map(|i| i.0).unwrap_or(0)].2.clone();
        s.push_str(&format!("| {m} | {p} | {:.2} | {} / {} |\n", spearman(&a, &b), worst(&a), worst(&b)));
    }
    s.push_str("\n| mask | pass | strategy | published ratio | projected ratio |\n|:--|:--|:--|--:|--:|\n");
    for (m, p, st, a, b) in &sh.trends {
        s.push_str(&format!("| {m} | {p} | {st} | {a:.2} | {b:.2} |\n"));
    }
    s
}

/// The kernel-level table: modelled vs published FA3 TFLOPS for every kernel bar (dense bars are the
/// kernel fit's points, document bars the check).
pub fn kernel_markdown(m: &Fa3Model) -> String {
    let mut s = String::from("| mask | pass | tokens | published | model | error | role |\n|:--|:--|--:|--:|--:|--:|:--|\n");
    let mut errs: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for p in kernel_points() {
        let t = kernel_tflops(m, &p);
        let e = t / p.tflops - 1.0;
        let role = kernel_role(&p);
        let x = errs.entry(role).or_default();
        x.0 += e.abs();
        x.1 += 1;
        s.push_str(&format!("| {} | {} | {} | {:.0} | {:.0} | {:+.0} % | {} |\n", p.mask, p.pass, p.seqlen, p.tflops, t, e * 100.0, role));
    }
    for (role, (e, n)) in errs {
        s.push_str(&format!("\n{role}: mean |error| {:.1} % over {n} bars.", e / n as f64 * 100.0));
    }
    s.push('\n');
    s
}

/// The ablation table: each variant's refitted parameters and its mean |error| on the calibration
/// points and on the held-out points per mask group.
pub fn ablation_markdown(rows: &[(Variant, CpParams, Summary)]) -> String {
    let mut s = String::from(
        "| model | inter-node GB/s | glue mem eff | µs/launch | calibration | held-out full/causal | held-out document |\n|:--|--:|--:|--:|--:|--:|--:|\n",
    );
    for (v, c, sum) in rows {
        let get = |cal: bool, g: &str| {
            let xs: Vec<&(f64, usize)> = sum.iter().filter(|((c2, g2), _)| *c2 == cal && (g.is_empty() || *g2 == g)).map(|(_, v)| v).collect();
            let n: usize = xs.iter().map(|x| x.1).sum();
            if n == 0 {
                "–".to_string()
            } else {
                format!("{:.1} %", xs.iter().map(|x| x.0 * x.1 as f64).sum::<f64>() / n as f64 * 100.0)
            }
        };
        s.push_str(&format!(
            "| {} | {:.1} | {:.2} | {:.0} | {} | {} | {} |\n",
            v.describe(),
            c.inter_gbps,
            c.mem_efficiency,
            c.launch_us,
            get(true, ""),
            get(false, "full/causal"),
            get(false, "document")
        ));
    }
    s
}

fn headline_cells(h: &Headline) -> String {
    format!(
        "{:.1} % | {:.1} % | {:+.0} % ({} {} {} W = {}) | {} of {}",
        h.held_out_document * 100.0,
        h.held_out_dense * 100.0,
        h.worst.0 * 100.0,
        h.worst.1,
        h.worst.2,
        h.worst.3,
        h.worst.4,
        h.best_agree,
        h.best_cells
    )
}

/// The sensitivity table: the full model with one fitted quantity moved by ±20 % (not refitted) and
/// the headline figures it then gives, beside the unperturbed model's.
pub fn sensitivity_markdown(base: &[CompRow], rows: &[(Perturbation, Vec<CompRow>)]) -> String {
    let mut s =
        String::from("| change | held-out document | held-out full/causal | worst held-out point | best strategy (document) |\n|:--|--:|--:|:--|--:|\n");
    s.push_str(&format!("| none (fitted model) | {} |\n", headline_cells(&headline(base))));
    for (p, r) in rows {
        s.push_str(&format!("| {} | {} |\n", p.describe(), headline_cells(&headline(r))));
    }
    s
}

/// What `--compare-published` compares: the points kept, the packs per document point, whether to
/// refit, print JSON rows, and run the ablations.
pub struct CompareOptions<'a> {
    pub keep: &'a dyn Fn(&CpPoint) -> bool,
    pub packs: usize,
    pub fit: bool,
    pub json: bool,
    pub ablate: bool,
}

/// The whole `--compare-published` output, section by section through `emit` (each call one
/// printed block, followed by a newline), so the slow parts show progress as they finish.
pub fn compare_published(o: &CompareOptions, emit: &mut dyn FnMut(&str)) -> Result<(), SimError> {
    let kernel = if o.fit { fit_kernel(&kernel_points()) } else { h100_fa3() };
    if o.fit {
        let t = |p: &Fa3Pass| format!("({:.4}, {:.2}, {:.1})", p.efficiency, p.item_us, p.launch_us);
        emit(&format!(
            "Fitted FA3 kernel parameters (efficiency, µs/item, µs/call): dense fwd {} bwd {}; varlen fwd {} bwd {}\n",
            t(&kernel.fwd),
            t(&kernel.bwd),
            t(&kernel.varlen_fwd),
            t(&kernel.varlen_bwd)
        ));
    }
    emit("## FA3 kernel model vs the published FA3 kernel bars\n");
    emit(&kernel_markdown(&kernel));
    let points = prepare_points(Variant::Full, o.packs, &kernel, o.keep)?;
    let cp = if o.fit {
        let (cp, err) = fit_cp(&points, Variant::Full);
        emit(&format!("Fitted on the calibration points (forward, W = 8 and 16): {cp:?}, mean |error| {:.1} %\n", err * 100.0));
        cp
    } else {
        H100_CP
    };
    emit("## CP model vs LongCA-bench's published CP figures (H100)\n");
    let rows = compare(&points, &cp, Variant::Full);
    if o.json {
        emit(&serde_json::to_string(&serde_json::json!({ "kernel": kernel, "cp": cp, "rows": rows })).map_err(|e| bad(e.to_string()))?);
    } else {
        emit(&markdown(&rows, &cp, &kernel, o.packs));
    }
    if o.ablate {
        emit("## Ablations (each refitted on the calibration points; held-out mean |error|)\n");
        let table = ablation_markdown(&ablations(&points, o.packs, &kernel, o.keep)?);
        emit(table.trim_end_matches('\n'));
        emit("\n## Sensitivity (the fitted model, one quantity moved by ±20 %, not refitted)\n");
        let table = sensitivity_markdown(&rows, &sensitivity(&points, o.packs, &kernel, &cp, o.keep)?);
        emit(table.trim_end_matches('\n'));
    }
    Ok(())
}

fn bad(m: String) -> SimError {
    SimError::Bad(m)
}
