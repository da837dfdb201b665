//! One figure per CAB group: time and memory against length, measured points and CAB's fitted
//! curves (the baseline's quadratic, each backend's line), the efficiency length in the legend.

use super::{CabGroup, EffLen, Quantity};
use crate::report::plot::{pass_title, Colors, Content, Figure, LineStyle, Panel, Scale, Series};

fn length_label(e: &Option<EffLen>) -> String {
    match e {
        Some(EffLen::Tokens(s)) => format!("efficiency length {s:.0}"),
        Some(EffLen::Always(_)) => "cheaper at every length".into(),
        Some(EffLen::Never(_)) => "never cheaper for good".into(),
        Some(EffLen::Unknown(_)) | None => "no efficiency length".into(),
    }
}

fn panel(g: &CabGroup, mem: bool, colors: &mut Colors) -> Panel {
    let (lo, hi) = g.len_range();
    let mut series = Vec::new();
    for b in &g.backends {
        let q: &Quantity = if mem { &b.mem } else { &b.time };
        if q.points.is_empty() {
            continue;
        }
        let c = colors.get(&b.backend);
        let what = if mem { "memory" } else { "time" };
        let exponent = q.power_law.map(|f| format!(", power law ∝ S^{:.2}", f.b)).unwrap_or_default();
        series.push(Series { label: format!("{} {what} measured{exponent}", b.backend), color: c, style: LineStyle::Points, points: q.points.clone() });
        if let Some(f) = &q.cab_fit {
            // The fitted model over the group's lengths; a line with a negative value at short
            // lengths has no place on a log axis, so those samples are left out.
            let curve: Vec<(f64, f64)> = (0..=24).map(|i| lo * (hi / lo).powf(i as f64 / 24.0)).map(|s| (s, f.eval(s))).filter(|p| p.1 > 0.0).collect();
            let label = if b.is_baseline {
                format!("{} {what}: CAB quadratic fit (baseline)", b.backend)
            } else {
                format!("{} {what}: CAB linear fit, {}", b.backend, length_label(&q.efficiency_length))
            };
            series.push(Series { label, color: c, style: LineStyle::Fit, points: curve });
        }
    }
    Panel {
        title: if mem { "peak memory".into() } else { "median time".into() },
        x_label: "sequence length (tokens, log₂)".into(),
        y_label: if mem { "peak memory (bytes, log₂)".into() } else { "time (ms, log₂)".into() },
        x_scale: Scale::Log2Len,
        y_scale: if mem { Scale::Log2Bytes } else { Scale::Log2 },
        y_from_zero: false,
        content: Content::Lines(series),
    }
}

pub fn figures(groups: &[CabGroup], colors: &mut Colors) -> Vec<Figure> {
    groups
        .iter()
        .map(|g| {
            let mut panels = vec![panel(g, false, colors)];
            if g.backends.iter().any(|b| !b.mem.points.is_empty()) {
                panels.push(panel(g, true, colors));
            }
            let mut legend: Vec<(String, usize, LineStyle)> = Vec::new();
            for p in &panels {
                if let Content::Lines(ss) = &p.content {
                    for s in ss {
                        if !legend.iter().any(|l| l.0 == s.label) {
                            legend.push((s.label.clone(), s.color, s.style));
                        }
                    }
                }
            }
            Figure {
                name: format!("cab-{}-{}", g.key.slug(), g.pass),
                title: format!("{}: CAB efficiency vs `{}`, {}", g.key.pattern(), g.baseline, pass_title(&g.pass)),
                subtitle: format!("{} — dots measured, dashed CAB fits (baseline quadratic, others linear)", g.key.setup()),
                panels,
                legend,
            }
        })
        .collect()
}
