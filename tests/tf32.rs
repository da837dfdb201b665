//! TF32 is set explicitly for every case and recorded (issue 26): `--tf32` / `[measure] tf32` turns it
//! on, it is off otherwise — also against libtorch's own default, which has cuDNN TF32 on. Its own test
//! binary: the setting is process-wide.

use std::process::Command;

use attnbench::backend::naive::NAIVE;
use attnbench::case::{Case, DType, DeviceKind, HeadLayout};
use attnbench::flops::Pass;
use attnbench::harness::kernel::execute_kernel_case_with;
use attnbench::mask::Params;
use attnbench::measure::MeasureSettings;
use attnbench::sys::precision::{set_tf32, tf32, Tf32};

#[test]
fn every_case_sets_tf32_as_asked_and_the_row_records_it_where_it_applies() {
    let case = Case::kernel("naive", "causal", Params::new(), 32, HeadLayout { q: 2, kv: 1 }, 16, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
    for on in [true, false] {
        // Start from the opposite state: the case must set it, not inherit it.
        set_tf32(Tf32::uniform(!on)).unwrap();
        let settings = MeasureSettings { warmup: 0, repeats: 1, tf32: on, ..Default::default() };
        let row = execute_kernel_case_with(&NAIVE, &case, &settings, "t").unwrap();
        assert_eq!(tf32().unwrap(), Tf32::uniform(on));
        assert_eq!(row.tf32, None, "TF32 does not apply on the CPU");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_attnbench"))
        .args(["kernel", "--backend", "naive", "--mask", "causal", "--seqlen", "32", "--dtype", "fp32", "--tf32", "--repeats", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.get("tf32").is_some(), "the row has a tf32 column: {v}");
}
