//! Figure builders: result rows → [`Figure`]s (see the module list in `plot/mod.rs`). Only
//! [`Metric::value`] turns a row into a number, so a row whose status is not `ok` is never drawn as
//! one; failed cases of a bar chart become their mark (X/E/W/T/!).

use crate::case::CaseKind;
use crate::report::data::{
    cp_series_labels, distinct, fmt_seqlen, group_ordered, mark, pass_rank, slug, CpLen, GroupKey, Metric, Run, THROTTLE_LEGEND, THROTTLE_MARK,
};
use crate::results::{Row, Status};

use super::figure::{BarValue, Bars, Colors, Content, Figure, LineStyle, Panel, Scale, Series};

/// Options of the figure builder.
#[derive(Debug, Clone, Default)]
pub struct PlotOptions {
    /// Length for the grouped bars; `None` = the largest length every pattern has.
    pub at_seqlen: Option<usize>,
}

/// A row with the label of its run.
#[derive(Clone, Copy)]
struct Tagged<'a> {
    run: &'a str,
    row: &'a Row,
}

/// What a kernel figure groups on: the group key without the device, so two GPUs overlay.
fn plot_key(r: &Row) -> GroupKey {
    let mut k = GroupKey::of(r);
    k.device.clear();
    k
}

fn devices(rows: &[Tagged]) -> String {
    distinct(rows.iter().map(|t| t.row.device.clone())).join(" vs ")
}

fn setup_line(k: &GroupKey, rows: &[Tagged]) -> String {
    let mut k = k.clone();
    k.device = devices(rows);
    k.setup()
}

/// Series name of a row: backend (kernel) or strategy (CP), with the run label when several runs
/// are overlaid, "(projected)" for simulated rows.
fn series_name(t: &Tagged, base: String, multi_run: bool) -> (String, String, bool) {
    let colour_key = if multi_run { format!("{} · {}", base, t.run) } else { base };
    let projected = t.row.kind == CaseKind::Simulated;
    let label = if projected { format!("{colour_key} (projected)") } else { colour_key.clone() };
    (label, colour_key, projected)
}

/// Builds every figure for the given runs.
pub fn build_figures(runs: &[Run], opts: &PlotOptions, colors: &mut Colors) -> Vec<Figure> {
    let multi = runs.len() > 1;
    let tagged: Vec<Tagged> = runs.iter().flat_map(|r| r.rows.iter().map(move |row| Tagged { run: &r.label, row })).collect();
    let kernel: Vec<Tagged> = tagged.iter().copied().filter(|t| t.row.strategy.is_empty() && t.row.kind != CaseKind::Cp).collect();
    let cp: Vec<Tagged> = tagged.iter().copied().filter(|t| !(t.row.strategy.is_empty() && t.row.kind != CaseKind::Cp)).collect();
    let mut figs = Vec::new();
    // Line figures per pattern: TFLOPS and memory.
    for (k, rs) in group_ordered(kernel.iter(), |t| plot_key(t.row)) {
        let rs: Vec<Tagged> = rs.into_iter().copied().collect();
        figs.push(metric_vs_len(&k, &rs, Metric::Tflops, multi, colors));
        if rs.iter().any(|t| Metric::Mem.value(t.row).is_some()) {
            figs.push(metric_vs_len(&k, &rs, Metric::Mem, multi, colors));
        }
        // Issue 33: energy efficiency per backend, where power was measured.
        if rs.iter().any(|t| Metric::TflopsPerWatt.value(t.row).is_some()) {
            figs.push(metric_vs_len(&k, &rs, Metric::TflopsPerWatt, multi, colors));
        }
    }
    figs.extend(bar_figures(&kernel, opts, multi, colors));
    let len = CpLen::choose(&cp.iter().map(|t| t.row).collect::<Vec<_>>());
    for ((k, seqlen, pass), rs) in group_ordered(cp.iter(), |t| (plot_key(t.row), len.key(t.row), t.row.pass.clone())) {
        let rs: Vec<Tagged> = rs.into_iter().copied().collect();
        figs.push(cp_figure(&k, len, seqlen, &pass, &rs, multi, colors));
    }
    // Issue 33: a figure with a throttled series says what its mark means.
    for f in &mut figs {
        let flagged = f.panels.iter().any(|p| matches!(&p.content, Content::Lines(ls) if ls.iter().any(|l| l.label.ends_with(THROTTLE_MARK))));
        if flagged {
            f.subtitle.push_str(&format!(" — {THROTTLE_LEGEND}"));
        }
    }
    figs
}

