//! CAB's efficiency analysis (Shark-NLP's Comprehensive Attention Benchmark, README "Efficiency
//! Length" and `scripts/efficiency_length/efficiency_length.py`), per (pattern, pass, setup) group
//! of kernel rows with several backends over lengths.
//!
//! **Efficiency length, as CAB defines it**, for time (median ms) and for memory (peak bytes):
//! 1. the baseline (vanilla attention in CAB; `naive` by default here, `--baseline` to choose) is
//!    fitted with a quadratic `a·S² + b·S + c` by least squares over all its `ok` lengths;
//! 2. every other backend is fitted with a line `d·S + e` over its `ok` lengths, for time without
//!    its shortest one (CAB's script fits `seq_lengths[1:]` for time, all six for memory);
//! 3. the efficiency length is the larger root of the two fits' difference, the length beyond which
//!    the backend's fit stays below the baseline's ([`fit::efficiency_length`], which also says
//!    "always" or "never", with the reason, where the fits give no such length).
//!
//! Kept beside it and named apart: the **scaling exponents**, a least-squares power law `y = a·S^b`
//! on log-log axes per backend (b = 2: quadratic growth). They describe growth; they are not CAB's
//! efficiency length. Also kept: the first measured length where a backend is faster (smaller) than
//! the baseline, both `ok`. Only `ok` rows enter any fit ([`Metric::value`]).

pub mod figure;
pub mod fit;
pub mod table;

pub use figure::figures;
pub use fit::{efficiency_length, fit_poly, fit_power_law, EffLen, Poly, PowerLaw};
pub use table::tables;

use crate::case::CaseKind;
use crate::results::Row;

use super::data::{distinct, group_ordered, pass_rank, GroupKey, Metric, ReportError};

/// The backend the others are compared with unless `--baseline` says otherwise (CAB's "vanilla").
pub const DEFAULT_BASELINE: &str = "naive";

/// One quantity (time or memory) of one backend.
#[derive(Debug, Clone)]
pub struct Quantity {
    /// (S, value) of ok rows, sorted by S: median ms, or peak bytes.
    pub points: Vec<(f64, f64)>,
    /// CAB's fit: quadratic for the baseline, linear for the others (time: without the shortest length).
    pub cab_fit: Option<Poly>,
    /// Against the baseline (`None` for the baseline itself).
    pub efficiency_length: Option<EffLen>,
    /// Smallest measured length where this backend's value is below the baseline's (both ok).
    pub first_below: Option<usize>,
    /// Scaling exponent fit (not CAB's): y = a·S^b on log-log axes.
    pub power_law: Option<PowerLaw>,
}

/// One backend of a group.
#[derive(Debug, Clone)]
pub struct BackendFit {
    pub backend: String,
    pub is_baseline: bool,
    pub time: Quantity,
    pub mem: Quantity,
}

#[derive(Debug, Clone)]
pub struct CabGroup {
    pub key: GroupKey,
    pub pass: String,
    pub baseline: String,
    pub backends: Vec<BackendFit>,
    /// Where the memory numbers come from, from the group's rows (see [`mem_source`]).
    pub mem_source: String,
}

impl CabGroup {
    /// Smallest and largest measured length of the group.
    pub fn len_range(&self) -> (f64, f64) {
        self.backends
            .iter()
            .flat_map(|b| b.time.points.iter().chain(&b.mem.points).map(|p| p.0))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| (lo.min(s), hi.max(s)))
    }
}

/// Where `peak_mem_bytes` of these rows comes from, from their `mem_source` column: the CUDA caching
/// allocator's peak, attnbench's counting CPU allocator (both measured), or a formula (estimated). A
/// CSV written before that column existed says nothing; its CPU rows then carried the backend's own
/// count of the bytes of the tensors it allocates (an estimate), its GPU rows the CUDA allocator's peak.
pub fn mem_source(rows: &[&Row]) -> String {
    let with_mem: Vec<&&Row> = rows.iter().filter(|r| Metric::Mem.value(r).is_some()).collect();
    if with_mem.is_empty() {
        return "no memory numbers in these rows".into();
    }
    let mut parts = Vec::new();
    for source in distinct(with_mem.iter().map(|r| r.mem_source.clone())) {
        let n = with_mem.iter().filter(|r| r.mem_source == source).count();
        let what = match source.as_str() {
            "cuda-allocator" => "measured by the CUDA caching allocator (peak above the pre-call baseline)".to_string(),
            "cpu-allocator" => "measured by attnbench's counting CPU allocator (peak above the pre-call baseline)".to_string(),
            "estimate" => "estimated from tensor shapes, not measured".to_string(),
            "" => {
                let cpu = with_mem.iter().filter(|r| r.mem_source.is_empty() && is_cpu(r)).count();
                if cpu == n {
                    "no mem_source column (an older CSV): on CPU such rows hold the backend's own count of the bytes it allocates, an estimate, not an allocator measurement".to_string()
                } else {
                    "no mem_source column (an older CSV): CPU rows hold the backend's own count (an estimate), GPU rows the CUDA allocator's peak".to_string()
                }
            }
            other => format!("mem_source `{other}`"),
        };
        parts.push(format!("{n} row(s): {what}"));
    }
    parts.join("; ")
}

fn is_cpu(r: &Row) -> bool {
    r.device == "cpu" || r.timing_mode.starts_with("cpu")
}

