//! Ranking: candidates that fit in memory by predicted step time (fastest first), then those that do
//! not fit (shown apart, with by how much), then those that could not be evaluated (with the reason).
//! The best front: the evaluated candidates no other beats on both step time and memory per GPU.

use serde::Serialize;

/// One kernel × layout, evaluated or with the reason it was not.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Candidate {
    /// 1-based rank among the evaluated candidates that fit in memory.
    pub rank: Option<usize>,
    pub backend: String,
    pub strategy: String,
    /// The layout's degrees, `ulysses_degree=8;inner_ring=2` (empty: the strategy has none).
    pub strategy_params: String,
    /// Predicted (or measured) time of one step of the pass, ms; for a mix, the weighted mean.
    pub step_ms: Option<f64>,
    /// FLOPs / step time / GPUs.
    pub tflops_per_gpu: Option<f64>,
    /// Estimated attention working set per GPU (see `advise::memory`), bytes.
    pub peak_mem_bytes: u64,
    pub mem_detail: String,
    pub fits: bool,
    /// Bytes above the memory budget (candidates that do not fit).
    pub over_by_bytes: Option<u64>,
    /// measured | projected-measured-pieces | projected-model (the weakest over the mix); empty when
    /// not evaluated.
    pub source: String,
    /// Rows or model runs behind the figure, one per mask.
    pub evidence: Vec<String>,
    /// A row without recorded degrees was taken for this layout (see `advise::evidence`).
    pub ambiguous: bool,
    /// Projected figures: the calibrated model's held-out mean |error| for the mask class (the worst
    /// class of a mix), percent; `None` for measured figures or an unvalidated mask class.
    pub model_error_pct: Option<f64>,
    pub model_error_note: String,
    /// On the best front of step time vs memory per GPU.
    pub front: bool,
    /// Why it was not evaluated.
    pub reason: Option<String>,
}

/// Sorts in place and sets `rank` (1-based, fitting evaluated candidates only) and `front`.
pub fn rank(c: &mut [Candidate]) {
    let group = |x: &Candidate| match (x.step_ms.is_some(), x.fits) {
        (true, true) => 0,
        (true, false) => 1,
        (false, _) => 2,
    };
    // Stable: equal times keep the candidates' order (registry order of strategies, then kernels).
    c.sort_by(|a, b| group(a).cmp(&group(b)).then(a.step_ms.unwrap_or(f64::INFINITY).total_cmp(&b.step_ms.unwrap_or(f64::INFINITY))));
    let mut n = 0;
    for x in c.iter_mut() {
        x.rank = (group(x) == 0).then(|| {
            n += 1;
            n
        });
    }
    let pts: Vec<(f64, u64)> = c.iter().filter_map(|x| x.step_ms.map(|t| (t, x.peak_mem_bytes))).collect();
    for x in c.iter_mut() {
        x.front = x.step_ms.is_some_and(|t| !pts.iter().any(|&(t2, m2)| t2 <= t && m2 <= x.peak_mem_bytes && (t2 < t || m2 < x.peak_mem_bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(step: Option<f64>, mem: u64, fits: bool) -> Candidate {
        Candidate { step_ms: step, peak_mem_bytes: mem, fits, ..Candidate::default() }
    }

    #[test]
    fn fitting_first_by_time_then_too_big_then_unevaluated_and_the_front() {
        let mut c = vec![
            cand(None, 1, true),
            cand(Some(5.0), 10, false),
            cand(Some(3.0), 4, true),
            cand(Some(2.0), 8, true),
            cand(Some(4.0), 3, true),
            cand(Some(3.5), 5, true),
        ];
        rank(&mut c);
        let order: Vec<(Option<f64>, Option<usize>, bool)> = c.iter().map(|x| (x.step_ms, x.rank, x.front)).collect();
        assert_eq!(
            order,
            [
                (Some(2.0), Some(1), true),
                (Some(3.0), Some(2), true),
                (Some(3.5), Some(3), false),
                (Some(4.0), Some(4), true),
                (Some(5.0), None, false),
                (None, None, false)
            ]
        );
    }
}
