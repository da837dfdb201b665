//! `compare --json-gab` and `--bmf` checked against what their consumers accept (issue 20, item 3).
//!
//! - github-action-benchmark (benchmark-action/github-action-benchmark v1.22.0, `src/extract.ts`):
//!   for `tool: customSmallerIsBetter` / `customBiggerIsBetter` it parses the file with the zod schema
//!   `z.array(z.object({ name: z.coerce.string(), value: z.coerce.number(), range:
//!   z.coerce.string().optional(), unit: z.coerce.string(), extra: z.coerce.string().optional() }))`
//!   and throws "No benchmark result was found" on an empty array; `src/write.ts` matches a result
//!   to its history by `name` and takes the direction from the tool alone. Coercion would silently
//!   turn `null` into 0 or a number into a string, so [`check_gab`] wants the exact JSON types.
//! - Bencher Metric Format (bencher.dev/docs/reference/bencher-metric-format, and the `json` adapter
//!   of bencherdev/bencher `lib/bencher_adapter`): an object of benchmark name (1–1024 characters) →
//!   measure (slug or name, at most 64 characters) → `{"value": number, "lower_value"?: number,
//!   "upper_value"?: number}`. The built-in measures have fixed units: `latency` nanoseconds,
//!   `throughput` operations per second; the direction comes from the threshold (upper boundary for
//!   latency, lower for throughput), so a number in another unit is a silent error there.
//!
//! The checkers below restate those rules; each has a test that feeds it a wrong export and must see
//! it refused (a wrong unit, a wrong direction, a coerced value, a duplicate name).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnbench"))
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(p: &str) -> PathBuf {
    root().join("tests/fixtures").join(p)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tool {
    CustomSmallerIsBetter,
    CustomBiggerIsBetter,
}

/// Units whose smaller value is better (times) and bigger (throughputs), as we write them.
const SMALLER_UNITS: [&str; 4] = ["ns", "us", "ms", "s"];
const BIGGER_UNITS: [&str; 2] = ["TFLOPS", "TFLOPS/GPU"];

/// github-action-benchmark's custom-tool parse, strict: the types the zod schema would otherwise
/// coerce, a non-empty array, unique names, and units that point the way `tool` reads them.
fn check_gab(v: &Value, tool: Tool) -> Result<usize, String> {
    let arr = v.as_array().ok_or("not a JSON array")?;
    if arr.is_empty() {
        return Err("No benchmark result was found (github-action-benchmark throws on an empty array)".into());
    }
    let mut names = HashSet::new();
    for (i, e) in arr.iter().enumerate() {
        let o = e.as_object().ok_or(format!("[{i}] is not an object"))?;
        let name = o.get("name").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(format!("[{i}].name is not a non-empty string"))?;
        if !names.insert(name.to_string()) {
            return Err(format!("[{i}].name `{name}` repeats: write.ts matches history by name"));
        }
        let value = o.get("value").and_then(Value::as_f64).ok_or(format!("[{i}].value is not a number (zod would coerce it)"))?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!("[{i}].value {value}"));
        }
        let unit = o.get("unit").and_then(Value::as_str).ok_or(format!("[{i}].unit is not a string"))?;
        for k in ["range", "extra"] {
            if let Some(x) = o.get(k) {
                x.as_str().ok_or(format!("[{i}].{k} is not a string (zod would coerce it)"))?;
            }
        }
        let ok = match tool {
            Tool::CustomSmallerIsBetter => SMALLER_UNITS.contains(&unit),
            Tool::CustomBiggerIsBetter => BIGGER_UNITS.contains(&unit),
        };
        if !ok {
            return Err(format!("[{i}] unit `{unit}` under {tool:?}: the alert would fire in the wrong direction"));
        }
    }
    Ok(arr.len())
}

/// The rows a benchmark name stands for: `row_label` of the CSV, the key both exports use.
fn rows_by_label(csv: &Path) -> HashMap<String, attnbench::results::Row> {
    attnbench::results::read_rows(csv).unwrap().into_iter().map(|r| (attnbench::report::data::row_label(&r), r)).collect()
}

