//! The Markdown summary of a comparison, for a pull-request comment or a CI job summary.

use super::Exporter;
use crate::report::compare::{pct, CaseComparison, Comparison, Verdict};
use crate::report::data::{fmt_sig, ReportError};
use crate::results::Status;

pub struct MarkdownSummary;

impl Exporter for MarkdownSummary {
    fn serialize(&self, cmp: &Comparison) -> Result<Vec<u8>, ReportError> {
        Ok(markdown(cmp).into_bytes())
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Markdown summary for a PR comment: counts, then regressions and improvements (largest first),
/// then newly broken cases; every case in a collapsed `<details>` block.
pub fn markdown(cmp: &Comparison) -> String {
    let mut o = String::from("## attnbench comparison\n\n");
    let verdict_line = if cmp.regressions() > 0 {
        format!("**{} regression(s)** beyond {} % and noise.", cmp.regressions(), cmp.threshold_pct)
    } else {
        format!("No regression beyond {} % and noise.", cmp.threshold_pct)
    };
    o.push_str(&verdict_line);
    o.push_str("\n\n| verdict | cases |\n|:--|--:|\n");
    for v in Verdict::ALL.into_iter().filter(|v| v.is_core() || cmp.count(*v) > 0) {
        o.push_str(&format!("| {} | {} |\n", v.name(), cmp.count(v)));
    }
    o.push_str(&format!(
        "\nA change counts when the median moved by more than {} % **and** the p20–p80 intervals of the two runs do not overlap.\n",
        cmp.threshold_pct
    ));
    let table = |title: &str, mut cs: Vec<&CaseComparison>, desc: bool| -> String {
        if cs.is_empty() {
            return String::new();
        }
        cs.sort_by(|a, b| {
            let (x, y) = (a.ratio.unwrap_or(1.0), b.ratio.unwrap_or(1.0));
            if desc {
                y.total_cmp(&x)
            } else {
                x.total_cmp(&y)
            }
        });
        let mut s = format!("\n### {title}\n\n| case | base ms | new ms | change |\n|:--|--:|--:|--:|\n");
        for c in cs {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                md_cell(&c.label),
                c.base_ms.map(fmt_sig).unwrap_or_default(),
                c.new_ms.map(fmt_sig).unwrap_or_default(),
                c.ratio.map(pct).unwrap_or_default()
            ));
        }
        s
    };
    o.push_str(&table("Regressions", cmp.cases.iter().filter(|c| c.verdict == Verdict::Regression).collect(), true));
    o.push_str(&table("Improvements", cmp.cases.iter().filter(|c| c.verdict == Verdict::Improvement).collect(), false));
    // Issue 33: changes measured on a throttled GPU, listed apart from regressions and improvements.
    o.push_str(&table("Throttled while timed (not judged as a code change)", cmp.cases.iter().filter(|c| c.verdict == Verdict::Throttled).collect(), true));
    let broken: Vec<&CaseComparison> =
        cmp.cases.iter().filter(|c| c.base_status == Some(Status::Ok) && matches!(c.new_status, Some(s) if s != Status::Ok)).collect();
    if !broken.is_empty() {
        o.push_str("\n### Ok in base, failing in new\n\n| case | new status |\n|:--|:--|\n");
        for c in broken {
            o.push_str(&format!("| {} | {} |\n", md_cell(&c.label), c.new_status.map(|s| s.name()).unwrap_or("")));
        }
    }
    let one_run: Vec<&CaseComparison> =
        cmp.cases.iter().filter(|c| matches!(c.verdict, Verdict::IdChanged | Verdict::Renamed | Verdict::OnlyInBase | Verdict::OnlyInNew)).collect();
    if let Some(why) = crate::report::compare::explain_one_run_cases(cmp) {
        o.push_str(&format!("\n### Cases not matched by case_id\n\n{why}\n\n| case | what | detail | time change (not judged) |\n|:--|:--|:--|--:|\n"));
        for c in one_run {
            o.push_str(&format!("| {} | {} | {} | {} |\n", md_cell(&c.label), c.verdict.name(), md_cell(&c.note), c.ratio.map(pct).unwrap_or_default()));
        }
    }
    o.push_str("\n<details><summary>All cases</summary>\n\n| case | verdict | base | new | change |\n|:--|:--|--:|--:|--:|\n");
    for c in &cmp.cases {
        let side = |ms: Option<f64>, st: Option<Status>| match (ms, st) {
            (_, None) => "–".to_string(),
            (Some(m), Some(Status::Ok)) => format!("{} ms", fmt_sig(m)),
            (_, Some(s)) => s.name().to_string(),
        };
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            md_cell(&c.label),
            c.verdict.name(),
            side(c.base_ms, c.base_status),
            side(c.new_ms, c.new_status),
            c.ratio.map(pct).unwrap_or_default()
        ));
    }
    o.push_str("\n</details>\n");
    o
}
