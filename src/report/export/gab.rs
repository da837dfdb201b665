//! github-action-benchmark's custom JSON: an array of `{"name", "unit", "value", "range", "extra"}`,
//! read with `tool: customSmallerIsBetter` (metric `ms`) or `tool: customBiggerIsBetter` (`tflops`).

use serde_json::{json, Value};

use super::{names, Exporter, GabMetric};
use crate::report::compare::Comparison;
use crate::report::data::{fmt_sig, Metric, ReportError};

pub struct GithubActionBenchmark {
    pub metric: GabMetric,
}

impl Exporter for GithubActionBenchmark {
    fn serialize(&self, cmp: &Comparison) -> Result<Vec<u8>, ReportError> {
        let mut out = Vec::new();
        for (name, c) in names(cmp) {
            let r = &c.row;
            let (unit, value, range) = match self.metric {
                GabMetric::Ms => {
                    let Some(v) = Metric::Ms.value(r) else { continue };
                    let range = match (r.ms_p20, r.ms_p80) {
                        (Some(a), Some(b)) => Some(format!("± {}", fmt_sig((b - a) / 2.0))),
                        _ => None,
                    };
                    ("ms", v, range)
                }
                GabMetric::Tflops => {
                    let Some(v) = Metric::Tflops.value(r) else { continue };
                    (if r.world_size > 1 { "TFLOPS/GPU" } else { "TFLOPS" }, v, None)
                }
            };
            let mut extra = format!(
                "case_id {}; p20 {} ms; p80 {} ms; verdict {}",
                c.case_id,
                r.ms_p20.map(fmt_sig).unwrap_or_default(),
                r.ms_p80.map(fmt_sig).unwrap_or_default(),
                c.verdict.name()
            );
            if let Some(ratio) = c.ratio {
                extra.push_str(&format!("; new/base time {ratio:.3}"));
            }
            let mut e = json!({ "name": name, "unit": unit, "value": value, "extra": extra });
            if let Some(range) = range {
                e["range"] = Value::String(range);
            }
            out.push(e);
        }
        Ok(serde_json::to_vec_pretty(&out)?)
    }
}
