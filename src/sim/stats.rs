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

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn spearman_ranks() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]) - 0.8).abs() < 1e-12);
    }
}
