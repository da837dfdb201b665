//! External kernels through the real binary: the numpy reference worker and the torch adapters give
//! `ok` rows judged like the built-ins (same FLOPs, same gate); deliberately broken workers give `wrong`,
//! `error`, `timeout`, `unsupported` rows and the sweep finishes; the seed contract holds bitwise.
//!
//! The Python interpreter is the CPU-only torch 2.11 + numpy that `launch/setup` builds
//! (`$ATTNBENCH_CACHE/python-torch-2.11.0-cpu/bin/python`), or `$ATTNBENCH_TEST_PYTHON`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::python;

fn faulty() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/faulty.py").to_string()
}

/// The code block of docs/EXTERNAL-KERNELS.md that starts with `start`, written to `dir/name`.
fn doc_example(dir: &Path, start: &str, name: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/EXTERNAL-KERNELS.md")).unwrap();
    let at = doc.find(start).unwrap_or_else(|| panic!("docs/EXTERNAL-KERNELS.md has no block starting {start:?}"));
    let body = &doc[at..];
    let body = &body[body.find('\n').unwrap() + 1..body.find("\n```\n").unwrap() + 1];
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attnbench"));
    c.env("ATTNBENCH_PYTHON", python()).env_remove("CI");
    c
}

fn text(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Rows of a results.csv as column → value maps.
fn rows(csv: &Path) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_path(csv).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    r.records().map(|rec| header.iter().cloned().zip(rec.unwrap().iter().map(str::to_string)).collect()).collect()
}

/// Writes `suite` into a fresh folder and runs it; returns (folder, exit output, rows).
fn run_suite(suite: &str) -> (tempfile::TempDir, Output, Vec<HashMap<String, String>>) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("suite.toml");
    std::fs::write(&file, suite).unwrap();
    let out = tmp.path().join("run");
    let o = bin().arg("run").arg(&file).arg("--out").arg(&out).output().unwrap();
    let r = if out.join("results.csv").exists() { rows(&out.join("results.csv")) } else { vec![] };
    (tmp, o, r)
}

#[test]
fn numpy_worker_gives_ok_rows_with_the_flops_of_the_builtins() {
    let suite = format!(
        r#"
name = "ext-numpy"
[measure]
warmup = 1
repeats = 3
timeout_s = 120
[[grid]]
patterns = ["causal", "causal_document", "share_question", {{ name = "sliding_window", params = {{ window_left = 16, window_right = 8 }} }}, "per_head"]
seqlens = [128]
heads = ["4:2"]
head_dims = [16]
dtypes = ["bf16"]
passes = ["fwd", "fwdbwd"]
backends = ["ext:numpy-ref", "naive"]
[external]
python = "{}"
"#,
        python()
    );
    let (_tmp, o, rows) = run_suite(&suite);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(rows.len(), 20, "{}", text(&o));
    let key = |r: &HashMap<String, String>| (r["mask"].clone(), r["mask_params"].clone(), r["pass"].clone());
    let naive: HashMap<_, _> = rows.iter().filter(|r| r["backend"] == "naive").map(|r| (key(r), r)).collect();
    for r in rows.iter().filter(|r| r["backend"] == "ext:numpy-ref") {
        assert_eq!(r["status"], "ok", "{r:?}");
        let b = naive[&key(r)];
        assert_eq!(b["status"], "ok");
        // FLOPs and area come from the mask for every backend: bitwise the same numbers.
        assert_eq!((&r["flops"], &r["mask_area"]), (&b["flops"], &b["mask_area"]), "{r:?}");
        assert_eq!(r["timing_mode"], "cpu-perf-counter");
        assert_eq!(r["repeats"], "3");
        // tracemalloc is no allocator figure: reported in the note, the memory columns stay empty.
        assert!(r["peak_mem_bytes"].is_empty() && r["mem_source"].is_empty(), "{r:?}");
        assert!(r["note"].contains("by the worker's tracemalloc"), "{}", r["note"]);
        assert!(r["max_abs_err"].parse::<f64>().unwrap() < 1e-6, "{r:?}");
        assert!(r["note"].contains("inputs read from attnbench's tensor file") && r["note"].contains("lse checked"), "{}", r["note"]);
        let ms: f64 = r["ms_median"].parse().unwrap();
        assert!(ms > 0.0 && (r["tflops"].parse::<f64>().unwrap() - r["flops"].parse::<f64>().unwrap() / (ms * 1e-3) / 1e12).abs() < 1e-9);
        if r["pass"] == "fwdbwd" {
            assert!(r["note"].contains("checked out, dq, dk, dv on all rows"), "{}", r["note"]);
        }
    }
}