/// BMF as Bencher's json adapter takes it, plus the units of its built-in measures checked against
/// the rows the numbers came from (median ms × 10⁶ = latency ns; TFLOPS × 10¹² = FLOP/s).
fn check_bmf(v: &Value, rows: &HashMap<String, attnbench::results::Row>) -> Result<usize, String> {
    let top = v.as_object().ok_or("not a JSON object")?;
    if top.is_empty() {
        return Err("no benchmarks".into());
    }
    for (name, measures) in top {
        if name.is_empty() || name.chars().count() > 1024 {
            return Err(format!("benchmark name of {} characters", name.chars().count()));
        }
        let row = rows.get(name).ok_or(format!("`{name}` names no row of the run"))?;
        for (measure, m) in measures.as_object().ok_or(format!("`{name}` is not an object of measures"))? {
            if measure.is_empty() || measure.chars().count() > 64 {
                return Err(format!("measure `{measure}`"));
            }
            let m = m.as_object().ok_or(format!("`{name}`.`{measure}` is not an object"))?;
            let num = |k: &str| m.get(k).map(|x| x.as_f64().ok_or(format!("`{name}`.`{measure}`.{k} is not a number")));
            let value = num("value").ok_or(format!("`{name}`.`{measure}` has no value"))??;
            let lower = num("lower_value").transpose()?;
            let upper = num("upper_value").transpose()?;
            if lower.is_some_and(|l| l > value) || upper.is_some_and(|u| u < value) {
                return Err(format!("`{name}`.`{measure}`: bounds {lower:?}..{upper:?} do not hold {value}"));
            }
            let expect = match measure.as_str() {
                "latency" => row.ms_median.map(|ms| ms * 1e6),
                "throughput" => row.tflops_per_gpu.or(row.tflops).map(|t| t * 1e12),
                other => return Err(format!("measure `{other}` is not one attnbench writes")),
            };
            match expect {
                Some(e) if ((value - e) / e).abs() < 1e-9 => {}
                e => return Err(format!("`{name}`.`{measure}` = {value}, but the row says {e:?} in Bencher's unit for `{measure}` (wrong unit?)")),
            }
        }
    }
    Ok(top.len())
}