fn points(rows: &[&Row], metric: Metric) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = Vec::new();
    for r in rows {
        if let Some(v) = metric.value(r) {
            // A later row for the same length (a re-measured case) replaces the earlier one.
            p.retain(|q| q.0 != r.seqlen as f64);
            p.push((r.seqlen as f64, v));
        }
    }
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    p
}

fn quantity(points: Vec<(f64, f64)>, baseline: bool, drop_shortest: bool) -> Quantity {
    let cab_fit = if baseline {
        fit_poly(&points, 2)
    } else {
        let from = usize::from(drop_shortest).min(points.len());
        fit_poly(&points[from..], 1)
    };
    Quantity { power_law: fit_power_law(&points), cab_fit, points, efficiency_length: None, first_below: None }
}

/// The efficiency length of `q` against the baseline's quantity `base`, or why there is none.
fn compare_to_baseline(q: &mut Quantity, base: Option<&Quantity>, baseline: &str, what: &str) {
    let Some(base) = base else {
        q.efficiency_length = Some(EffLen::Unknown(format!("no ok `{baseline}` rows in this group")));
        return;
    };
    q.first_below = q.points.iter().find(|(s, v)| base.points.iter().any(|(bs, bv)| bs == s && v < bv)).map(|(s, _)| *s as usize);
    q.efficiency_length = Some(match (&base.cab_fit, &q.cab_fit) {
        (Some(b), Some(e)) => efficiency_length(b, e),
        (None, _) => EffLen::Unknown(format!("`{baseline}` has {} ok length(s) with {what}; a quadratic needs 3", base.points.len())),
        (_, None) => EffLen::Unknown(if what == "time" {
            format!("{} ok length(s) with time; CAB's line leaves out the shortest and needs 2 more", q.points.len())
        } else {
            format!("{} ok length(s) with {what}; a line needs 2", q.points.len())
        }),
    });
}

/// Fits every kernel group that has at least one backend with an `ok` time. `baseline` must name a
/// backend of the rows (an input error otherwise, listing the backends present).
pub fn analyse(rows: &[Row], baseline: &str) -> Result<Vec<CabGroup>, ReportError> {
    let kernel: Vec<&Row> = rows.iter().filter(|r| r.kind == CaseKind::Kernel).collect();
    if !kernel.is_empty() && !kernel.iter().any(|r| r.backend == baseline) {
        let present = distinct(kernel.iter().map(|r| r.backend.clone()));
        return Err(ReportError::Input(format!(
            "--baseline {baseline}: no kernel rows of that backend (backends present: {}); CAB compares every backend with one baseline (its \"vanilla\")",
            present.join(", ")
        )));
    }
    let mut groups = group_ordered(kernel.iter().copied(), |r| (GroupKey::of(r), r.pass.clone()));
    let order = distinct(groups.iter().map(|((g, _), _)| g.clone()));
    groups.sort_by_key(|((g, p), _)| (order.iter().position(|o| o == g), pass_rank(p)));
    let mut out = Vec::new();
    for ((key, pass), rs) in groups {
        let mut backends: Vec<BackendFit> = distinct(rs.iter().map(|r| r.backend.clone()))
            .into_iter()
            .map(|b| {
                let mine: Vec<&Row> = rs.iter().copied().filter(|r| r.backend == b).collect();
                let is_baseline = b == baseline;
                BackendFit {
                    time: quantity(points(&mine, Metric::Ms), is_baseline, true),
                    mem: quantity(points(&mine, Metric::Mem), is_baseline, false),
                    is_baseline,
                    backend: b,
                }
            })
            .collect();
        if !backends.iter().any(|b| !b.time.points.is_empty()) {
            continue;
        }
        let base = backends.iter().find(|b| b.is_baseline).cloned();
        for b in backends.iter_mut().filter(|b| !b.is_baseline) {
            compare_to_baseline(&mut b.time, base.as_ref().map(|x| &x.time).filter(|q| !q.points.is_empty()), baseline, "time");
            compare_to_baseline(&mut b.mem, base.as_ref().map(|x| &x.mem).filter(|q| !q.points.is_empty()), baseline, "memory");
        }
        out.push(CabGroup { mem_source: mem_source(&rs), key, pass, baseline: baseline.to_string(), backends });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;
    use crate::results::Status;

    fn row(source: &str, device: &str) -> Row {
        let c = Case::kernel("naive", "full", Default::default(), 1024, HeadLayout { q: 2, kv: 2 }, 64, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
        let mut r = Row::for_case("r", &c, device);
        r.status = Status::Ok;
        r.peak_mem_bytes = Some(1 << 20);
        r.mem_source = source.into();
        r
    }

    #[test]
    fn memory_provenance_comes_from_the_rows() {
        let rows = [row("cpu-allocator", "cpu"), row("cpu-allocator", "cpu"), row("estimate", "cpu")];
        let text = mem_source(&rows.iter().collect::<Vec<_>>());
        assert!(text.contains("2 row(s): measured by attnbench's counting CPU allocator") && text.contains("1 row(s): estimated"), "{text}");
        let old = [row("", "cpu")];
        assert!(mem_source(&old.iter().collect::<Vec<_>>()).contains("an estimate, not an allocator measurement"));
        let gpu = [row("cuda-allocator", "NVIDIA H200")];
        assert!(mem_source(&gpu.iter().collect::<Vec<_>>()).contains("CUDA caching allocator"));
    }
}
