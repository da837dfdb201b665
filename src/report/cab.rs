//! CAB-style efficiency analysis (after the "CAB" attention benchmark's efficiency study): for each
//! (pattern, pass, setup) with several backends over lengths, fit time and peak memory against
//! sequence length with a least-squares power law on log-log axes, `y = a · S^b` (`ln y = ln a +
//! b · ln S`), report a, b and R² (of the log-log fit), and the *efficiency length*: the length from
//! which an efficient backend beats `naive`.
//!
//! Efficiency length, precisely: from the fits, the S solving `a_e·S^b_e = a_n·S^b_n`, i.e.
//! `S* = (a_e/a_n)^(1/(b_n−b_e))`; when `b_e < b_n` the efficient backend is faster for S > S*
//! ("from S*", and "all measured lengths" when S* is below the smallest one); when `b_e ≥ b_n` it is
//! faster only below S* (or never). Measured: the smallest length where both ran `ok` and the
//! efficient backend's median time is below naive's. Only `ok` rows enter a fit.

use crate::case::CaseKind;
use crate::results::Row;

use super::data::{distinct, fmt_bytes, fmt_seqlen, group_ordered, pass_rank, GroupKey, Metric};
use super::plot::{pass_title, Colors, Content, Figure, LineStyle, Panel, Scale, Series};
use super::table::{Cell, Table, TableRow};

/// The backend the others are compared with.
pub const BASELINE: &str = "naive";

/// `y = a · S^b`, fitted by least squares on (ln S, ln y).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerLaw {
    pub a: f64,
    pub b: f64,
    /// Coefficient of determination of the log-log fit.
    pub r2: f64,
    /// Points used.
    pub n: usize,
}

impl PowerLaw {
    pub fn eval(&self, s: f64) -> f64 {
        self.a * s.powf(self.b)
    }
}

/// Fits `y = a·S^b` to points with positive coordinates; `None` with fewer than two distinct lengths.
pub fn fit_power_law(points: &[(f64, f64)]) -> Option<PowerLaw> {
    let lp: Vec<(f64, f64)> = points.iter().filter(|(x, y)| *x > 0.0 && *y > 0.0).map(|(x, y)| (x.ln(), y.ln())).collect();
    let n = lp.len();
    if n < 2 {
        return None;
    }
    let mx = lp.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let my = lp.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let sxx: f64 = lp.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = lp.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = sxy / sxx;
    let ln_a = my - b * mx;
    let ss_tot: f64 = lp.iter().map(|p| (p.1 - my).powi(2)).sum();
    let ss_res: f64 = lp.iter().map(|p| (p.1 - (ln_a + b * p.0)).powi(2)).sum();
    let r2 = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 1.0 };
    Some(PowerLaw { a: ln_a.exp(), b, r2, n })
}

/// Where an efficient backend's fitted time crosses naive's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Crossover {
    /// Faster than naive for lengths above this one (tokens).
    FasterAbove(f64),
    /// Faster than naive only below this length.
    FasterBelow(f64),
    /// Same exponent: one is faster everywhere.
    Always,
    Never,
}

