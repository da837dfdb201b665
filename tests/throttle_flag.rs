//! Issue 33 through the real binary: a row measured on a throttled GPU (its `throttle` column set)
//! is flagged in `table`, and `compare` reports a slowdown on it as throttling, not as a regression.

use std::path::Path;
use std::process::Command;

use attnbench::case::{Case, DType, DeviceKind, HeadLayout};
use attnbench::flops::Pass;
use attnbench::results::{CsvAppender, Row, Status};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnbench"))
}

fn write(path: &Path, ms: f64, throttle: &str) {
    let mut a = CsvAppender::open(path).unwrap();
    let c = Case::kernel("sdpa", "causal", Default::default(), 1024, HeadLayout { q: 4, kv: 2 }, 64, DType::Bf16, Pass::Fwd, DeviceKind::Cuda);
    let mut r = Row::for_case("run", &c, "NVIDIA H200");
    r.status = Status::Ok;
    r.ms_median = Some(ms);
    r.ms_p20 = Some(ms * 0.99);
    r.ms_p80 = Some(ms * 1.01);
    r.tflops = Some(1.0 / ms);
    r.power_source = "nvml".into();
    r.avg_power_w = Some(650.0);
    r.energy_j = Some(0.65 * ms);
    r.throttle = throttle.into();
    a.append(&r).unwrap();
}

#[test]
fn a_throttled_run_is_flagged_in_tables_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let (base, hot, cool) = (dir.path().join("base.csv"), dir.path().join("hot.csv"), dir.path().join("cool.csv"));
    write(&base, 1.0, "");
    write(&hot, 1.3, "sw_power_cap+hw_thermal");
    write(&cool, 1.3, "");
    // The same 30 % slowdown: a regression (exit 1) on a cool GPU, throttling (exit 0) on a hot one.
    let o = bin().arg("compare").args([&base, &cool]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    let o = bin().arg("compare").args([&base, &hot]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("new run throttled (sw_power_cap+hw_thermal); not judged as a code change"), "{stdout}");
    assert!(stdout.contains("0 regression") && stdout.contains("1 throttled"), "{stdout}");
    // Tables: the throttled number carries † and the table says what it means.
    for metric in ["tflops", "energy"] {
        let o = bin().args(["table", "--metric", metric]).arg(&hot).output().unwrap();
        let md = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{md}{}", String::from_utf8_lossy(&o.stderr));
        assert!(md.contains('†') && md.contains("throttled while timed"), "{metric}: {md}");
    }
    let o = bin().args(["table", "--metric", "tflops"]).arg(&cool).output().unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains('†'));
}
