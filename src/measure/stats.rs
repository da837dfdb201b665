//! The one statistics routine for repeat times (milliseconds), used by every row kind: median, p20,
//! p80 (linear interpolation between order statistics, numpy's default) and the coefficient of
//! variation as the *sample* standard deviation over the mean. A sample with a non-finite or negative
//! time is rejected (the case becomes an `error` row), never sorted or averaged.

use super::MeasureError;

/// Summary of a sample of times in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub p20: f64,
    pub p80: f64,
    /// Sample standard deviation / mean (0 for one sample).
    pub cv: f64,
    pub n: usize,
}

/// Quantile `p` ∈ [0, 1] of a sorted, non-empty sample, linear interpolation.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let pos = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Summary {
    /// Statistics of `times` (ms). Errors: an empty sample, or a time that is NaN, infinite or negative
    /// (named by its index).
    pub fn of(times: &[f64]) -> Result<Summary, MeasureError> {
        if let Some((repeat, &ms)) = times.iter().enumerate().find(|(_, t)| !t.is_finite() || **t < 0.0) {
            return Err(MeasureError::BadTime { repeat, ms });
        }
        if times.is_empty() {
            return Err(MeasureError::NoSamples);
        }
        let mut s = times.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Ok(Summary { median: quantile(&s, 0.5), p20: quantile(&s, 0.2), p80: quantile(&s, 0.8), cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 }, n })
    }

    /// (p80 − p20) / median: the adaptive mode's stopping statistic.
    pub fn spread(&self) -> f64 {
        if self.median > 0.0 {
            (self.p80 - self.p20) / self.median
        } else {
            f64::INFINITY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(s.median, 3.0);
        assert!((s.p20 - 1.8).abs() < 1e-12);
        assert!((s.p80 - 4.2).abs() < 1e-12);
        assert_eq!(s.n, 5);
        assert!((s.spread() - 0.8).abs() < 1e-12);
    }

    #[test]
    fn cv_is_the_sample_version() {
        assert_eq!(Summary::of(&[2.0, 2.0, 2.0]).unwrap().cv, 0.0);
        // mean 2, sample sd 1 → cv 0.5 (the population version would be 0.408)
        assert!((Summary::of(&[1.0, 2.0, 3.0]).unwrap().cv - 0.5).abs() < 1e-12);
        assert_eq!(Summary::of(&[7.0]).unwrap().median, 7.0);
    }

    #[test]
    fn impossible_times_are_errors_not_panics() {
        assert!(matches!(Summary::of(&[1.0, f64::NAN, 2.0]), Err(MeasureError::BadTime { repeat: 1, .. })));
        assert!(matches!(Summary::of(&[f64::INFINITY]), Err(MeasureError::BadTime { repeat: 0, .. })));
        assert!(matches!(Summary::of(&[1.0, -0.5]), Err(MeasureError::BadTime { repeat: 1, .. })));
        assert!(matches!(Summary::of(&[]), Err(MeasureError::NoSamples)));
    }
}
