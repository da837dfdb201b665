//! `attnbench kernel` and `attnbench env` through the real binary.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnbench"))
}

fn json_of(args: &[&str]) -> (i32, serde_json::Value) {
    let out = bin().args(args).output().unwrap();
    let code = out.status.code().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text} / {}", String::from_utf8_lossy(&out.stderr)));
    (code, v)
}

#[test]
fn sdpa_flash_causal_4k_cpu_json_tflops_is_flops_over_median() {
    let (code, v) = json_of(&[
        "kernel",
        "--backend",
        "sdpa-flash",
        "--mask",
        "causal",
        "--seqlen",
        "4096",
        "--heads",
        "8:2",
        "--head-dim",
        "64",
        "--dtype",
        "fp32",
        "--device",
        "cpu",
        "--repeats",
        "3",
        "--warmup",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["status"], "ok");
    let flops = v["flops"].as_f64().unwrap();
    // Causal area S(S+1)/2 per head × 8 heads × 4 × D.
    assert_eq!(flops, 4.0 * (4096.0 * 4097.0 / 2.0) * 8.0 * 64.0);
    let ms = v["ms_median"].as_f64().unwrap();
    let tf = v["tflops"].as_f64().unwrap();
    assert!((tf - flops / (ms * 1e-3) / 1e12).abs() <= 1e-9 * tf);
    assert_eq!(v["tflops_per_gpu"].as_f64().unwrap(), tf);
    assert_eq!(v["timing_mode"], "cpu-instant");
    assert_eq!(v["repeats"], 3);
    assert!(v["max_abs_err"].as_f64().unwrap() < 1e-3);
    assert!(v["peak_mem_bytes"].as_u64().unwrap() > 0);
    for col in attnbench::results::Row::header() {
        assert!(v.get(&col).is_some(), "missing column {col}");
    }
}

#[test]
fn unsupported_is_a_row_not_an_error() {
    let (code, v) = json_of(&[
        "kernel",
        "--backend",
        "sdpa-efficient",
        "--mask",
        "causal",
        "--seqlen",
        "128",
        "--heads",
        "2:2",
        "--head-dim",
        "16",
        "--dtype",
        "fp32",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["status"], "unsupported");
    assert!(v["tflops"].is_null() && v["ms_median"].is_null());
    assert!(!v["error"].as_str().unwrap().is_empty());
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let cases: &[&[&str]] = &[
        &["kernel", "--backend", "nope", "--mask", "causal", "--seqlen", "64"],
        &["kernel", "--backend", "naive", "--mask", "nope", "--seqlen", "64"],
        &["kernel", "--backend", "naive", "--mask", "causal", "--seqlen", "64", "--set", "x=1"],
        &["kernel", "--backend", "naive", "--mask", "causal", "--seqlen", "64", "--heads", "6:4"],
        &["kernel", "--backend", "naive", "--mask", "causal", "--seqlen", "64", "--dtype", "int8"],
    ];
    for args in cases {
        let out = bin().args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn cuda_without_gpu_is_a_clear_exit_2() {
    let (_, env) = json_of(&["env", "--json"]);
    if env["cuda_available"].as_bool().unwrap() {
        return; // a GPU machine: nothing to check here
    }
    let out = bin().args(["kernel", "--backend", "sdpa-flash", "--mask", "causal", "--seqlen", "64", "--device", "cuda"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CUDA"));
}

#[test]
fn human_table_and_env() {
    let out = bin()
        .args([
            "kernel",
            "--backend",
            "sliced",
            "--mask",
            "causal",
            "--seqlen",
            "128",
            "--heads",
            "4:2",
            "--head-dim",
            "16",
            "--dtype",
            "fp32",
            "--pass",
            "fwdbwd",
            "--repeats",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("status        ok") && s.contains("TFLOPS"), "{s}");
    let (code, env) = json_of(&["env", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(env["torch"], "2.11.0");
    assert!(env["cpu_cores"].as_u64().unwrap() >= 1);
}

/// Peak memory of one forward, measured by the counting CPU allocator (`mem_source = cpu-allocator`).
fn cpu_peak(backend: &str, seqlen: usize) -> f64 {
    let s = seqlen.to_string();
    let (code, v) = json_of(&[
        "kernel",
        "--backend",
        backend,
        "--mask",
        "full",
        "--seqlen",
        &s,
        "--heads",
        "4:2",
        "--head-dim",
        "64",
        "--dtype",
        "fp32",
        "--device",
        "cpu",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--no-check",
        "--json",
    ]);
    assert_eq!((code, v["status"].as_str()), (0, Some("ok")), "{v}");
    assert_eq!(v["mem_source"], "cpu-allocator", "{v}");
    v["peak_mem_bytes"].as_f64().unwrap()
}

/// CPU memory is measured, not estimated: naive materialises S×S scores (×4 per doubling), torch's
/// fused CPU flash kernel holds O(S) (a constant plus a part linear in S).
#[test]
fn cpu_memory_comes_from_the_allocator_and_scales_like_the_kernel() {
    let naive: Vec<f64> = [1024, 2048, 4096].iter().map(|&n| cpu_peak("naive", n)).collect();
    for w in naive.windows(2) {
        let r = w[1] / w[0];
        assert!((3.5..4.5).contains(&r), "naive peak should grow ~4x per doubling: {naive:?}");
    }
    let flash: Vec<f64> = [1024, 2048, 4096].iter().map(|&n| cpu_peak("sdpa-flash", n)).collect();
    // Linear (a + b·S): the increment from 2K to 4K is twice the one from 1K to 2K.
    let r = (flash[2] - flash[1]) / (flash[1] - flash[0]);
    assert!((1.8..2.2).contains(&r), "sdpa-flash peak should grow linearly: {flash:?}");
    assert!(flash[2] < naive[2] / 50.0, "{flash:?} vs {naive:?}");
}
