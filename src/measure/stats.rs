//! Statistics of repeat times (milliseconds): median, p20, p80 (linear interpolation between order
//! statistics, like numpy's default), coefficient of variation (sample stddev / mean).

/// Summary of a sample of times in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub p20: f64,
    pub p80: f64,
    pub cv: f64,
    pub n: usize,
}

/// Quantile `p` ∈ [0, 1] of a sorted sample, linear interpolation.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of an empty sample");
    let pos = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

pub fn summarize(times: &[f64]) -> Summary {
    let mut s = times.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let mean = s.iter().sum::<f64>() / n as f64;
    let var = if n > 1 { s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
    Summary { median: quantile(&s, 0.5), p20: quantile(&s, 0.2), p80: quantile(&s, 0.8), cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 }, n }
}

/// (p80 − p20) / median: the adaptive mode's stopping statistic.
pub fn spread(s: &Summary) -> f64 {
    if s.median > 0.0 {
        (s.p80 - s.p20) / s.median
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s.median, 3.0);
        assert!((s.p20 - 1.8).abs() < 1e-12);
        assert!((s.p80 - 4.2).abs() < 1e-12);
        assert_eq!(s.n, 5);
        assert!((spread(&s) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn cv_of_constant_is_zero_and_known_sample() {
        assert_eq!(summarize(&[2.0, 2.0, 2.0]).cv, 0.0);
        // mean 2, sample sd 1 → cv 0.5
        assert!((summarize(&[1.0, 2.0, 3.0]).cv - 0.5).abs() < 1e-12);
        assert_eq!(summarize(&[7.0]).median, 7.0);
    }
}
