//! Comparing two runs case by case (joined on `case_id`), with a noise-aware verdict.
//!
//! Per case present and `ok` in both runs: `ratio = new median ms / base median ms`. The change is a
//! **regression** when `ratio > 1 + threshold` *and* the runs' noise intervals do not overlap,
//! i.e. `new.p20 > base.p80`; an **improvement** when `ratio < 1 − threshold` and `new.p80 <
//! base.p20`; otherwise **unchanged**. The noise interval of a run is its [p20, p80] of the repeat
//! times (a missing p20/p80 counts as the median, a zero-width interval). So a 10 % slowdown with
//! ±1 % spread is a regression, the same slowdown with ±10 % spread is not. Cases in one run only
//! are `removed` / `new`; a case not `ok` in either run is `not-ok` (reported, not a
//! regression unless the caller asks for that).
//!
//! Cases in one run only are explained rather than just counted. A base-only and a new-only case
//! whose columns (kind, backend, strategy, mask, parameters, length, batch, heads, D, dtype, pass,
//! device, world size) are all equal are one case whose `case_id` changed: **id-changed** (the case
//! identity covers something outside the CSV columns, e.g. the measure settings or attnbench's
//! definition of the id). Two that differ in exactly one name (backend, strategy, mask or mask
//! parameters) and pair up one to one are **renamed**. The rest are **removed** (base only) and
//! **new** (new only). Renamed and id-changed pairs show their time ratio but are never judged: a
//! baseline whose ids no longer match is refreshed, not trusted.

use std::collections::HashMap;

use serde::Serialize;

use crate::results::{Row, Status};

use super::data::{fmt_sig, row_label};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Regression,
    Improvement,
    Unchanged,
    NotOk,
    /// In the base run only: removed from the suite, or not run this time.
    OnlyInBase,
    /// In the new run only: added to the suite.
    OnlyInNew,
    /// One case under another name in the new run (one of backend, strategy, mask, parameters).
    Renamed,
    /// The same columns in both runs under a different `case_id`: the case identity changed.
    IdChanged,
    /// Issue 33: beyond the threshold and the noise, but the GPU was throttled (power or thermal
    /// clock limit, or an SM clock drop) while one of the two runs timed it: reported as throttling,
    /// not judged as a code change.
    Throttled,
}

impl Verdict {
    pub const ALL: [Verdict; 9] = [
        Verdict::Regression,
        Verdict::Improvement,
        Verdict::Unchanged,
        Verdict::NotOk,
        Verdict::OnlyInBase,
        Verdict::OnlyInNew,
        Verdict::Renamed,
        Verdict::IdChanged,
        Verdict::Throttled,
    ];

    /// The verdicts every summary lists, even at zero.
    pub fn is_core(self) -> bool {
        !matches!(self, Verdict::Renamed | Verdict::IdChanged | Verdict::Throttled)
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Regression => "regression",
            Verdict::Improvement => "improvement",
            Verdict::Unchanged => "unchanged",
            Verdict::NotOk => "not-ok",
            Verdict::OnlyInBase => "removed",
            Verdict::OnlyInNew => "new",
            Verdict::Renamed => "renamed",
            Verdict::IdChanged => "id-changed",
            Verdict::Throttled => "throttled",
        }
    }
}

/// One case of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CaseComparison {
    pub case_id: String,
    pub label: String,
    pub verdict: Verdict,
    /// new median / base median (both ok).
    pub ratio: Option<f64>,
    /// Whether the [p20, p80] intervals overlap (both ok).
    pub noise_overlap: Option<bool>,
    pub base_ms: Option<f64>,
    pub new_ms: Option<f64>,
    pub base_status: Option<Status>,
    pub new_status: Option<Status>,
    /// What a renamed or id-changed pair is (`backend flash → sdpa-flash`, `case_id a → b`).
    pub note: String,
    /// The new row (or the base row for `only-in-base`), for exports.
    #[serde(skip)]
    pub row: Row,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Relative change needed to call a regression/improvement, percent.
    pub threshold_pct: f64,
    pub cases: Vec<CaseComparison>,
}

impl Comparison {
    pub fn count(&self, v: Verdict) -> usize {
        self.cases.iter().filter(|c| c.verdict == v).count()
    }

    /// Cases ok in both runs, i.e. the ones whose times were actually compared.
    pub fn checked(&self) -> usize {
        self.cases.iter().filter(|c| matches!(c.verdict, Verdict::Regression | Verdict::Improvement | Verdict::Unchanged | Verdict::Throttled)).count()
    }

