//! Statistics of the comparison with the published figures: per-point errors, their means per set and
//! mask group, the best strategy per cell and the trends with W (Spearman ρ).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::flops::Pass;

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CompRow {
    pub mask: String,
    pub pass: Pass,
    pub strategy: String,
    pub ours: String,
    pub world: usize,
    pub published: f64,
    pub projected: f64,
    /// projected / published − 1.
    pub error: f64,
    pub calibration: bool,
}

/// `full/causal` or `document`.
pub fn mask_group(mask: &str) -> &'static str {
    if mask.ends_with("_document") {
        "document"
    } else {
        "full/causal"
    }
}

/// Mean |error| and count per (calibration?, mask group).
pub type Summary = BTreeMap<(bool, &'static str), (f64, usize)>;

/// One trend: (mask, pass, strategy, published ratio, projected ratio).
pub type Trend = (String, Pass, String, f64, f64);

/// Mean |error| (and count) per (calibration or held-out, mask group).
pub fn summary(rows: &[CompRow]) -> Summary {
    let mut m: Summary = BTreeMap::new();
    for r in rows {
        let e = m.entry((r.calibration, mask_group(&r.mask))).or_default();
        e.0 += r.error.abs();
        e.1 += 1;
    }
    for v in m.values_mut() {
        v.0 /= v.1.max(1) as f64;
    }
    m
}

/// Orderings and trends on the document masks: for each (mask, pass, W) the best strategy published and
/// projected; for each (mask, pass, strategy) the ratio T(W_max)/T(W_min) published and projected.
pub struct Shape {
    pub best: Vec<(String, Pass, usize, String, String)>,
    pub trends: Vec<Trend>,
}

pub fn shape(rows: &[CompRow]) -> Shape {
    let mut groups: BTreeMap<(String, String, usize), Vec<&CompRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.mask.ends_with("_document")) {
        groups.entry((r.mask.clone(), r.pass.to_string(), r.world)).or_default().push(r);
    }
    let best = groups
        .iter()
        .map(|((m, _, w), v)| {
            let arg = |f: &dyn Fn(&CompRow) -> f64| v.iter().max_by(|a, b| f(a).total_cmp(&f(b))).map(|r| r.strategy.clone()).unwrap_or_default();
            let published = arg(&|r| r.published);
            // Projected ties (within TIE) count for the published best: at W = 8 USP and LoongTrain are
            // the same configuration.
            let top = v.iter().map(|r| r.projected).fold(0.0, f64::max);
            let tied: Vec<String> = v.iter().filter(|r| r.projected >= top * (1.0 - TIE)).map(|r| r.strategy.clone()).collect();
            let projected = if tied.contains(&published) { published.clone() } else { tied.join("/") };
            (m.clone(), v[0].pass, *w, published, projected)
        })
        .collect();
    let mut series: BTreeMap<(String, String, String), Vec<&CompRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.mask.ends_with("_document")) {
        series.entry((r.mask.clone(), r.pass.to_string(), r.strategy.clone())).or_default().push(r);
    }
    let trends = series
        .iter()
        .filter_map(|((m, _, s), v)| {
            let lo = v.iter().min_by_key(|r| r.world)?;
            let hi = v.iter().max_by_key(|r| r.world)?;
            (lo.world < hi.world).then(|| (m.clone(), lo.pass, s.clone(), hi.published / lo.published, hi.projected / lo.projected))
        })
        .collect();
    Shape { best, trends }
}

/// Projected values within this fraction of the projected best tie for best.
pub const TIE: f64 = 0.02;

/// Spearman rank correlation of two equally long samples (ties get their mean rank).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let rank = |x: &[f64]| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..x.len()).collect();
        idx.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
        let mut r = vec![0.0; x.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
                j += 1;
            }
            for k in i..=j {
                r[idx[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let (ra, rb) = (rank(a), rank(b));
    let n = a.len() as f64;
    let mean = (n - 1.0) / 2.0;
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - mean) * (y - mean)).sum();
    let va: f64 = ra.iter().map(|x| (x - mean).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mean).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

/// The headline figures of a comparison (the goals): held-out mean |error| per mask group, the
/// held-out point furthest off, and how often the projected best strategy on the document masks is the
/// published one.
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    pub held_out_document: f64,
    pub held_out_dense: f64,
    /// (error, mask, pass, strategy, W) of the held-out point with the largest |error|.
    pub worst: (f64, String, Pass, String, usize),
    pub best_agree: usize,
    pub best_cells: usize,
}

pub fn headline(rows: &[CompRow]) -> Headline {
    let sum = summary(rows);
    let get = |g: &'static str| sum.get(&(false, g)).map_or(f64::NAN, |x| x.0);
    let worst = rows
        .iter()
        .filter(|r| !r.calibration)
        .max_by(|a, b| a.error.abs().total_cmp(&b.error.abs()))
        .map(|r| (r.error, r.mask.clone(), r.pass, r.strategy.clone(), r.world))
        .unwrap_or((f64::NAN, String::new(), Pass::Fwd, String::new(), 0));
    let sh = shape(rows);
    Headline {
        held_out_document: get("document"),
        held_out_dense: get("full/causal"),
        worst,
        best_agree: sh.best.iter().filter(|b| b.3 == b.4).count(),
        best_cells: sh.best.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn spearman_ranks() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]) - 0.8).abs() < 1e-12);
    }

    fn row(mask: &str, pass: Pass, strategy: &str, world: usize, published: f64, projected: f64) -> CompRow {
        CompRow {
            mask: mask.into(),
            pass,
            strategy: strategy.into(),
            ours: strategy.into(),
            world,
            published,
            projected,
            error: projected / published - 1.0,
            calibration: pass == Pass::Fwd && world <= 16,
        }
    }

    /// The headline picks the held-out point furthest off (not a calibration one, however far) and
    /// counts the document cells whose projected best is the published best.
    #[test]
    fn headline_worst_point_and_best_strategy() {
        let rows = vec![
            // calibration, far off: never the worst held-out point
            row("causal_document", Pass::Fwd, "usp", 8, 100.0, 300.0),
            row("causal_document", Pass::Fwd, "ulysses", 8, 90.0, 95.0),
            // held-out cell (bwd, W = 64): published best usp, projected best ulysses
            row("causal_document", Pass::Bwd, "usp", 64, 200.0, 150.0),
            row("causal_document", Pass::Bwd, "ulysses", 64, 180.0, 190.0),
            row("full", Pass::Bwd, "usp", 64, 500.0, 520.0),
        ];
        let h = headline(&rows);
        assert_eq!((h.worst.3.as_str(), h.worst.4, h.worst.2), ("usp", 64, Pass::Bwd));
        assert!((h.worst.0 + 0.25).abs() < 1e-12);
        // Cell (fwd, 8): usp projected best and published best → agree; cell (bwd, 64): disagree.
        assert_eq!((h.best_agree, h.best_cells), (1, 2));
        assert!((h.held_out_dense - 0.04).abs() < 1e-12);
        assert!((h.held_out_document - (0.25 + 10.0 / 180.0) / 2.0).abs() < 1e-12);
    }
}
