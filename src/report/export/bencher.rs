//! Bencher Metric Format (BMF) JSON: `{"<benchmark>": {"<measure>": {"value", "lower_value",
//! "upper_value"}}}`, with Bencher's two built-in measures in their own units: `latency` in
//! nanoseconds (median, p20 and p80 as the bounds) and `throughput` in operations per second, an
//! operation being one FLOP (TFLOPS × 10¹², per GPU for CP). Bencher decides the direction by the
//! threshold, not the JSON: an upper boundary for latency, a lower one for throughput.

use serde_json::{json, Map, Value};

use super::{names, Exporter};
use crate::report::compare::Comparison;
use crate::report::data::{Metric, ReportError};

pub struct Bencher;

impl Exporter for Bencher {
    fn serialize(&self, cmp: &Comparison) -> Result<Vec<u8>, ReportError> {
        let mut top = Map::new();
        for (name, c) in names(cmp) {
            let r = &c.row;
            let mut measures = Map::new();
            if let Some(m) = Metric::Ms.value(r) {
                let ns = |x: f64| x * 1e6;
                measures
                    .insert("latency".into(), json!({ "value": ns(m), "lower_value": ns(r.ms_p20.unwrap_or(m)), "upper_value": ns(r.ms_p80.unwrap_or(m)) }));
            }
            if let Some(t) = Metric::Tflops.value(r) {
                // Bencher's built-in `throughput` is operations per second: one FLOP is the operation.
                measures.insert("throughput".into(), json!({ "value": t * 1e12 }));
            }
            if !measures.is_empty() {
                top.insert(name, Value::Object(measures));
            }
        }
        Ok(serde_json::to_vec_pretty(&Value::Object(top))?)
    }
}
