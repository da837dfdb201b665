//! `compare` explains the cases it cannot match by case_id (issue 20, item 4): the same columns
//! under another id (id-changed), one name changed (renamed), base only (removed), new only (new).
//! Their times are shown, never judged: a renamed case that got slower is not a regression.

use std::path::Path;
use std::process::Command;

use attnbench::case::{Case, DType, DeviceKind, HeadLayout};
use attnbench::flops::Pass;
use attnbench::results::{CsvAppender, Row, Status};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnbench"))
}

/// (backend, seqlen, case_id, median ms)
fn write(path: &Path, cases: &[(&str, usize, &str, f64)]) {
    let mut a = CsvAppender::open(path).unwrap();
    for &(backend, s, id, ms) in cases {
        let c = Case::kernel(backend, "causal", Default::default(), s, HeadLayout { q: 4, kv: 2 }, 64, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
        let mut r = Row::for_case("run", &c, "cpu");
        r.case_id = id.to_string();
        r.status = Status::Ok;
        r.ms_median = Some(ms);
        r.ms_p20 = Some(ms * 0.99);
        r.ms_p80 = Some(ms * 1.01);
        a.append(&r).unwrap();
    }
}

#[test]
fn cases_in_one_run_only_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (base, new, md) = (dir.path().join("base.csv"), dir.path().join("new.csv"), dir.path().join("summary.md"));
    write(&base, &[("sliced", 1024, "a1", 1.0), ("sliced", 2048, "b1", 4.0), ("sdpa-math", 1024, "c1", 2.0), ("naive", 1024, "d1", 9.0)]);
    write(
        &new,
        &[
            ("sliced", 1024, "a2", 1.0),     // same columns, another id
            ("sliced-v2", 2048, "b2", 8.0),  // renamed backend, twice as slow: shown, not a regression
            ("sdpa-math", 1024, "c1", 2.0),  // matched: unchanged
            ("sdpa-flash", 4096, "e1", 3.0), // new
        ],
    );
    let out = bin().arg("compare").args([&base, &new]).arg("--markdown").arg(&md).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "one case checked and unchanged: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("id-changed") && stdout.contains("case_id a1 → a2"), "{stdout}");
    assert!(stdout.contains("renamed") && stdout.contains("backend `sliced` → `sliced-v2`") && stdout.contains("+100.0 %"), "{stdout}");
    assert!(stdout.contains("removed") && stdout.contains("naive causal S=1K"), "{stdout}");
    assert!(stdout.contains("new ") && stdout.contains("sdpa-flash causal S=4K"), "{stdout}");
    assert!(stdout.contains("the case identity changed") && stdout.contains("refresh the baseline"), "{stdout}");
    assert!(stdout.contains("0 regression, 0 improvement, 1 unchanged, 0 not-ok, 1 removed, 1 new, 1 renamed, 1 id-changed"), "{stdout}");
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("### Cases not matched by case_id"), "{md}");
    assert!(md.contains("| renamed | backend `sliced` → `sliced-v2` | +100.0 % |"), "{md}");
    // Every id changed (e.g. a new attnbench whose case ids cover more settings): nothing is
    // checked, the gate fails and says to refresh the baseline.
    let moved = dir.path().join("moved.csv");
    write(&moved, &[("sliced", 1024, "a9", 1.0), ("sliced", 2048, "b9", 4.0), ("sdpa-math", 1024, "c9", 2.0), ("naive", 1024, "d9", 9.0)]);
    let out = bin().arg("compare").args([&base, &moved]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("checked nothing") && err.contains("the case ids changed, so refresh the baseline"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 id-changed"));
}
