//! Bencher Metric Format (BMF) JSON: `{"<benchmark>": {"<measure>": {"value", "lower_value",
//! "upper_value"}}}`.

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
                measures.insert("throughput".into(), json!({ "value": t }));
            }
            if !measures.is_empty() {
                top.insert(name, Value::Object(measures));
            }
        }
        Ok(serde_json::to_vec_pretty(&Value::Object(top))?)
    }
}