    pub fn regressions(&self) -> usize {
        self.count(Verdict::Regression)
    }

    /// Cases that were ok in base and are not ok in new (a kernel that broke).
    pub fn newly_broken(&self) -> usize {
        self.cases.iter().filter(|c| c.base_status == Some(Status::Ok) && matches!(c.new_status, Some(s) if s != Status::Ok)).count()
    }
}

/// Everything that identifies a case in the CSV's columns, with one name column blanked (`skip`).
fn identity(r: &Row, skip: Option<usize>) -> Vec<String> {
    let names = [&r.backend, &r.strategy, &r.mask, &r.mask_params];
    let mut k: Vec<String> = names.iter().enumerate().map(|(i, n)| if Some(i) == skip { String::new() } else { n.to_string() }).collect();
    k.extend([
        format!("{:?}", r.kind),
        r.seqlen.to_string(),
        r.batch.to_string(),
        r.heads_q.to_string(),
        r.heads_kv.to_string(),
        r.head_dim.to_string(),
        r.dtype.clone(),
        r.pass.clone(),
        r.device.clone(),
        r.world_size.to_string(),
        r.strategy_params.clone(),
    ]);
    k
}

const NAME_COLUMNS: [&str; 4] = ["backend", "strategy", "mask", "mask_params"];

/// Pairs removed and new cases that are one case: equal columns under another `case_id`
/// (id-changed), then equal but for one name (renamed), each pair made one entry.
fn pair_one_run_cases(cases: &mut Vec<CaseComparison>, base: &HashMap<String, Row>) {
    for skip in [None, Some(0), Some(1), Some(2), Some(3)] {
        let removed: Vec<usize> = (0..cases.len()).filter(|&i| cases[i].verdict == Verdict::OnlyInBase).collect();
        let added: Vec<usize> = (0..cases.len()).filter(|&i| cases[i].verdict == Verdict::OnlyInNew).collect();
        let key = |i: usize| identity(&cases[i].row, skip);
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for &r in &removed {
            let kr = key(r);
            let same_base: Vec<usize> = removed.iter().copied().filter(|&x| key(x) == kr).collect();
            let same_new: Vec<usize> = added.iter().copied().filter(|&x| key(x) == kr).collect();
            // One to one only: with two candidates either way, which is which would be a guess.
            if same_base.len() == 1 && same_new.len() == 1 {
                merged.push((r, same_new[0]));
            }
        }
        let mut drop = Vec::new();
        for (r, n) in merged {
            let base_row = &base[&cases[r].case_id];
            let new_row = cases[n].row.clone();
            let c = &mut cases[r];
            c.verdict = if skip.is_none() { Verdict::IdChanged } else { Verdict::Renamed };
            c.note = match skip {
                None => format!("case_id {} → {}", c.case_id, new_row.case_id),
                Some(f) => {
                    let name = |row: &Row| [&row.backend, &row.strategy, &row.mask, &row.mask_params][f].to_string();
                    format!("{} `{}` → `{}`", NAME_COLUMNS[f], name(base_row), name(&new_row))
                }
            };
            c.label = row_label(&new_row);
            c.new_ms = new_row.ms_median;
            c.new_status = Some(new_row.status);
            if let (Some(bm), Some(nm), Status::Ok, Status::Ok) = (base_row.ms_median, new_row.ms_median, base_row.status, new_row.status) {
                c.ratio = (bm > 0.0).then_some(nm / bm);
            }
            c.row = new_row;
            drop.push(n);
        }
        drop.sort_unstable();
        for n in drop.into_iter().rev() {
            cases.remove(n);
        }
    }
}

fn interval(r: &Row) -> Option<(f64, f64, f64)> {
    let m = r.ms_median?;
    Some((r.ms_p20.unwrap_or(m), m, r.ms_p80.unwrap_or(m)))
}

