//! `attnbench run` through the real binary: malformed suites, failure rows, resume after kill -9,
//! determinism, dry run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attnbench"));
    c.env("ATTNBENCH_FAULTS", "1").env("CI", "1");
    c
}

fn suite(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suites").join(p)
}

fn rows(csv: &Path) -> Vec<csv::StringRecord> {
    let mut r = csv::Reader::from_path(csv).unwrap();
    r.records().map(|x| x.unwrap()).collect()
}

fn col(csv: &Path, name: &str) -> usize {
    let mut r = csv::Reader::from_path(csv).unwrap();
    r.headers().unwrap().iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"))
}

#[test]
fn malformed_suites_give_one_line_exit_2_and_touch_nothing() {
    let expected: &[(&str, &str)] = &[
        ("bad_toml.toml", "toml"),
        ("unknown_top_key.toml", "unknown field `colour`"),
        ("unknown_grid_key.toml", "unknown field `seqlen`"),
        ("wrong_type.toml", "invalid type"),
        ("empty_axis.toml", "axis is empty"),
        ("heads_64_7.toml", "multiple of KV heads"),
        ("seqlen_zero.toml", "must be ≥ 1"),
        ("negative_window.toml", "window_left"),
        ("unknown_backend.toml", "unknown backend `flashy`"),
        ("unknown_pattern.toml", "unknown mask pattern `zigzag_mask`"),
        ("unknown_param.toml", "no parameter `window`"),
        ("bad_dtype.toml", "unknown dtype `fp8`"),
        ("bad_pass.toml", "unknown pass `forward`"),
        ("bad_device.toml", "unknown device `tpu`"),
        ("no_grid.toml", "missing field `grid`"),
        ("measure_unknown_key.toml", "unknown field `repetitions`"),
        ("repeats_zero.toml", "measure.repeats"),
        ("doc_lens_sum.toml", "doc_lens"),
        ("repeats_above_max_repeats.toml", "measure.max_repeats: must be ≥ repeats (300), got 50"),
        ("cp_without_strategies.toml", "strategies"),
        ("exclude_unknown_key.toml", "unknown field `bakend`"),
        ("negative_head_dim.toml", "head_dims"),
        ("spread_not_fraction.toml", "target_spread"),
        ("density_out_of_range.toml", "density"),
    ];
    let dir = suite("bad");
    let count = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(count, expected.len(), "every file in tests/suites/bad has an expectation");
    let tmp = tempfile::tempdir().unwrap();
    for (file, fragment) in expected {
        let out = tmp.path().join(file.replace(".toml", ""));
        let o = bin().arg("run").arg(dir.join(file)).arg("--out").arg(&out).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{file}: exit code, stderr: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{file}: one line, got: {stderr}");
        assert!(stderr.contains(file), "{file}: names the file: {stderr}");
        assert!(stderr.contains(fragment), "{file}: expected `{fragment}` in: {stderr}");
        assert!(!out.exists(), "{file}: results directory must not be created");
        // Line numbers: every message but the whole-file ones carries file:LINE with LINE ≥ 1.
        if !["no_grid.toml"].contains(file) {
            let after = stderr.split(file).nth(1).unwrap_or("");
            let line: usize = after.trim_start_matches(':').split(':').next().unwrap_or("0").parse().unwrap_or(0);
            assert!(line >= 1, "{file}: expected a line number in: {stderr}");
        }
    }
}

#[test]
fn failing_cases_become_rows_and_the_sweep_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = bin().arg("run").arg(suite("good/failures.toml")).arg("--out").arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "stderr: {stderr}");
    let csv = out.join("results.csv");
    let rows = rows(&csv);
    assert_eq!(rows.len(), 6, "one row per case");
    let (b, s, t, e, seq) = (col(&csv, "backend"), col(&csv, "status"), col(&csv, "tflops"), col(&csv, "error"), col(&csv, "seqlen"));
    let status_of = |backend: &str, seqlen: &str| -> (String, String, String) {
        let r = rows.iter().find(|r| &r[b] == backend && &r[seq] == seqlen).unwrap_or_else(|| panic!("row for {backend} {seqlen}"));
        (r[s].to_string(), r[t].to_string(), r[e].to_string())
    };
    assert_eq!(status_of("naive", "128").0, "ok");
    assert!(!status_of("naive", "128").1.is_empty());
    // Issue 33: an ok row says where its power figures came from; on a machine without RAPL (this
    // one, CI) that is `unavailable` with empty power columns — and the sweep went on. Failed rows
    // leave every power column empty.
    let (ps, pw) = (col(&csv, "power_source"), col(&csv, "avg_power_w"));
    let ok = rows.iter().find(|r| &r[b] == "naive" && &r[seq] == "128").unwrap();
    assert!(["unavailable", "rapl"].contains(&&ok[ps]), "{}", &ok[ps]);
    if &ok[ps] == "unavailable" {
        assert_eq!(&ok[pw], "");
    }
    for r in rows.iter().filter(|r| &r[s] != "ok") {
        for c in ["avg_power_w", "energy_j", "tflops_per_watt", "sm_clock_mhz", "throttle", "power_source"] {
            assert_eq!(&r[col(&csv, c)], "", "{c} of a {} row", &r[s]);
        }
    }
    let (st, tf, err) = status_of("sdpa-efficient", "128");
    assert_eq!((st.as_str(), tf.as_str()), ("unsupported", ""), "{err}");
    let (st, tf, _) = status_of("fault-wrong", "128");
    assert_eq!((st.as_str(), tf.as_str()), ("wrong", ""));
    let r = rows.iter().find(|r| &r[b] == "fault-wrong").unwrap();
    assert!(r[col(&csv, "max_abs_err")].parse::<f64>().unwrap() > 1e-3);
    let (st, tf, err) = status_of("fault-crash", "128");
    assert_eq!((st.as_str(), tf.as_str()), ("error", ""));
    assert!(err.contains("signal"), "{err}");
    let (st, _, err) = status_of("naive", "2097152");
    assert_eq!(st, "oom", "{err}");
    let (st, _, err) = status_of("naive", "4194304");
    assert_eq!(st, "oom");
    assert!(err.contains("skipped"), "{err}");
    // --fail-on-wrong turns the wrong row into exit 1.
    let out2 = tmp.path().join("run2");
    let o = bin()
        .arg("run")
        .arg(suite("good/failures.toml"))
        .arg("--out")
        .arg(&out2)
        .arg("--fail-on-wrong")
        .arg("--filter")
        .arg("backend~fault-wrong")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn hanging_case_times_out_and_the_next_case_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = bin().arg("run").arg(suite("good/hang.toml")).arg("--out").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = out.join("results.csv");
    let rows = rows(&csv);
    let (b, s) = (col(&csv, "backend"), col(&csv, "status"));
    let st: Vec<(String, String)> = rows.iter().map(|r| (r[b].to_string(), r[s].to_string())).collect();
    assert!(st.contains(&("fault-hang".into(), "timeout".into())), "{st:?}");
    assert!(st.contains(&("naive".into(), "ok".into())), "{st:?}");
}