/// `base[i]` names the series of `rs[i]` (backend, or strategy with its options).
fn lines_by_series(rs: &[Tagged], base: &[String], multi: bool, colors: &mut Colors, x: impl Fn(&Row) -> f64, y: impl Fn(&Row) -> Option<f64>) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let mut throttled: Vec<bool> = Vec::new();
    for (t, base) in rs.iter().zip(base) {
        let (label, key, projected) = series_name(t, base.clone(), multi);
        let color = colors.get(&key);
        let idx = match out.iter().position(|s| s.label == label) {
            Some(i) => i,
            None => {
                out.push(Series { label, color, style: if projected { LineStyle::Dashed } else { LineStyle::Solid }, points: vec![] });
                throttled.push(false);
                out.len() - 1
            }
        };
        if let Some(v) = y(t.row) {
            throttled[idx] |= t.row.throttled();
            let xv = x(t.row);
            // A later row for the same x (re-measured case) replaces the earlier one.
            out[idx].points.retain(|p| p.0 != xv);
            out[idx].points.push((xv, v));
        }
    }
    for (s, hot) in out.iter_mut().zip(&throttled) {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Issue 33: a line with a point measured while throttled is marked in the legend.
        if *hot {
            s.label.push_str(&format!(" {THROTTLE_MARK}"));
        }
    }
    // Start a projected line at the last measured point of the same series, so the eye follows it.
    for i in 0..out.len() {
        if out[i].style != LineStyle::Dashed || out[i].points.is_empty() {
            continue;
        }
        let first_x = out[i].points[0].0;
        let anchor =
            out.iter().find(|m| m.style == LineStyle::Solid && m.color == out[i].color).and_then(|m| m.points.iter().rev().find(|p| p.0 < first_x).copied());
        if let Some(a) = anchor {
            out[i].points.insert(0, a);
        }
    }
    out
}

fn legend_of(panels: &[Panel]) -> Vec<(String, usize, LineStyle)> {
    let mut l: Vec<(String, usize, LineStyle)> = Vec::new();
    for p in panels {
        match &p.content {
            Content::Lines(ss) => {
                for s in ss {
                    // One entry per series across panels: a backend throttled in one panel only (the
                    // forward, say) is one legend entry, marked, not two (seen on the H200 sweep).
                    let unmarked = |label: &str| label.trim_end_matches(THROTTLE_MARK).trim_end().to_string();
                    match l.iter_mut().find(|e| unmarked(&e.0) == unmarked(&s.label) && e.1 == s.color && e.2 == s.style) {
                        Some(e) if s.label.ends_with(THROTTLE_MARK) => e.0 = s.label.clone(),
                        Some(_) => {}
                        None => l.push((s.label.clone(), s.color, s.style)),
                    }
                }
            }
            Content::Bars(b) => {
                for (s, c) in &b.series {
                    if !l.iter().any(|e| e.0 == *s) {
                        l.push((s.clone(), *c, LineStyle::Solid));
                    }
                }
            }
        }
    }
    l
}