/// One backend of a group.
#[derive(Debug, Clone)]
pub struct BackendFit {
    pub backend: String,
    /// (S, median ms) of ok rows.
    pub time_points: Vec<(f64, f64)>,
    /// (S, peak bytes) of ok rows.
    pub mem_points: Vec<(f64, f64)>,
    pub time: Option<PowerLaw>,
    pub mem: Option<PowerLaw>,
    /// Against naive, from the fits (None for naive itself or without both fits).
    pub crossover: Option<Crossover>,
    /// Smallest measured length where this backend is faster than naive (both ok).
    pub first_faster: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct CabGroup {
    pub key: GroupKey,
    pub pass: String,
    pub backends: Vec<BackendFit>,
}

fn crossover(e: &PowerLaw, n: &PowerLaw) -> Crossover {
    let db = n.b - e.b;
    if db.abs() < 1e-9 {
        return if e.a < n.a { Crossover::Always } else { Crossover::Never };
    }
    let s = (e.a / n.a).powf(1.0 / db);
    if db > 0.0 {
        Crossover::FasterAbove(s)
    } else {
        Crossover::FasterBelow(s)
    }
}

/// Fits every kernel group that has at least one backend with two or more `ok` lengths.
pub fn analyse(rows: &[Row]) -> Vec<CabGroup> {
    let kernel: Vec<&Row> = rows.iter().filter(|r| r.kind == CaseKind::Kernel).collect();
    let mut groups = group_ordered(kernel.iter().copied(), |r| (GroupKey::of(r), r.pass.clone()));
    let order = distinct(groups.iter().map(|((g, _), _)| g.clone()));
    groups.sort_by_key(|((g, p), _)| (order.iter().position(|o| o == g), pass_rank(p)));
    let mut out = Vec::new();
    for ((key, pass), rs) in groups {
        let mut backends: Vec<BackendFit> = distinct(rs.iter().map(|r| r.backend.clone()))
            .into_iter()
            .map(|b| {
                let mine: Vec<&&Row> = rs.iter().filter(|r| r.backend == b).collect();
                let mut time_points: Vec<(f64, f64)> = mine.iter().filter_map(|r| Some((r.seqlen as f64, Metric::Ms.value(r)?))).collect();
                let mut mem_points: Vec<(f64, f64)> = mine.iter().filter_map(|r| Some((r.seqlen as f64, Metric::Mem.value(r)?))).collect();
                time_points.sort_by(|a, b| a.0.total_cmp(&b.0));
                mem_points.sort_by(|a, b| a.0.total_cmp(&b.0));
                BackendFit {
                    time: fit_power_law(&time_points),
                    mem: fit_power_law(&mem_points),
                    backend: b,
                    time_points,
                    mem_points,
                    crossover: None,
                    first_faster: None,
                }
            })
            .collect();
        if !backends.iter().any(|b| b.time.is_some()) {
            continue;
        }
        if let Some(naive) = backends.iter().find(|b| b.backend == BASELINE).cloned() {
            for b in backends.iter_mut().filter(|b| b.backend != BASELINE) {
                b.crossover = match (&b.time, &naive.time) {
                    (Some(e), Some(n)) => Some(crossover(e, n)),
                    _ => None,
                };
                b.first_faster =
                    b.time_points.iter().filter(|(s, t)| naive.time_points.iter().any(|(ns, nt)| ns == s && t < nt)).map(|(s, _)| *s as usize).next();
            }
        }
        out.push(CabGroup { key, pass, backends });
    }
    out
}

fn fmt_fit(f: &Option<PowerLaw>, unit_bytes: bool) -> (String, String, String) {
    match f {
        None => ("–".into(), "–".into(), "–".into()),
        Some(f) => {
            let a = if unit_bytes { format!("{:.3e} B", f.a) } else { format!("{:.3e} ms", f.a) };
            (a, format!("{:.2}", f.b), format!("{:.3}", f.r2))
        }
    }
}

/// Text of a crossover relative to the measured lengths `[lo, hi]`: a crossing far outside the
/// measured range is an extrapolation and is said so rather than printed as a number.
pub fn fmt_crossover(c: &Option<Crossover>, lo: f64, hi: f64) -> String {
    match c {
        None => "–".into(),
        Some(Crossover::FasterAbove(s)) if *s < lo => "at all measured lengths".into(),
        Some(Crossover::FasterAbove(s)) if *s > hi => format!("from ≈{} (extrapolated)", fmt_len(*s)),
        Some(Crossover::FasterAbove(s)) => format!("from {}", fmt_len(*s)),
        Some(Crossover::FasterBelow(s)) if *s > hi => "at all measured lengths".into(),
        Some(Crossover::FasterBelow(s)) if *s < lo => "never in the measured range".into(),
        Some(Crossover::FasterBelow(s)) => format!("only below {}", fmt_len(*s)),
        Some(Crossover::Always) => "always".into(),
        Some(Crossover::Never) => "never".into(),
    }
}

/// Smallest and largest measured length of a group.
fn len_range(g: &CabGroup) -> (f64, f64) {
    g.backends.iter().flat_map(|b| b.time_points.iter().map(|p| p.0)).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| (a.min(s), b.max(s)))
}

fn fmt_len(s: f64) -> String {
    if !s.is_finite() {
        return "∞".into();
    }
    if s < 1.0 {
        return "<1".into();
    }
    if s >= 1024.0 {
        format!("{:.1}K", s / 1024.0)
    } else {
        format!("{s:.0}")
    }
}