#[test]
fn kill_9_then_resume_runs_every_case_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let csv = out.join("results.csv");
    let mut child = bin().arg("run").arg(suite("good/small.toml")).arg("--out").arg(&out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill as soon as at least two rows are on disk (header + 2 lines), mid-sweep.
    let start = std::time::Instant::now();
    loop {
        let n = std::fs::read_to_string(&csv).map(|t| t.lines().count()).unwrap_or(0);
        if n >= 3 || start.elapsed().as_secs() > 60 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = rows(&csv).len();
    assert!(before < 12, "killed before the end ({before} rows)");
    // Simulate a torn write too: append half a line.
    std::fs::OpenOptions::new().append(true).open(&csv).unwrap().write_all(b"small-xxx,deadbeef,kern").unwrap();
    let o = bin().arg("run").arg(suite("good/small.toml")).arg("--out").arg(&out).arg("--resume").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let after = rows(&csv);
    assert_eq!(after.len(), 12);
    let id = col(&csv, "case_id");
    let mut ids: Vec<&str> = after.iter().map(|r| &r[id]).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "every case exactly once");
    // Resuming a finished run does nothing.
    let o = bin().arg("run").arg(suite("good/small.toml")).arg("--out").arg(&out).arg("--resume").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(rows(&csv).len(), 12);
    // Without --resume an existing run directory is refused (exit 2), untouched.
    let o = bin().arg("run").arg(suite("good/small.toml")).arg("--out").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(rows(&csv).len(), 12);
}

use std::io::Write;

#[test]
fn same_suite_twice_gives_identical_rows_except_timing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for i in 0..2 {
        let out = tmp.path().join(format!("run{i}"));
        let o = bin().arg("run").arg(suite("good/small.toml")).arg("--out").arg(&out).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        runs.push(out.join("results.csv"));
    }
    let varying = [
        "run_id",
        "ms_median",
        "ms_p20",
        "ms_p80",
        "cv",
        "tflops",
        "tflops_per_gpu",
        "mfu",
        "peak_mem_bytes",
        "repeats",
        // issue 33: measured power (RAPL machines), like the times.
        "avg_power_w",
        "energy_j",
        "tflops_per_watt",
        "sm_clock_mhz",
        "throttle",
        // issue 26: untimed seconds (host wall clock).
        "setup_s",
        "gate_s",
        "measure_s",
    ];
    let header: Vec<String> = csv::Reader::from_path(&runs[0]).unwrap().headers().unwrap().iter().map(String::from).collect();
    let (a, b) = (rows(&runs[0]), rows(&runs[1]));
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(&b) {
        for (i, h) in header.iter().enumerate() {
            if !varying.contains(&h.as_str()) {
                assert_eq!(ra[i], rb[i], "column {h} differs");
            }
        }
    }
}

#[test]
fn dry_run_prints_plan_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    let o = bin().arg("run").arg(suite("good/failures.toml")).arg("--dry-run").arg("--out").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("6 cases"), "{stdout}");
    assert!(stdout.contains("unsupported"), "{stdout}");
    assert!(stdout.contains("estimated wall time"), "{stdout}");
    assert!(!out.exists());
}

#[test]
fn filter_expression_selects_cases_and_bad_filter_is_exit_2() {
    let o = bin().args(["run", "--dry-run", "--filter", "seqlen<=64,pass=fwd"]).arg(suite("good/small.toml")).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 cases"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = bin().args(["run", "--dry-run", "--filter", "colour=red"]).arg(suite("good/small.toml")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn an_oom_from_an_earlier_run_skips_larger_lengths_after_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = bin().arg("run").arg(suite("good/failures.toml")).arg("--out").arg(&out).args(["--filter", "seqlen=2097152"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bin().arg("run").arg(suite("good/failures.toml")).arg("--out").arg(&out).arg("--resume").args(["--filter", "seqlen>=2097152"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = out.join("results.csv");
    let (s, e, seq) = (col(&csv, "status"), col(&csv, "error"), col(&csv, "seqlen"));
    let big = rows(&csv).into_iter().find(|r| &r[seq] == "4194304").expect("row for the larger length");
    assert_eq!(&big[s], "oom");
    assert!(big[e].contains("skipped"), "{}", &big[e]);
}