#[test]
fn broken_workers_give_wrong_error_timeout_rows_and_the_sweep_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("sleeper.pid");
    let modes = ["wrong", "wronglse", "crash", "sleep", "garbage", "badshape", "unsupported", "oldproto"];
    let mut workers: Vec<String> = modes.iter().map(|m| format!("{m} = [\"{}\", \"{}\", \"{m}\"]", python(), faulty())).collect();
    let mut backends: Vec<String> = modes.iter().map(|m| format!("\"ext:{m}\"")).collect();
    // The documentation's worker in plain sh: the protocol needs no Python.
    workers.push(format!("shell = [\"sh\", \"{}\"]", doc_example(tmp.path(), "```sh\n#!/bin/sh", "none.sh")));
    backends.push("\"ext:shell\"".into());
    let suite = format!(
        r#"
name = "ext-faults"
[measure]
warmup = 0
repeats = 2
timeout_s = 5
[[grid]]
patterns = ["causal_document"]
seqlens = [64]
heads = ["2:1"]
head_dims = [8]
dtypes = ["fp32"]
passes = ["fwd"]
backends = [{}, "ext:numpy-ref"]
[external]
python = "{}"
[external.workers]
{}
"#,
        backends.join(", "),
        python(),
        workers.join("\n")
    );
    let file = tmp.path().join("suite.toml");
    std::fs::write(&file, suite).unwrap();
    let out = tmp.path().join("run");
    let o = bin().arg("run").arg(&file).arg("--out").arg(&out).env("ATTNBENCH_TEST_PIDFILE", &pidfile).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows = rows(&out.join("results.csv"));
    assert_eq!(rows.len(), modes.len() + 2, "every case has a row: {}", text(&o));
    let row = |b: &str| rows.iter().find(|r| r["backend"] == format!("ext:{b}")).unwrap_or_else(|| panic!("no row for {b}"));
    let expect = [
        ("wrong", "wrong", "output differs"),
        ("wronglse", "wrong", "LSE differs"),
        ("crash", "error", "signal 6"),
        ("sleep", "timeout", "timeout"),
        ("garbage", "error", "protocol violation"),
        ("badshape", "error", "shape"),
        ("unsupported", "unsupported", "refuses every case"),
        ("oldproto", "error", "protocol 0"),
        ("shell", "unsupported", "takes nothing"),
        ("numpy-ref", "ok", ""),
    ];
    for (b, status, err) in expect {
        let r = row(b);
        assert_eq!(r["status"], status, "{b}: {r:?}");
        assert!(r["error"].contains(err), "{b}: {}", r["error"]);
        if status != "ok" {
            // The invariant: no timing for a failed case.
            assert!(r["ms_median"].is_empty() && r["tflops"].is_empty(), "{b}: {r:?}");
        }
    }
    assert!(row("wrong")["max_abs_err"].parse::<f64>().unwrap() > 0.09);
    // The sleeping worker was killed with its case, not left behind.
    let pid = std::fs::read_to_string(&pidfile).expect("the sleeping worker ran").trim().to_string();
    assert!(wait_gone(&pid), "the sleeping worker {pid} outlived its timeout");
}

