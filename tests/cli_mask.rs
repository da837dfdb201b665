//! `attnbench mask area|show` and `attnbench list` through the real binary.

use std::process::{Command, Output};

fn attnbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attnbench")).args(args).output().expect("run attnbench")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = attnbench(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

#[test]
fn causal_area_is_exact() {
    let v = json(&["mask", "area", "causal", "--seqlen", "1000", "--json"]);
    assert_eq!(v["area"], 500500);
    assert_eq!(v["pattern"], "causal");
    assert_eq!(v["seqlen"], 1000);
    assert!((v["density"].as_f64().unwrap() - 0.5005).abs() < 1e-12);
    assert_eq!(v["slices"], 1);
}

#[test]
fn document_area_and_flops() {
    let v = json(&["mask", "area", "causal_document", "--seqlen", "300", "--set", "doc_lens=100,200", "--heads", "64:8", "--head-dim", "128", "--json"]);
    let area = 100 * 101 / 2 + 200 * 201 / 2;
    assert_eq!(v["area"], area);
    assert_eq!(v["params"]["doc_lens"], "100,200");
    assert_eq!(v["flops_fwd"].as_f64().unwrap(), 4.0 * area as f64 * 64.0 * 128.0);
}

#[test]
fn sliding_window_with_window_larger_than_seqlen_is_full() {
    let v = json(&["mask", "area", "sliding_window", "--seqlen", "50", "--set", "window_left=99", "--set", "window_right=60", "--json"]);
    assert_eq!(v["area"], 2500);
}

#[test]
fn prefix_longer_than_seqlen_is_full_like_a_window() {
    let v = json(&["mask", "area", "prefix_lm_causal", "--seqlen", "50", "--set", "prefix=5000", "--json"]);
    assert_eq!(v["area"], 2500);
}

#[test]
fn heterogeneous_heads_report_groups() {
    let v = json(&["mask", "area", "per_head", "--seqlen", "100", "--set", "patterns=full,causal", "--json"]);
    assert_eq!(v["groups"], 2);
    assert_eq!(v["group_areas"], serde_json::json!([10000, 5050]));
    assert_eq!(v["area"].as_f64().unwrap(), 7525.0);
    // 2 groups do not divide 3 query heads
    let out = attnbench(&["mask", "area", "per_head", "--seqlen", "100", "--set", "patterns=full,causal", "--heads", "3:1"]);
    assert_eq!(out.status.code(), Some(2));
}

fn assert_bad_input(args: &[&str], names: &str) {
    let out = attnbench(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "single line: {err}");
    assert!(err.contains(names), "{args:?}: `{err}` should name {names}");
    assert!(out.stdout.is_empty());
}

#[test]
fn invalid_parameters_exit_2_with_one_line() {
    let area = |pattern: &'static str, set: &'static str| vec!["mask", "area", pattern, "--seqlen", "100", "--set", set];
    assert_bad_input(&area("sliding_window_causal", "window=-1"), "`window`");
    assert_bad_input(&area("prefix_lm_causal", "prefix=-101"), "`prefix`");
    assert_bad_input(&area("causal", "windoww=3"), "`windoww`");
    assert_bad_input(&area("causal_document", "doc_lens=10,20"), "`doc_lens`");
    assert_bad_input(&area("block_sparse", "density=0"), "`density`");
    assert_bad_input(&area("block_sparse", "density=1.5"), "`density`");
    assert_bad_input(&area("causal_document", "docs=wikipedia"), "`docs`");
    assert_bad_input(&area("causal", "novalue"), "novalue");
    assert_bad_input(&["mask", "area", "banana", "--seqlen", "10"], "banana");
    assert_bad_input(&["mask", "show", "causal", "--seqlen", "0"], "seqlen");
}

#[test]
fn show_prints_a_picture_and_writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("f.png");
    let out = attnbench(&["mask", "show", "causal_blockwise", "--seqlen", "64", "--set", "doc_lens=16,16,32", "--width", "16", "--png", png.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 16);
    assert!(rows.iter().all(|r| r.chars().count() == 16));
    // last document sees everything before it: the bottom row is full up to its diagonal cell
    assert_eq!(rows[15], "███████████████▒");
    assert_eq!(rows[0], "▒···············");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn png_to_an_unwritable_path_is_bad_input() {
    assert_bad_input(&["mask", "show", "causal", "--seqlen", "8", "--png", "/nonexistent-dir/x.png"], "--png");
}

#[test]
fn list_shows_patterns_with_defaults() {
    let out = attnbench(&["list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("sliding_window_causal") && text.contains("window [1024]"));
    assert!(text.contains("prolong64k"));
    let v = json(&["list", "patterns", "--json"]);
    let pats = v["patterns"].as_array().unwrap();
    let gsw = pats.iter().find(|p| p["name"] == "global_sliding_window").unwrap();
    assert_eq!(gsw["params"][0]["key"], "global");
    assert_eq!(gsw["params"][0]["default"], "64");
    assert!(v.get("docs").is_none());
}

/// A reader that goes away (`attnbench list | head -1`) ends a command that only prints quietly, as
/// it ends `cat` — never a "failed printing to stdout" panic with a backtrace.
#[test]
fn a_closed_stdout_ends_printing_commands_quietly() {
    use std::os::unix::process::ExitStatusExt;
    for args in [&["list"][..], &["mask", "show", "causal", "--seqlen", "256"][..]] {
        let mut child =
            Command::new(env!("CARGO_BIN_EXE_attnbench")).args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        // Close the read end before the child (still loading libtorch) writes its first line.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{args:?}: {:?} {stderr}", out.status);
    }
}
