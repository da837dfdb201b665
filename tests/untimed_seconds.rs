//! Issue 26: every kernel row records its untimed seconds (setup, gate, measurement), and
//! `run --dry-run` estimates from them (`--overheads-from` an earlier run's results.csv).

use std::path::Path;
use std::process::Command;

use attnbench::results::csvio::read_rows;
use attnbench::results::Status;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attnbench"));
    c.env("CI", "1");
    c
}

#[test]
fn rows_record_untimed_seconds_and_the_dry_run_estimates_from_them() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suites/good/small.toml");
    let out = std::env::temp_dir().join(format!("attnbench-untimed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = bin().arg("run").arg(&suite).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("untimed setup") && stdout.contains("gate"), "{stdout}");
    let rows = read_rows(&out.join("results.csv")).unwrap();
    assert_eq!(rows.len(), 12);
    for r in &rows {
        assert_eq!(r.status, Status::Ok, "{r:?}");
        let (setup, gate, measure) = (r.setup_s.unwrap(), r.gate_s.unwrap(), r.measure_s.unwrap());
        assert!(setup > 0.0 && gate > 0.0, "{r:?}");
        // The measurement's wall time holds at least its timed repeats.
        assert!(measure >= r.ms_median.unwrap() * r.repeats.unwrap() as f64 / 1e3 * 0.5, "{r:?}");
    }
    let header = std::fs::read_to_string(out.join("results.csv")).unwrap();
    // Appended after the columns before them (issue 29's `strategy_params` comes after).
    assert!(header.lines().next().unwrap().contains(",tf32,setup_s,gate_s,measure_s"), "the new columns are appended at the end");

    let plain = bin().args(["run", "--dry-run"]).arg(&suite).output().unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout).lines().last().unwrap().to_string();
    assert!(plain.contains("+ setup") && plain.contains("+ gate") && plain.contains("defaults"), "{plain}");
    let fitted = bin().args(["run", "--dry-run", "--overheads-from"]).arg(out.join("results.csv")).arg(&suite).output().unwrap();
    assert!(fitted.status.success());
    let fitted = String::from_utf8_lossy(&fitted.stdout).lines().last().unwrap().to_string();
    assert!(fitted.contains("fitted to 12 rows"), "{fitted}");
    // A missing file is bad input: one line, exit 2.
    let bad = bin().args(["run", "--dry-run", "--overheads-from", "/nonexistent/results.csv"]).arg(&suite).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&bad.stderr).trim().lines().count(), 1, "{}", String::from_utf8_lossy(&bad.stderr));
    let _ = std::fs::remove_dir_all(&out);
}

/// The plan is shape-major: every backend, mask and pass of one input shape in a row (so the worker
/// draws the inputs once per shape), lengths ascending (so an OOM is seen before larger lengths).
#[test]
fn the_plan_runs_every_backend_of_a_shape_together() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/quick-cpu.toml");
    let o = bin().args(["run", "--dry-run"]).arg(&suite).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let lens: Vec<usize> = text.lines().filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("S=")).and_then(|s| s.parse().ok())).collect();
    assert_eq!(lens.len(), 52, "{text}");
    assert!(lens.windows(2).all(|w| w[0] <= w[1]), "lengths go back down: {lens:?}");
    let at_2048: std::collections::BTreeSet<&str> = text.lines().filter(|l| l.contains(" S=2048 ")).filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert!(at_2048.len() >= 5, "every backend runs at 2048: {at_2048:?}");
}