fn metric_vs_len(k: &GroupKey, rs: &[Tagged], metric: Metric, multi: bool, colors: &mut Colors) -> Figure {
    let mut passes = distinct(rs.iter().map(|t| t.row.pass.clone()));
    passes.sort_by_key(|p| pass_rank(p));
    let panels: Vec<Panel> = passes
        .iter()
        .map(|pass| {
            let sub: Vec<Tagged> = rs.iter().copied().filter(|t| &t.row.pass == pass).collect();
            let backends: Vec<String> = sub.iter().map(|t| t.row.backend.clone()).collect();
            let series = lines_by_series(&sub, &backends, multi, colors, |r| r.seqlen as f64, |r| metric.value(r));
            let (y_label, y_scale) = match metric {
                Metric::Mem => ("peak memory (bytes, log₂)".to_string(), Scale::Log2Bytes),
                Metric::TflopsPerWatt => ("TFLOPS per watt (10¹² FLOP/J)".to_string(), Scale::Linear),
                _ => (format!("{} ({})", metric.caption(CaseKind::Kernel), if metric == Metric::Ms { "ms" } else { "10¹² FLOP/s" }), Scale::Linear),
            };
            Panel {
                title: pass_title(pass),
                x_label: "sequence length (tokens, log₂)".into(),
                y_label,
                x_scale: Scale::Log2Len,
                y_scale,
                y_from_zero: metric != Metric::Mem,
                content: Content::Lines(series),
            }
        })
        .collect();
    let what = match metric {
        Metric::Mem => "peak memory",
        Metric::TflopsPerWatt => "energy efficiency (TFLOPS/W)",
        _ => "attention throughput",
    };
    Figure {
        name: format!(
            "{}-{}",
            match metric {
                Metric::Mem => "mem",
                Metric::TflopsPerWatt => "tflops-per-watt",
                _ => "tflops",
            },
            k.slug()
        ),
        title: format!("{}: {what} vs sequence length", k.pattern()),
        subtitle: setup_line(k, rs),
        legend: legend_of(&panels),
        panels,
    }
}

pub fn pass_title(pass: &str) -> String {
    match pass {
        "fwd" => "forward".into(),
        "bwd" => "backward".into(),
        "fwdbwd" => "forward + backward".into(),
        p => p.into(),
    }
}

fn bar_figures(kernel: &[Tagged], opts: &PlotOptions, multi: bool, colors: &mut Colors) -> Vec<Figure> {
    let mut figs = Vec::new();
    // Group ignoring the pattern and device: one figure per pass and setup.
    let mut groups = group_ordered(kernel.iter(), |t| {
        let mut k = plot_key(t.row);
        k.mask.clear();
        k.mask_params.clear();
        (k, t.row.pass.clone())
    });
    groups.sort_by_key(|((_, p), _)| pass_rank(p));
    for ((k, pass), rs) in groups {
        let rs: Vec<Tagged> = rs.into_iter().copied().collect();
        let patterns = distinct(rs.iter().map(|t| plot_key(t.row)));
        let at = match opts.at_seqlen {
            Some(s) => s,
            None => {
                // Largest length present (with any status) for every pattern.
                let mut common: Option<Vec<usize>> = None;
                for p in &patterns {
                    let lens: Vec<usize> = rs.iter().filter(|t| plot_key(t.row) == *p).map(|t| t.row.seqlen).collect();
                    common = Some(match common {
                        None => lens,
                        Some(c) => c.into_iter().filter(|s| lens.contains(s)).collect(),
                    });
                }
                match common.and_then(|c| c.into_iter().max()) {
                    Some(s) => s,
                    None => continue,
                }
            }
        };
        let at_rows: Vec<Tagged> = rs.iter().copied().filter(|t| t.row.seqlen == at).collect();
        if at_rows.is_empty() {
            continue;
        }
        let series_keys = distinct(at_rows.iter().map(|t| series_name(t, t.row.backend.clone(), multi)));
        let series: Vec<(String, usize)> = series_keys.iter().map(|(label, key, _)| (label.clone(), colors.get(key))).collect();
        let groups: Vec<GroupKey> = distinct(at_rows.iter().map(|t| plot_key(t.row)));
        let values = groups
            .iter()
            .map(|g| {
                series_keys
                    .iter()
                    .map(|(label, _, _)| {
                        let row = at_rows.iter().rev().find(|t| plot_key(t.row) == *g && series_name(t, t.row.backend.clone(), multi).0 == *label);
                        match row {
                            None => BarValue::Missing,
                            Some(t) => match (Metric::Tflops.value(t.row), mark(t.row.status)) {
                                (Some(v), _) => BarValue::Value(v),
                                (None, Some(m)) => BarValue::Mark(m),
                                (None, None) => BarValue::Missing,
                            },
                        }
                    })
                    .collect()
            })
            .collect();
        let bars = Bars { groups: groups.iter().map(|g| g.pattern()).collect(), series, values };
        let panel = Panel {
            title: format!("{} at S = {}", pass_title(&pass), fmt_seqlen(at)),
            x_label: "mask pattern".into(),
            y_label: "TFLOPS (10¹² FLOP/s)".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            y_from_zero: true,
            content: Content::Bars(bars),
        };
        let panels = vec![panel];
        figs.push(Figure {
            name: format!("bars-{}-S{}", slug(&pass), fmt_seqlen(at)),
            title: format!("Throughput per mask pattern, {} at S = {}", pass_title(&pass), fmt_seqlen(at)),
            subtitle: format!("{}   —   no bar: X unsupported · E out of memory · W wrong · T timeout · ! error", setup_line(&k, &rs)),
            legend: legend_of(&panels),
            panels,
        });
    }
    figs
}