/// Whether process `pid` is gone (or a zombie) within 5 s.
fn wait_gone(pid: &str) -> bool {
    let gone = || std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.split_whitespace().nth(2) == Some("Z")).unwrap_or(true);
    let t = std::time::Instant::now();
    while !gone() && t.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    gone()
}

#[test]
fn killing_attnbench_leaves_no_worker_behind() {
    // What the suite runner does to a hung `attnbench worker`: SIGKILL. Its external worker must die too.
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("sleeper.pid");
    let mut child = bin()
        .args(["kernel", "--backend", "ext:sleep", "--mask", "causal", "--seqlen", "32", "--heads", "1:1", "--head-dim", "8", "--dtype", "fp32"])
        .arg("--worker")
        .arg(format!("{} {} sleep", python(), faulty()))
        .env("ATTNBENCH_TEST_PIDFILE", &pidfile)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().is_empty() {
        assert!(t.elapsed().as_secs() < 60, "the sleeping worker never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
    assert!(wait_gone(&pid), "worker {pid} survived the attnbench process that started it");
}

#[test]
fn adaptive_mode_asks_the_worker_for_more_repeats() {
    let suite = format!(
        r#"
[measure]
warmup = 0
repeats = 2
target_spread = 0.000001
max_repeats = 7
budget_s = 60
[[grid]]
patterns = ["causal"]
seqlens = [32]
heads = ["1:1"]
head_dims = [8]
dtypes = ["fp32"]
backends = ["ext:numpy-ref"]
[external]
python = "{}"
"#,
        python()
    );
    let (_tmp, o, rows) = run_suite(&suite);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // CPU times never agree to 1e-6, so attnbench keeps asking (one repeat at a time after the first
    // 2, the one repeat policy) until max_repeats.
    assert_eq!(rows[0]["repeats"], "7", "{:?}", rows[0]);
}

/// Host time scripted repeat by repeat, for the in-process side of the comparison below.
struct Script {
    ends: std::cell::Cell<usize>,
    durations: Vec<f64>,
    now: std::cell::Cell<f64>,
}

impl attnbench::measure::Timeline for Script {
    fn sync(&self) -> Result<(), attnbench::measure::MeasureError> {
        Ok(())
    }
    fn now_ms(&self) -> f64 {
        // Every second reading is a repeat's stop: the clock has advanced by that repeat's duration.
        let n = self.ends.get();
        self.ends.set(n + 1);
        if n % 2 == 1 {
            self.now.set(self.now.get() + self.durations[(n / 2) % self.durations.len()]);
        }
        self.now.get()
    }
    fn name(&self) -> &'static str {
        "script"
    }
}

/// An external kernel's repeats follow the one repeat policy (`measure::repeats`), not a loop of its
/// own: a worker reporting scripted times is asked for `repeats` (with the warm-up), then for one more
/// at a time, and its row has exactly as many repeats — and the same statistics — as an in-process
/// clock reporting the same times. (The external backend's own loop asked for batches of `repeats`:
/// 6 repeats here.)
#[test]
fn an_external_worker_gets_the_same_repeat_policy_as_an_in_process_kernel() {
    use attnbench::measure::{run_repeats, HostClock, MeasureError, MeasureSettings};
    let script = [1.0, 2.0, 1.5, 1.5];
    let times: Vec<String> = script.iter().map(|t| t.to_string()).collect();
    let settings = MeasureSettings { warmup: 1, repeats: 3, target_spread: Some(0.3), max_repeats: 20, budget_s: 60.0, ..Default::default() };
    let tl = Script { ends: Default::default(), durations: script.to_vec(), now: Default::default() };
    let here = run_repeats::<MeasureError>(&mut HostClock::new(&tl), &settings, &mut || Ok(())).unwrap();
    assert_eq!(here.times_ms.len(), 4, "{:?}", here.times_ms);
    let worker = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/scripted_times.py");
    let suite = format!(
        r#"
[measure]
warmup = 1
repeats = 3
target_spread = 0.3
max_repeats = 20
budget_s = 60
[[grid]]
patterns = ["causal"]
seqlens = [32]
heads = ["1:1"]
head_dims = [8]
dtypes = ["fp32"]
backends = ["ext:scripted"]
[external]
python = "{py}"
[external.workers]
scripted = ["{py}", "{worker}", "{times}"]
"#,
        py = python(),
        times = times.join(",")
    );
    let (_tmp, o, rows) = run_suite(&suite);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = &rows[0];
    assert_eq!(r["status"], "ok", "{r:?}");
    assert_eq!(r["repeats"], here.times_ms.len().to_string(), "{r:?}");
    assert_eq!(r["timing_mode"], "scripted-3", "the first request asks for `repeats`: {r:?}");
    for (col, want) in [("ms_median", here.summary.median), ("ms_p20", here.summary.p20), ("ms_p80", here.summary.p80)] {
        let got: f64 = r[col].parse().unwrap();
        assert!((got - want).abs() < 1e-12, "{col}: {got} vs {want}");
    }
}

#[test]
fn seed_contract_torch_worker_inputs_are_bitwise_attnbenchs() {
    let o = bin()
        .args(["env", "--json", "--check-seed", "ext:torch-sdpa", "ext:badseed"])
        .env("ATTNBENCH_WORKER_BADSEED", format!("{} {} badseed", python(), faulty()))
        .output()
        .unwrap();
    // The deliberately wrong worker makes the check fail (exit 1); the real one passes.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let seeds = v["seed_contract"].as_array().unwrap();
    let of = |b: &str| seeds.iter().find(|s| s["backend"] == b).unwrap()["result"].clone();
    let good = of("ext:torch-sdpa");
    assert_eq!(good["outcome"], "checked", "{good}");
    let checks = good["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "cpu × (bf16, fp32) on this machine: {good}");
    assert!(checks.iter().all(|c| c["equal"] == true && c["device"] == "cpu"), "{good}");
    let bad = of("ext:badseed");
    let checks = bad["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["equal"] == false && c["detail"].as_str().unwrap().starts_with("q: ")), "{bad}");
    assert!(v["external"]["user_workers"].to_string().contains("ext:badseed"));
}

#[test]
fn torch_workers_draw_inputs_from_the_seed_and_pass_the_gate() {
    // The seed contract end to end: the documentation's example worker (torch SDPA) and flex build
    // q, k, v themselves; the gate compares
    // their outputs with attnbench's reference on attnbench's own inputs, so any difference in the
    // inputs would be a `wrong` row. Flex maps LongCA-bench masks (two key intervals per row for the
    // shared question) and per-head masks; on the CPU it runs uncompiled and has no backward.
    let docs = tempfile::tempdir().unwrap();
    let suite = format!(
        r#"
[measure]
warmup = 0
repeats = 1
timeout_s = 240
[[grid]]
patterns = ["causal_document"]
seqlens = [128]
heads = ["4:2"]
head_dims = [16]
dtypes = ["bf16"]
passes = ["fwdbwd"]
backends = ["ext:dense"]
[[grid]]
patterns = [{{ name = "share_question", params = {{ doc_lens = [64, 96, 32, 64] }} }}]
seqlens = [256]
heads = ["4:2"]
head_dims = [16]
dtypes = ["fp32"]
passes = ["fwd", "bwd"]
backends = ["ext:flex"]
[[grid]]
patterns = ["per_head"]
seqlens = [256]
heads = ["4:2"]
head_dims = [16]
dtypes = ["fp32"]
passes = ["fwd"]
backends = ["ext:flex"]
[[grid]]
patterns = ["causal_document", {{ name = "sliding_window", params = {{ window_left = 16, window_right = 8 }} }}, {{ name = "share_question", params = {{ doc_lens = [64, 96, 32, 64] }} }}]
seqlens = [256]
heads = ["4:2"]
head_dims = [16]
dtypes = ["fp32"]
passes = ["fwdbwd"]
backends = ["ext:fakefa"]
[external]
python = "{}"
workers = {{ dense = ["{}", "{}"], fakefa = ["{}", "{}"] }}
"#,
        python(),
        python(),
        doc_example(docs.path(), "```python\n#!/usr/bin/env python3", "dense_sdpa.py"),
        python(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/fake_fa.py"),
    );
    let (_tmp, o, rows) = run_suite(&suite);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(rows.len(), 7, "{}", text(&o));
    // The fa2-varlen adapter's packing (slices as sequences, or one band with a window), LSE placement
    // and gradient scatter, over a torch stand-in for the kernel: a shared prefix is not one varlen call.
    let fa = |m: &str| rows.iter().find(|r| r["backend"] == "ext:fakefa" && r["mask"] == m).unwrap();
    assert!(fa("causal_document")["note"].contains("sequences, causal") && fa("causal_document")["note"].contains("checked out, dq, dk, dv"));
    assert!(
        fa("sliding_window")["note"].contains("1 sequences, window (16, 8)") && fa("sliding_window")["note"].contains("lse checked"),
        "{}",
        fa("sliding_window")["note"]
    );
    assert_eq!(fa("share_question")["status"], "unsupported");
    assert!(fa("share_question")["error"].contains("shared prefix"));
    for r in rows.iter().filter(|r| r["backend"] != "ext:fakefa") {
        let want = if r["pass"] == "bwd" { "unsupported" } else { "ok" };
        assert_eq!(r["status"], want, "{r:?}");
        if want == "ok" {
            assert!(r["note"].contains("inputs drawn by the worker from the seed"), "{}", r["note"]);
        }
    }
    for r in rows.iter().filter(|r| r["backend"] == "ext:fakefa" && r["mask"] != "share_question") {
        assert_eq!(r["status"], "ok", "{r:?}");
    }
    let flex_sq = rows.iter().find(|r| r["backend"] == "ext:flex" && r["mask"] == "share_question" && r["pass"] == "fwd").unwrap();
    assert!(flex_sq["note"].contains("2 interval(s)/row") && flex_sq["note"].contains("lse checked"), "{}", flex_sq["note"]);
    assert!(rows.iter().any(|r| r["backend"] == "ext:flex" && r["error"].contains("no backward on the CPU")));
}

#[test]
fn external_names_are_checked_up_front() {
    let o = bin().args(["kernel", "--backend", "ext:no-such", "--mask", "causal", "--seqlen", "64"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ATTNBENCH_WORKER_NO_SUCH") && err.lines().count() == 1, "{err}");
    let o = bin().args(["kernel", "--backend", "naive", "--mask", "causal", "--seqlen", "64", "--worker", "x"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let (_tmp, o, _) = run_suite("[[grid]]\npatterns = [\"causal\"]\nseqlens = [64]\nbackends = [\"ext:no-such\"]\n");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("suite.toml:4") && err.contains("[external.workers] no-such"), "{err}");
    let (_tmp, o, _) = run_suite("[[grid]]\npatterns = [\"causal\"]\nseqlens = [64]\nbackends = [\"naive\"]\n[external]\npyton = \"x\"\n");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn list_and_env_say_which_adapters_are_available_and_why_not() {
    let o = bin().args(["list", "external", "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let item = |n: &str| v["external"].as_array().unwrap().iter().find(|i| i["name"] == n).unwrap()["summary"].as_str().unwrap().to_string();
    assert!(item("ext:numpy-ref").contains("available (numpy"), "{}", item("ext:numpy-ref"));
    assert!(item("ext:flex").contains("available (torch 2.11.0"), "{}", item("ext:flex"));
    assert!(item("ext:fa2-varlen").contains("unavailable here: flash_attn not installed"), "{}", item("ext:fa2-varlen"));
    assert!(item("ext:magi-ffa").contains("magi_attention not installed"));
    // No interpreter at all: every adapter is unavailable, and the reason says how to fix it.
    let o = bin().args(["env", "--json"]).env("ATTNBENCH_PYTHON", "/nonexistent/python").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = v["external"]["adapters"].as_array().unwrap();
    assert_eq!(a.len(), 7);
    assert!(a.iter().all(|s| s["available"] == false && s["reason"].as_str().unwrap().contains("ATTNBENCH_PYTHON")), "{a:?}");
}

#[test]
fn adapters_call_each_released_library_interface_correctly() {
    // tests/python/test_adapters.py: stand-ins of every released signature and return convention of
    // flex_flash_attn_func (MagiAttention v1.0.0-v1.1.x), flash_attn_varlen_func (2.8.x and the three FA3
    // conventions), flex_attention (torch < 2.9 and this one), flashmask_attention (first and later
    // Paddle releases); the worker's clock against a recording torch.cuda (no host synchronisation
    // between repeats); kernel limits answered `unsupported`.
    let o = Command::new(python())
        .args(["-m", "unittest", "discover", "-s", "tests/python"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("OK"), "{}", text(&o));
}

#[test]
fn without_attnbench_python_the_interpreter_launch_setup_installed_is_used() {
    // python() is `$ATTNBENCH_CACHE/python-torch-2.11.0-cpu/bin/python`, where launch/setup puts it.
    let cache = Path::new(&python()).ancestors().nth(3).unwrap().to_path_buf();
    let o = Command::new(env!("CARGO_BIN_EXE_attnbench")).args(["env"]).env_remove("ATTNBENCH_PYTHON").env("ATTNBENCH_CACHE", &cache).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("external    {} (Python 3.", python())), "{out}");
    assert!(out.contains("interpreter from the CPU torch interpreter launch/setup installed; choose another with ATTNBENCH_PYTHON"), "{out}");
    assert!(out.contains("ext:torch-sdpa   available (torch 2.11.0"), "{out}");
    // ATTNBENCH_PYTHON still wins, and env says so.
    let o = Command::new(env!("CARGO_BIN_EXE_attnbench"))
        .args(["env"])
        .env("ATTNBENCH_PYTHON", "/nonexistent/python")
        .env("ATTNBENCH_CACHE", &cache)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("interpreter from ATTNBENCH_PYTHON"), "{}", text(&o));
}

/// One clock for everyone, on a GPU: torch SDPA timed as the built-in `sdpa-efficient` backend and as
/// the `ext:torch-sdpa` worker (the same dense bool mask; torch's dispatcher gives a bool-masked bf16
/// call to the memory-efficient kernel) must agree within 3 % in median time. Needs CUDA and a Python
/// torch with CUDA (`ATTNBENCH_TEST_PYTHON`).
#[test]
#[ignore]
fn cuda_sdpa_builtin_and_external_worker_agree_within_3_percent() {
    let suite = format!(
        r#"
[measure]
warmup = 10
repeats = 50
timeout_s = 600
[[grid]]
patterns = ["causal_document"]
seqlens = [8192]
heads = ["16:16"]
head_dims = [128]
dtypes = ["bf16"]
passes = ["fwd"]
device = "cuda"
backends = ["sdpa-efficient", "ext:torch-sdpa"]
[external]
python = "{}"
"#,
        python()
    );
    let (_tmp, o, rows) = run_suite(&suite);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let ms = |b: &str| -> f64 {
        let r = rows.iter().find(|r| r["backend"] == b).unwrap_or_else(|| panic!("no {b} row: {}", text(&o)));
        assert_eq!(r["status"], "ok", "{r:?}");
        assert_eq!(r["timing_mode"], "cuda-event-l2flush", "{r:?}");
        r["ms_median"].parse().unwrap()
    };
    let (builtin, ext) = (ms("sdpa-efficient"), ms("ext:torch-sdpa"));
    let diff = (ext - builtin).abs() / builtin;
    eprintln!("sdpa-efficient {builtin:.4} ms, ext:torch-sdpa {ext:.4} ms, difference {:.2} %", diff * 100.0);
    assert!(diff <= 0.03, "built-in {builtin} ms vs worker {ext} ms: {:.2} % apart", diff * 100.0);
}