/// One table per group: the fits and efficiency lengths of each backend.
pub fn tables(groups: &[CabGroup]) -> Vec<Table> {
    groups
        .iter()
        .map(|g| {
            let (lo, hi) = len_range(g);
            let rows = g
                .backends
                .iter()
                .map(|b| {
                    let (ta, tb, tr) = fmt_fit(&b.time, false);
                    let (ma, mb, mr) = fmt_fit(&b.mem, true);
                    let (fit_len, first) = if b.backend == BASELINE {
                        ("(baseline)".to_string(), "(baseline)".to_string())
                    } else {
                        (fmt_crossover(&b.crossover, lo, hi), b.first_faster.map(fmt_seqlen).unwrap_or_else(|| "–".into()))
                    };
                    TableRow { label: b.backend.clone(), cells: [ta, tb, tr, ma, mb, mr, fit_len, first].into_iter().map(Cell::Text).collect() }
                })
                .collect();
            Table {
                title: format!("{} · {} · efficiency (CAB)", g.key.pattern(), g.pass),
                subtitle: format!("{} — fits y = a·S^b (least squares on log-log), efficiency length = where a backend beats `{BASELINE}`", g.key.setup()),
                corner: "backend".into(),
                columns: ["time a", "time b", "time R²", "mem a", "mem b", "mem R²", "faster than naive (fit)", "first faster (measured)"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                rows,
            }
        })
        .collect()
}

/// One figure per group: time and memory vs length, measured points and fitted curves.
pub fn figures(groups: &[CabGroup], colors: &mut Colors) -> Vec<Figure> {
    groups
        .iter()
        .map(|g| {
            let (lo, hi) = len_range(g);
            let panel = |mem: bool, colors: &mut Colors| {
                let mut series = Vec::new();
                for b in &g.backends {
                    let c = colors.get(&b.backend);
                    let (pts, fit) = if mem { (&b.mem_points, &b.mem) } else { (&b.time_points, &b.time) };
                    if pts.is_empty() {
                        continue;
                    }
                    series.push(Series { label: b.backend.clone(), color: c, style: LineStyle::Points, points: pts.clone() });
                    if let Some(f) = fit {
                        let (x0, x1) = (pts[0].0, pts[pts.len() - 1].0);
                        let curve: Vec<(f64, f64)> = (0..=16).map(|i| x0 * (x1 / x0).powf(i as f64 / 16.0)).map(|s| (s, f.eval(s))).collect();
                        let mut label = format!("{} {} fit ∝ S^{:.2} (R² {:.3})", b.backend, if mem { "memory" } else { "time" }, f.b, f.r2);
                        if !mem && b.backend != BASELINE && b.crossover.is_some() {
                            label.push_str(&format!(", beats naive {}", fmt_crossover(&b.crossover, lo, hi)));
                        }
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
            };
            let mut panels = vec![panel(false, colors)];
            if g.backends.iter().any(|b| !b.mem_points.is_empty()) {
                panels.push(panel(true, colors));
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
            let _ = fmt_bytes;
            Figure {
                name: format!("cab-{}-{}", g.key.slug(), g.pass),
                title: format!("{}: efficiency vs sequence length, {}", g.key.pattern(), pass_title(&g.pass)),
                subtitle: format!("{} — dots measured, dashed power-law fits", g.key.setup()),
                panels,
                legend,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_power_law() {
        let pts: Vec<(f64, f64)> = [1024.0, 2048.0, 4096.0, 8192.0].iter().map(|&s: &f64| (s, 3e-7 * s.powf(1.9))).collect();
        let f = fit_power_law(&pts).unwrap();
        assert!((f.b - 1.9).abs() < 1e-9, "{f:?}");
        assert!((f.a / 3e-7 - 1.0).abs() < 1e-6);
        assert!((f.r2 - 1.0).abs() < 1e-12);
        assert!(fit_power_law(&pts[..1]).is_none());
    }

    #[test]
    fn crossover_solves_the_two_fits() {
        // naive 1e-6·S², efficient 1e-3·S: equal at S = 1000, efficient faster above.
        let n = PowerLaw { a: 1e-6, b: 2.0, r2: 1.0, n: 4 };
        let e = PowerLaw { a: 1e-3, b: 1.0, r2: 1.0, n: 4 };
        match crossover(&e, &n) {
            Crossover::FasterAbove(s) => assert!((s - 1000.0).abs() < 1e-6, "{s}"),
            c => panic!("{c:?}"),
        }
        assert!(matches!(crossover(&n, &e), Crossover::FasterBelow(_)));
    }
}