/// Compares `new` against `base`. When a run has several rows for a case the last one counts.
/// Cases are ordered as in `base`, then new-only cases as in `new`.
pub fn compare(base: &[Row], new: &[Row], threshold_pct: f64) -> Comparison {
    let last = |rows: &[Row]| -> (Vec<String>, HashMap<String, Row>) {
        let mut order = Vec::new();
        let mut map = HashMap::new();
        for r in rows {
            if map.insert(r.case_id.clone(), r.clone()).is_none() {
                order.push(r.case_id.clone());
            }
        }
        (order, map)
    };
    let (border, bmap) = last(base);
    let (norder, nmap) = last(new);
    let t = threshold_pct / 100.0;
    let mut cases = Vec::new();
    for id in border.iter().chain(norder.iter().filter(|id| !bmap.contains_key(*id))) {
        let (b, n) = (bmap.get(id), nmap.get(id));
        let row = n.or(b).expect("id from one of the maps").clone();
        let mut c = CaseComparison {
            case_id: id.clone(),
            label: row_label(&row),
            verdict: Verdict::Unchanged,
            ratio: None,
            noise_overlap: None,
            base_ms: b.and_then(|r| r.ms_median),
            new_ms: n.and_then(|r| r.ms_median),
            base_status: b.map(|r| r.status),
            new_status: n.map(|r| r.status),
            note: String::new(),
            row,
        };
        c.verdict = match (b, n) {
            (Some(_), None) => Verdict::OnlyInBase,
            (None, Some(_)) => Verdict::OnlyInNew,
            (Some(b), Some(n)) => match (b.status == Status::Ok, n.status == Status::Ok, interval(b), interval(n)) {
                (true, true, Some((b20, bm, b80)), Some((n20, nm, n80))) if bm > 0.0 => {
                    let ratio = nm / bm;
                    c.ratio = Some(ratio);
                    c.noise_overlap = Some(n20 <= b80 && b20 <= n80);
                    if ratio > 1.0 + t && n20 > b80 {
                        Verdict::Regression
                    } else if ratio < 1.0 - t && n80 < b20 {
                        Verdict::Improvement
                    } else {
                        Verdict::Unchanged
                    }
                }
                _ => Verdict::NotOk,
            },
            (None, None) => unreachable!("every id comes from base or new"),
        };
        // Issue 33: a change measured on a throttled GPU is throttling until shown otherwise.
        if let (Verdict::Regression | Verdict::Improvement, Some(b), Some(n)) = (c.verdict, b, n) {
            let side = |name: &str, r: &Row| r.throttled().then(|| format!("{name} run throttled ({})", r.throttle));
            let why: Vec<String> = [side("base", b), side("new", n)].into_iter().flatten().collect();
            if !why.is_empty() {
                c.note = format!("{} {}; not judged as a code change", if c.verdict == Verdict::Regression { "slower" } else { "faster" }, why.join(", "));
                c.verdict = Verdict::Throttled;
            }
        }
        cases.push(c);
    }
    pair_one_run_cases(&mut cases, &bmap);
    Comparison { threshold_pct, cases }
}

pub(crate) fn pct(ratio: f64) -> String {
    format!("{:+.1} %", (ratio - 1.0) * 100.0)
}

/// What the cases in one run only mean for the comparison, in a sentence (None when there are none).
pub fn explain_one_run_cases(cmp: &Comparison) -> Option<String> {
    let (ids, renamed, removed, new) =
        (cmp.count(Verdict::IdChanged), cmp.count(Verdict::Renamed), cmp.count(Verdict::OnlyInBase), cmp.count(Verdict::OnlyInNew));
    let mut parts = Vec::new();
    if ids > 0 {
        parts.push(format!(
            "{ids} case(s) have the same columns under another case_id: the case identity changed (settings outside the CSV columns, \
             or a new attnbench), so their times are shown but not judged; refresh the baseline"
        ));
    }
    if renamed > 0 {
        parts.push(format!("{renamed} case(s) were renamed (one of backend, strategy, mask, parameters); shown, not judged"));
    }
    if removed > 0 {
        parts.push(format!("{removed} case(s) of the base run are not in the new run (removed from the suite, or not run)"));
    }
    if new > 0 {
        parts.push(format!("{new} case(s) are new (no base to compare with)"));
    }
    (!parts.is_empty()).then(|| parts.join("; ") + ".")
}

