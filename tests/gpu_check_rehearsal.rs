//! The GPU check's rehearsal (issue 26): `launch/gpu-check --rehearse` runs the very script the GPU
//! machine runs — same steps, same order, same files — on the CPU at tiny sizes, so a bug in the script
//! costs a CI run instead of device minutes. Every step must finish inside its budget (exit 0 in
//! `steps.jsonl`) and leave a non-empty file that parses; the one-screen summary must come out.
//!
//! Needs the CPU Python torch of `launch/setup` (`$ATTNBENCH_CACHE/python-torch-2.11.0-cpu/bin/python`,
//! or `$ATTNBENCH_TEST_PYTHON`), as tests/external.rs; no GPU, no mpirun, no /opt/torch.

use std::path::Path;
use std::process::Command;

mod common;
use common::python;

/// The step names, budgets and files of the script, in order (the header's budget table).
const STEPS: [(&str, &str); 11] = [
    ("unit", "cuda-unit-tests.txt"),
    ("env", "env.json"),
    ("gate", "gate/results.csv"),
    ("fidelity", "fidelity.jsonl"),
    ("comm", "comm.json"),
    ("modes", "timing-modes.jsonl"),
    ("simulate", "simulated.csv"),
    ("energy", "energy.json"),
    ("seed", "external-env.json"),
    ("sweep", "sweep/results.csv"),
    ("flex", "flex.jsonl"),
];

/// Parses `path` by its extension; returns how many records it holds.
fn parse(path: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    let name = path.display().to_string();
    if name.ends_with(".jsonl") {
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            serde_json::from_str::<serde_json::Value>(line).map_err(|e| format!("{name} line {}: {e}", i + 1))?;
        }
        Ok(text.lines().filter(|l| !l.trim().is_empty()).count())
    } else if name.ends_with(".json") {
        serde_json::from_str::<serde_json::Value>(&text).map_err(|e| format!("{name}: {e}"))?;
        Ok(1)
    } else if name.ends_with(".csv") {
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let n = r.records().map(|rec| rec.map_err(|e| format!("{name}: {e}"))).collect::<Result<Vec<_>, _>>()?.len();
        if n == 0 {
            return Err(format!("{name} has a header and no rows"));
        }
        Ok(n)
    } else {
        Ok(text.lines().count())
    }
}

#[test]
fn the_gpu_check_script_runs_every_step_on_the_cpu() {
    let out = std::env::temp_dir().join(format!("attnbench-rehearsal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/launch/gpu-check"))
        .arg("--rehearse")
        .env("ATTNBENCH_BIN", env!("CARGO_BIN_EXE_attnbench"))
        // The unit-test step lists the `cuda_` tests of a libtest binary: this one stands in for the
        // library's (listing, not running, in the rehearsal).
        .env("ATTNBENCH_TEST_BIN", std::env::current_exe().unwrap())
        .env("TORCH_PYTHON", python())
        .env("OUT", &out)
        // As on the GPU: everything packed into gpu-check.tgz (the device tool returns at most 8 files).
        .env("GPU_CHECK_BUNDLE", "1")
        .env_remove("GPU_CHECK_UNDER_TIMEOUT")
        .env_remove("CI")
        .output()
        .expect("launch/gpu-check runs");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let log = std::fs::read_to_string(out.join("log.txt")).unwrap_or_default();
    assert!(
        o.status.success(),
        "gpu-check --rehearse failed: {stdout}\n{}\nlog tail: {}",
        String::from_utf8_lossy(&o.stderr),
        &log[log.len().saturating_sub(3000)..]
    );
    let back: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(back.len() <= 8 && back.contains(&"gpu-check.tgz".to_string()), "what the device tool would bring back: {back:?}");
    let untar = Command::new("tar").arg("xzf").arg(out.join("gpu-check.tgz")).arg("-C").arg(&out).status().unwrap();
    assert!(untar.success(), "gpu-check.tgz does not unpack");
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(out.join("steps.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(names, STEPS.iter().map(|s| s.0).collect::<Vec<_>>(), "the steps ran in another order or one is missing");
    // The sweep's budget is what the steps before it left of 470 s (less flex's 60), between 125 and
    // 160 s: counted at its floor, the budgets must fit 470 s, under the script's own 500 s timeout.
    let budget_of = |name: &str| steps.iter().find(|s| s["step"] == name).unwrap()["budget_s"].as_i64().unwrap();
    let sweep_budget = budget_of("sweep");
    assert!((125..=160).contains(&sweep_budget), "sweep budget {sweep_budget} s outside 125-160 s");
    let budget: i64 = steps.iter().map(|s| s["budget_s"].as_i64().unwrap()).sum::<i64>() - sweep_budget + 125;
    assert!(budget <= 470, "step budgets (the sweep's at its floor) add up to {budget} s > 470 s");
    for (s, (name, file)) in steps.iter().zip(STEPS) {
        assert_eq!(s["rc"], 0, "step {name} failed in the rehearsal (log tail: {})", &log[log.len().saturating_sub(3000)..]);
        assert_eq!(s["file"], file);
        let n = parse(&out.join(file)).unwrap_or_else(|e| panic!("step {name}: {e}"));
        assert!(n > 0, "step {name}: {file} holds nothing");
    }
    // The steps that time something produced numbers, not only failure records.
    let sweep = std::fs::read_to_string(out.join("sweep/results.csv")).unwrap();
    assert!(sweep.lines().any(|l| l.contains(",ok,")), "no ok row in the sweep");
    let fid = std::fs::read_to_string(out.join("fidelity.jsonl")).unwrap();
    assert!(fid.contains("\"ratio\""), "no fidelity ratio: {fid}");
    let energy: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("energy.json")).unwrap()).unwrap();
    // Nothing invented: either what `env --json` reported, or "not available" (issue 33 fills it).
    match energy["status"].as_str() {
        Some("not available") => {}
        Some("reported") => assert!(energy["fields"].as_object().is_some_and(|f| !f.is_empty()), "{energy}"),
        _ => panic!("energy.json: {energy}"),
    }
    for line in ["== gpu-check summary", "gate:", "sweep TFLOPS", "fidelity attnbench/pytorch:", "comm (local", "ext:flex"] {
        assert!(stdout.contains(line), "the summary lacks `{line}`:\n{stdout}");
    }
    assert!(!stdout.contains("FAILED") && !stdout.contains("missing or empty"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}