/// The exports of `compare BASE NEW`: (gab ms, gab tflops, bmf).
fn exports(dir: &Path, base: &Path, new: &Path) -> (Value, Value, Value) {
    let (ms, tf, bmf) = (dir.join("gab-ms.json"), dir.join("gab-tflops.json"), dir.join("bmf.json"));
    let out = bin().arg("compare").args([base, new]).arg("--json-gab").arg(&ms).arg("--bmf").arg(&bmf).output().unwrap();
    assert!(out.status.code() == Some(0) || out.status.code() == Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin().arg("compare").args([base, new]).arg("--json-gab").arg(&tf).args(["--gab-metric", "tflops"]).output().unwrap();
    assert!(out.status.code() == Some(0) || out.status.code() == Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |p: &Path| serde_json::from_str::<Value>(&std::fs::read_to_string(p).unwrap()).unwrap();
    (read(&ms), read(&tf), read(&bmf))
}

#[test]
fn our_exports_have_the_shape_their_parsers_accept() {
    let dir = tempfile::tempdir().unwrap();
    // A GPU run with kernel and context-parallel rows (TFLOPS/GPU) and failed cases.
    let csv = fixture("h100_run/results.csv");
    let (ms, tf, bmf) = exports(dir.path(), &csv, &csv);
    let ok_rows = attnbench::results::read_rows(&csv).unwrap().iter().filter(|r| r.status == attnbench::results::Status::Ok).count();
    assert_eq!(check_gab(&ms, Tool::CustomSmallerIsBetter), Ok(ok_rows));
    assert_eq!(check_gab(&tf, Tool::CustomBiggerIsBetter), Ok(ok_rows));
    assert_eq!(check_bmf(&bmf, &rows_by_label(&csv)), Ok(ok_rows));
    // `range` is github-action-benchmark's free-text spread: ours is ± half the p20–p80 range in ms.
    assert!(ms[0]["range"].as_str().unwrap().starts_with("± "), "{}", ms[0]);
    assert!(ms[0]["extra"].as_str().unwrap().contains("case_id"), "{}", ms[0]);
    // A CP row is per GPU in both exports.
    assert!(tf.as_array().unwrap().iter().any(|e| e["unit"] == "TFLOPS/GPU"));
}

#[test]
fn wrong_units_and_directions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture("h100_run/results.csv");
    let (ms, tf, bmf) = exports(dir.path(), &csv, &csv);
    let rows = rows_by_label(&csv);
    // Direction: milliseconds read as bigger-is-better, TFLOPS as smaller-is-better.
    assert!(check_gab(&ms, Tool::CustomBiggerIsBetter).unwrap_err().contains("wrong direction"));
    assert!(check_gab(&tf, Tool::CustomSmallerIsBetter).unwrap_err().contains("wrong direction"));
    // Unit: latency in ms instead of Bencher's ns; throughput in TFLOPS instead of ops/s.
    let mut wrong = bmf.clone();
    for m in wrong.as_object_mut().unwrap().values_mut() {
        for k in ["value", "lower_value", "upper_value"] {
            if let Some(v) = m.pointer_mut(&format!("/latency/{k}")) {
                *v = json!(v.as_f64().unwrap() / 1e6);
            }
        }
    }
    assert!(check_bmf(&wrong, &rows).is_err_and(|e| e.contains("wrong unit")));
    let mut wrong = bmf.clone();
    for m in wrong.as_object_mut().unwrap().values_mut() {
        if let Some(v) = m.pointer_mut("/throughput/value") {
            *v = json!(v.as_f64().unwrap() / 1e12);
        }
    }
    assert!(check_bmf(&wrong, &rows).is_err_and(|e| e.contains("wrong unit")));
    // What zod would coerce without a word, and github-action-benchmark's own refusals.
    let mut coerced = ms.clone();
    coerced[0]["value"] = Value::Null;
    assert!(check_gab(&coerced, Tool::CustomSmallerIsBetter).is_err());
    let mut dup = ms.clone();
    dup[1]["name"] = dup[0]["name"].clone();
    assert!(check_gab(&dup, Tool::CustomSmallerIsBetter).unwrap_err().contains("repeats"));
    assert!(check_gab(&json!([]), Tool::CustomSmallerIsBetter).unwrap_err().contains("No benchmark result"));
    // Bounds that do not hold the value.
    let mut bounds = bmf.clone();
    let first = bounds.as_object_mut().unwrap().values_mut().next().unwrap();
    first["latency"]["lower_value"] = json!(first["latency"]["value"].as_f64().unwrap() * 2.0);
    assert!(check_bmf(&bounds, &rows).is_err());
}

#[test]
fn the_workflows_read_gab_in_the_direction_compare_wrote_it() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("ci")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let metrics: HashSet<&str> = text
            .match_indices("--gab-metric ")
            .map(|(i, m)| text[i + m.len()..].split_whitespace().next().unwrap().trim_matches(|c: char| !c.is_alphanumeric()))
            .collect();
        let tools: HashSet<&str> = text
            .match_indices("tool: ")
            .map(|(i, m)| text[i + m.len()..].split_whitespace().next().unwrap().trim_matches(|c: char| !c.is_alphanumeric()))
            .collect();
        assert_eq!(metrics.len(), 1, "{}: one --gab-metric for all compare calls: {metrics:?}", path.display());
        assert_eq!(tools.len(), 1, "{}: {tools:?}", path.display());
        let expected = match *metrics.iter().next().unwrap() {
            "ms" => "customSmallerIsBetter",
            "tflops" => "customBiggerIsBetter",
            m => panic!("{}: --gab-metric {m}", path.display()),
        };
        assert_eq!(*tools.iter().next().unwrap(), expected, "{}", path.display());
        // The suite it runs exists and the gate it keeps is attnbench compare's exit status.
        let suite = text.split("SUITE: ").nth(1).unwrap().split_whitespace().next().unwrap();
        assert!(root().join(suite).is_file(), "{}: {suite}", path.display());
        assert!(text.contains("fail-on-alert: false") && text.contains("steps.compare.outputs.rc != '0'"), "{}", path.display());
        checked += 1;
    }
    assert_eq!(checked, 2, "the GPU and the CPU workflow");
}