/// One line per verdict for the terminal.
pub fn text_summary(cmp: &Comparison) -> String {
    let mut o = String::new();
    for c in cmp.cases.iter().filter(|c| matches!(c.verdict, Verdict::Regression | Verdict::Improvement)) {
        o.push_str(&format!(
            "{:<12} {} {} ({} → {} ms)\n",
            c.verdict.name(),
            pct(c.ratio.unwrap_or(1.0)),
            c.label,
            fmt_sig(c.base_ms.unwrap_or(0.0)),
            fmt_sig(c.new_ms.unwrap_or(0.0))
        ));
    }
    for v in [Verdict::Throttled, Verdict::IdChanged, Verdict::Renamed, Verdict::OnlyInBase, Verdict::OnlyInNew] {
        let cs: Vec<&CaseComparison> = cmp.cases.iter().filter(|c| c.verdict == v).collect();
        for c in cs.iter().take(5) {
            let ratio = c.ratio.map(|r| format!(" (time {} , not judged)", pct(r))).unwrap_or_default();
            let note = if c.note.is_empty() { String::new() } else { format!(": {}", c.note) };
            o.push_str(&format!("{:<12} {}{note}{ratio}\n", v.name(), c.label));
        }
        if cs.len() > 5 {
            o.push_str(&format!("{:<12} … and {} more\n", v.name(), cs.len() - 5));
        }
    }
    if let Some(why) = explain_one_run_cases(cmp) {
        o.push_str(&why);
        o.push('\n');
    }
    let counts: Vec<String> = Verdict::ALL.iter().filter(|v| cmp.count(**v) > 0 || v.is_core()).map(|v| format!("{} {}", cmp.count(*v), v.name())).collect();
    o.push_str(&format!("{} cases: {} (threshold {} %, noise = p20–p80 overlap)\n", cmp.cases.len(), counts.join(", "), cmp.threshold_pct));
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;
    use crate::report::export::markdown::markdown;

    fn row(s: usize, ms: f64, spread: f64) -> Row {
        let c = Case::kernel("sdpa", "causal", Default::default(), s, HeadLayout { q: 8, kv: 8 }, 64, DType::Bf16, Pass::Fwd, DeviceKind::Cuda);
        let mut r = Row::for_case("r", &c, "gpu");
        r.status = Status::Ok;
        r.ms_median = Some(ms);
        r.ms_p20 = Some(ms * (1.0 - spread));
        r.ms_p80 = Some(ms * (1.0 + spread));
        r
    }

    #[test]
    fn verdicts() {
        let base = vec![row(1024, 1.0, 0.01), row(2048, 1.0, 0.10), row(4096, 1.0, 0.01), row(8192, 1.0, 0.01), row(16384, 1.0, 0.01)];
        let mut broken = row(8192, 1.0, 0.01);
        broken.fail(Status::Oom, "oom");
        let new = vec![row(1024, 1.1, 0.01), row(2048, 1.1, 0.10), row(4096, 0.8, 0.01), broken, row(32768, 1.0, 0.01)];
        let c = compare(&base, &new, 5.0);
        let v: Vec<Verdict> = c.cases.iter().map(|c| c.verdict).collect();
        assert_eq!(v, vec![Verdict::Regression, Verdict::Unchanged, Verdict::Improvement, Verdict::NotOk, Verdict::OnlyInBase, Verdict::OnlyInNew]);
        assert_eq!(c.newly_broken(), 1);
        // 3 % slower with tight noise stays under a 5 % threshold.
        let c = compare(&[row(1024, 1.0, 0.001)], &[row(1024, 1.03, 0.001)], 5.0);
        assert_eq!(c.cases[0].verdict, Verdict::Unchanged);
        let md = markdown(&compare(&base, &new, 5.0));
        assert!(md.contains("**1 regression(s)**"), "{md}");
    }

    /// Issue 33: a slowdown on a throttled GPU is reported as throttling, not as a regression.
    #[test]
    fn a_regression_on_a_throttled_run_is_reported_as_throttling() {
        let mut hot = row(1024, 1.2, 0.01);
        hot.throttle = "sw_power_cap".into();
        let c = compare(&[row(1024, 1.0, 0.01)], &[hot], 5.0);
        assert_eq!(c.cases[0].verdict, Verdict::Throttled);
        assert_eq!((c.regressions(), c.checked()), (0, 1), "compared, not a regression");
        assert!(c.cases[0].note.contains("new run throttled (sw_power_cap)"), "{}", c.cases[0].note);
        let text = text_summary(&c);
        assert!(text.contains("throttled") && text.contains("1 throttled"), "{text}");
        // Throttled but within the noise: nothing to explain.
        let mut calm = row(1024, 1.0, 0.01);
        calm.throttle = "hw_thermal".into();
        assert_eq!(compare(&[row(1024, 1.0, 0.01)], &[calm], 5.0).cases[0].verdict, Verdict::Unchanged);
    }
}