fn cp_figure(k: &GroupKey, len: CpLen, seqlen: usize, pass: &str, rs: &[Tagged], multi: bool, colors: &mut Colors) -> Figure {
    let rows: Vec<&Row> = rs.iter().map(|t| t.row).collect();
    let apart: Vec<String> = rs.iter().map(|t| format!("{} {}", t.run, t.row.kind == CaseKind::Simulated)).collect();
    let names = cp_series_labels(&rows, &apart);
    let tput = lines_by_series(rs, &names, multi, colors, |r| r.world_size as f64, |r| Metric::Tflops.value(r));
    // Scaling efficiency: the row's own column, else TFLOPS/GPU relative to the series' 1-GPU point.
    let eff = lines_by_series(
        rs,
        &names,
        multi,
        colors,
        |r| r.world_size as f64,
        |r| {
            if r.status != Status::Ok {
                return None;
            }
            r.scaling_eff.or_else(|| {
                let one = rs.iter().find(|t| t.row.world_size == 1 && t.row.strategy == r.strategy && t.row.status == Status::Ok)?;
                Some(Metric::Tflops.value(r)? / Metric::Tflops.value(one.row)?)
            })
        },
    );
    let panels = vec![
        Panel {
            title: "throughput per GPU".into(),
            x_label: "world size (GPUs, log₂)".into(),
            y_label: "TFLOPS per GPU (10¹² FLOP/s)".into(),
            x_scale: Scale::Log2Count,
            y_scale: Scale::Linear,
            y_from_zero: true,
            content: Content::Lines(tput),
        },
        Panel {
            title: "scaling efficiency".into(),
            x_label: "world size (GPUs, log₂)".into(),
            y_label: "efficiency (1 = linear scaling)".into(),
            x_scale: Scale::Log2Count,
            y_scale: Scale::Linear,
            y_from_zero: true,
            content: Content::Lines(eff),
        },
    ];
    let backends = distinct(rs.iter().map(|t| t.row.backend.clone())).join(", ");
    Figure {
        name: format!("cp-{}-S{}{}-{}", k.slug(), fmt_seqlen(seqlen), if len == CpLen::PerRank { "-per-gpu" } else { "" }, slug(pass)),
        title: format!("Context parallel: {}, {}, {} (per-rank kernel {backends})", k.pattern(), len.label(seqlen), pass_title(pass)),
        subtitle: setup_line(k, rs),
        legend: legend_of(&panels),
        panels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;
    use crate::report::plot::render_svg;

    fn row(backend: &str, mask: &str, s: usize, status: Status, tflops: f64) -> Row {
        let c = Case::kernel(backend, mask, Default::default(), s, HeadLayout { q: 8, kv: 8 }, 64, DType::Bf16, Pass::Fwd, DeviceKind::Cuda);
        let mut r = Row::for_case("r", &c, "NVIDIA H100");
        r.status = status;
        r.tflops = Some(tflops);
        r.peak_mem_bytes = Some(s as u64 * 1000);
        r
    }

    #[test]
    fn failed_rows_are_marks_not_points() {
        let rows = vec![
            row("a", "full", 1024, Status::Ok, 100.0),
            row("a", "full", 2048, Status::Oom, 99999.0),
            row("b", "full", 1024, Status::Ok, 120.0),
            row("b", "full", 2048, Status::Ok, 150.0),
            row("a", "causal", 2048, Status::Unsupported, 5.0),
            row("b", "causal", 2048, Status::Ok, 80.0),
        ];
        let runs = vec![Run { label: "r".into(), rows }];
        let figs = build_figures(&runs, &PlotOptions::default(), &mut Colors::default());
        let t = figs.iter().find(|f| f.name == "tflops-full").unwrap();
        let Content::Lines(ss) = &t.panels[0].content else { panic!() };
        assert_eq!(ss[0].points, vec![(1024.0, 100.0)]);
        assert_eq!(ss[1].points.len(), 2);
        let bars = figs.iter().find(|f| f.name == "bars-fwd-S2K").unwrap();
        let Content::Bars(b) = &bars.panels[0].content else { panic!() };
        assert_eq!(b.groups, vec!["full", "causal"]);
        assert_eq!(b.values[0], vec![BarValue::Mark("E"), BarValue::Value(150.0)]);
        assert_eq!(b.values[1], vec![BarValue::Mark("X"), BarValue::Value(80.0)]);
        let svg = render_svg(t).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(!svg.contains("99999"));
    }

    /// Issue 33: a TFLOPS/W figure per pattern where power was measured (none where it was not), and
    /// a throttled backend's line is marked, with the legend in the subtitle.
    #[test]
    fn tflops_per_watt_figure_and_throttled_lines() {
        let mut a = row("a", "full", 1024, Status::Ok, 100.0);
        a.tflops_per_watt = Some(0.25);
        let mut b = row("b", "full", 1024, Status::Ok, 120.0);
        b.tflops_per_watt = Some(0.2);
        b.throttle = "hw_thermal".into();
        let runs = vec![Run { label: "r".into(), rows: vec![a.clone(), b] }];
        let figs = build_figures(&runs, &PlotOptions::default(), &mut Colors::default());
        let w = figs.iter().find(|f| f.name == "tflops-per-watt-full").expect("a TFLOPS/W figure");
        let Content::Lines(ss) = &w.panels[0].content else { panic!() };
        assert_eq!(ss[0].points, vec![(1024.0, 0.25)]);
        assert_eq!((ss[0].label.as_str(), ss[1].label.as_str()), ("a", "b †"));
        assert!(w.subtitle.contains("throttled while timed"), "{}", w.subtitle);
        // b is throttled in one panel only: one legend entry for it, marked.
        let mut fwd = row("b", "full", 2048, Status::Ok, 120.0);
        fwd.throttle = "sw_power_cap".into();
        let mut bwd = row("b", "full", 2048, Status::Ok, 100.0);
        bwd.pass = "bwd".into();
        let figs = build_figures(&[Run { label: "r".into(), rows: vec![fwd, bwd] }], &PlotOptions::default(), &mut Colors::default());
        let t = figs.iter().find(|f| f.name == "tflops-full").expect("a TFLOPS figure");
        assert_eq!(t.panels.len(), 2);
        assert_eq!(t.legend.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), vec!["b †"]);
        let mut plain = a;
        plain.tflops_per_watt = None;
        let figs = build_figures(&[Run { label: "r".into(), rows: vec![plain] }], &PlotOptions::default(), &mut Colors::default());
        assert!(figs.iter().all(|f| !f.name.starts_with("tflops-per-watt")));
        assert!(figs.iter().all(|f| !f.subtitle.contains("throttled")));
    }
}
