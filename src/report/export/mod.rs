//! Exports of a comparison for CI dashboards, hyperfine-style: an exporter is one method that turns
//! the comparison into bytes, one small type per format, an enum choosing among them.
//!
//! - [`GithubActionBenchmark`]: the JSON array `github-action-benchmark` reads with
//!   `tool: customSmallerIsBetter` (metric `ms`) or `tool: customBiggerIsBetter` (metric `tflops`):
//!   `[{"name", "unit", "value", "range", "extra"}]`, one entry per case that is `ok` in the new run.
//! - [`Bencher`]: Bencher Metric Format, `{"<case>": {"latency": {"value", "lower_value",
//!   "upper_value"}, "throughput": {"value"}}}` — latency in nanoseconds (Bencher's built-in
//!   `latency` measure) with p20/p80 as bounds; `throughput` in FLOP/s (Bencher's built-in
//!   `throughput` is operations per second; per GPU for CP).
//! - [`MarkdownSummary`]: the PR-comment summary (counts, regressions, improvements, every case).
//!
//! One file per format (`gab.rs`, `bencher.rs`, `markdown.rs`); adding one is a file and a line in
//! [`ExportType::exporter`].

mod bencher;
mod gab;
pub mod markdown;

pub use bencher::Bencher;
pub use gab::GithubActionBenchmark;
pub use markdown::MarkdownSummary;

use super::compare::{CaseComparison, Comparison, Verdict};
use super::data::ReportError;

pub trait Exporter {
    fn serialize(&self, cmp: &Comparison) -> Result<Vec<u8>, ReportError>;
}

/// The value github-action-benchmark tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GabMetric {
    /// Median milliseconds (use `tool: customSmallerIsBetter`).
    Ms,
    /// TFLOPS, per GPU for CP (use `tool: customBiggerIsBetter`).
    Tflops,
}

#[derive(Debug, Clone, Copy)]
pub enum ExportType {
    Markdown,
    GithubActionBenchmark(GabMetric),
    Bencher,
}

impl ExportType {
    pub fn exporter(self) -> Box<dyn Exporter> {
        match self {
            ExportType::Markdown => Box::new(MarkdownSummary),
            ExportType::GithubActionBenchmark(m) => Box::new(GithubActionBenchmark { metric: m }),
            ExportType::Bencher => Box::new(Bencher),
        }
    }
}

/// Exported cases: those with a new, `ok` row (`only-in-base` and failures have nothing to track).
pub(crate) fn tracked(cmp: &Comparison) -> impl Iterator<Item = &CaseComparison> {
    cmp.cases.iter().filter(|c| c.verdict != Verdict::OnlyInBase && c.new_status == Some(crate::results::Status::Ok))
}

/// Benchmark names must be unique; two cases with the same label get their case_id appended.
pub(crate) fn names(cmp: &Comparison) -> Vec<(String, &CaseComparison)> {
    let cs: Vec<_> = tracked(cmp).collect();
    cs.iter()
        .map(|c| {
            let dup = cs.iter().filter(|d| d.label == c.label).count() > 1;
            (if dup { format!("{} #{}", c.label, c.case_id) } else { c.label.clone() }, *c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;
    use crate::report::compare::compare;
    use crate::results::{Row, Status};
    use serde_json::Value;

    #[test]
    fn gab_and_bmf_shapes() {
        let c = Case::kernel("sdpa", "full", Default::default(), 1024, HeadLayout { q: 8, kv: 8 }, 64, DType::Bf16, Pass::Fwd, DeviceKind::Cuda);
        let mut r = Row::for_case("r", &c, "gpu");
        r.status = Status::Ok;
        r.ms_median = Some(2.0);
        r.ms_p20 = Some(1.9);
        r.ms_p80 = Some(2.1);
        r.tflops = Some(300.0);
        let mut bad = r.clone();
        bad.case_id = "other".into();
        bad.seqlen = 2048;
        bad.fail(Status::Wrong, "mismatch");
        let cmp = compare(&[r.clone()], &[r, bad], 5.0);
        let gab: Value = serde_json::from_slice(&ExportType::GithubActionBenchmark(GabMetric::Ms).exporter().serialize(&cmp).unwrap()).unwrap();
        assert_eq!(gab.as_array().unwrap().len(), 1, "{gab}");
        assert_eq!(gab[0]["unit"], "ms");
        assert_eq!(gab[0]["value"], 2.0);
        assert_eq!(gab[0]["range"], "± 0.100");
        let bmf: Value = serde_json::from_slice(&Bencher.serialize(&cmp).unwrap()).unwrap();
        let (_, m) = bmf.as_object().unwrap().iter().next().unwrap();
        assert_eq!(m["latency"]["value"], 2.0e6);
        assert_eq!(m["latency"]["lower_value"], 1.9e6);
        assert_eq!(m["throughput"]["value"], 300.0e12);
        assert_eq!(bmf.as_object().unwrap().len(), 1);
    }
}
