//! CAB's efficiency length reproduced from CAB's own raw data, through the real binary.
//!
//! Source: Shark-NLP/CAB (commit 0e49696), `scripts/efficiency_length/cost.xlsx` (vanilla attention
//! and ABC, 256–8K, time in ms and memory in MiB), transcribed into tests/fixtures/cab_abc/results.csv
//! (see SOURCE.md there). CAB's README publishes ABC's efficiency length as 1,877 tokens (running
//! time) and 70 (memory usage).

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnbench"))
}

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(p)
}

/// The CSV blocks of `table --format csv` output: (title, header, rows).
fn csv_blocks(text: &str) -> Vec<(String, Vec<String>, Vec<Vec<String>>)> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let records: Vec<Vec<String>> = rdr.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect();
    let mut out = Vec::new();
    for block in records.split(|r| r.len() == 1 && r[0].is_empty()) {
        out.push((block[0][0].clone(), block[1].clone(), block[2..].to_vec()));
    }
    out
}

#[test]
fn cab_published_efficiency_lengths_for_abc() {
    let out = bin().args(["table", "--cab", "--format", "csv", "--baseline", "vanilla"]).arg(fixture("cab_abc/results.csv")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let blocks = csv_blocks(&text);
    let (title, header, rows) = blocks.iter().find(|b| b.0.contains("CAB efficiency length")).expect("a CAB block");
    assert!(title.contains("vs `vanilla`"), "{title}");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("{name} in {header:?}"));
    let abc = rows.iter().find(|r| r[0] == "abc").unwrap();
    // Numbers, as CAB prints them (rounded to the token).
    assert_eq!(abc[col("time efficiency length (tokens)")].parse::<u64>().unwrap(), 1877, "{text}");
    assert_eq!(abc[col("memory efficiency length (tokens)")].parse::<u64>().unwrap(), 70, "{text}");
    let vanilla = rows.iter().find(|r| r[0] == "vanilla").unwrap();
    assert_eq!(vanilla[col("time efficiency length (tokens)")], "(baseline)");
    // The power-law exponents are a separate, separately named table, not the efficiency length.
    let (_, exp_header, exp_rows) = blocks.iter().find(|b| b.0.contains("scaling exponents")).expect("an exponents block");
    assert_eq!((exp_header[2].as_str(), exp_header[5].as_str()), ("time b", "mem b"));
    let mem_b: f64 = exp_rows.iter().find(|r| r[0] == "vanilla").unwrap()[5].parse().unwrap();
    assert!(mem_b > 1.8 && mem_b < 2.0, "vanilla's memory grows about quadratically: S^{mem_b}");
}

#[test]
fn the_baseline_must_be_a_backend_of_the_rows() {
    // The default baseline (naive) is not in CAB's data: one line naming the flag and what is there.
    let out = bin().args(["table", "--cab"]).arg(fixture("cab_abc/results.csv")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--baseline naive") && err.contains("vanilla, abc"), "{err}");
}

#[test]
fn plot_cab_names_the_efficiency_length() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        bin().args(["plot", "--cab", "--no-masks", "--baseline", "vanilla"]).arg(fixture("cab_abc/results.csv")).arg("--out").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("plots.json")).unwrap()).unwrap();
    let fig = json.as_array().unwrap().iter().find(|f| f["name"] == "cab-full-fwd").unwrap();
    let labels: Vec<&str> = fig["legend"].as_array().unwrap().iter().map(|l| l[0].as_str().unwrap()).collect();
    assert!(labels.contains(&"abc time: CAB linear fit, efficiency length 1877"), "{labels:?}");
    assert!(labels.contains(&"abc memory: CAB linear fit, efficiency length 70"), "{labels:?}");
    assert!(labels.contains(&"vanilla time: CAB quadratic fit (baseline)"), "{labels:?}");
}
