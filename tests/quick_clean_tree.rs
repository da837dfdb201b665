//! A newcomer's tree stays clean: `./launch/quick` must not modify or add a file git would show.
//! The command is run with `ATTNBENCH_BIN` pointing at a stand-in that writes a file wherever it is
//! told to (`run --out DIR`, `plot --out DIR`), so the test checks where launch/quick directs its
//! output in a second, without the minute-long suite (CI also runs the real command, see .ci/run).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn launch_quick_leaves_git_status_unchanged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join(".git").exists() {
        eprintln!("not a git checkout: nothing to check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("attnbench");
    std::fs::write(
        &fake,
        r#"#!/usr/bin/env bash
# Stand-in for attnbench: writes a file into every --out folder it is given.
cmd=$1; shift
out=""
while [[ $# -gt 0 ]]; do [[ $1 == --out ]] && out=$2; shift; done
case $cmd in
  run) mkdir -p "$out"; echo "backend,ms_median" > "$out/results.csv"; echo '{}' > "$out/meta.json" ;;
  plot) mkdir -p "$out"; echo png > "$out/tflops-causal.png" ;;
  table) echo "| table |" ;;
esac
"#,
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let before = git(&["status", "--porcelain", "--untracked-files=all"]);
    let out = Command::new(root.join("launch/quick")).env("ATTNBENCH_BIN", &fake).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let after = git(&["status", "--porcelain", "--untracked-files=all"]);
    // Where it wrote (the last line names the results file), removed again.
    let results = stdout.lines().last().and_then(|l| l.split_whitespace().nth(1)).unwrap_or_default().to_string();
    let written = Path::new(&results).parent().map(|p| root.join(p));
    if let Some(w) = &written {
        assert!(w.join("plots/tflops-causal.png").exists() || root.join("plots/quick-cpu/tflops-causal.png").exists());
    }
    let clean = before == after;
    if let Some(w) = written.filter(|w| w.starts_with(root.join("runs"))) {
        let _ = std::fs::remove_dir_all(w);
    }
    assert!(clean, "launch/quick changed `git status`:\nbefore:\n{before}\nafter:\n{after}");
}
