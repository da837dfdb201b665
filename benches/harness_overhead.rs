//! What the harness costs next to the kernels (issue 26): runs a suite through the real binary
//! (default `suites/quick-cpu.toml`), then reads the untimed seconds every row records and prints
//!
//!   wall time of the run  vs  Σ measure_s (the measurement: warmup, repeats, flushes, clock reads)
//!                              + Σ gate_s (the correctness gate: backend call + f64 reference)
//!   Σ setup_s (mask, inputs — drawn once per shape —, prepare), and the rest (worker start, CSV)
//!
//! and the `run --dry-run` estimate of the same suite fitted to those rows (`--overheads-from`), so the
//! estimate can be compared with what the run took. Nothing is asserted: it is a measurement.
//!
//!   cargo bench --bench harness_overhead                              # quick-cpu
//!   ATTNBENCH_BENCH_SUITE=suites/x.toml ATTNBENCH_BENCH_FILTER='seqlen<=2048' cargo bench --bench harness_overhead

use std::process::Command;
use std::time::Instant;

use attnbench::results::csvio::read_rows;

fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) only checks it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_attnbench");
    let suite = std::env::var("ATTNBENCH_BENCH_SUITE").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/suites/quick-cpu.toml").into());
    let out = std::env::temp_dir().join(format!("attnbench-overhead-{}", std::process::id()));
    let mut run = Command::new(bin);
    run.args(["run", &suite, "--out"]).arg(&out);
    let filter = std::env::var("ATTNBENCH_BENCH_FILTER").ok();
    if let Some(f) = &filter {
        run.args(["--filter", f]);
    }
    let t = Instant::now();
    let st = run.status().expect("attnbench runs");
    let wall = t.elapsed().as_secs_f64();
    assert!(st.success(), "attnbench run failed");
    let rows = read_rows(&out.join("results.csv")).expect("results.csv reads");
    let sum = |f: fn(&attnbench::results::Row) -> Option<f64>| rows.iter().filter_map(f).sum::<f64>();
    let (setup, gate, measure) = (sum(|r| r.setup_s), sum(|r| r.gate_s), sum(|r| r.measure_s));
    let kernel: f64 = rows.iter().filter_map(|r| Some(r.ms_median? * r.repeats? as f64 / 1e3)).sum();
    let work = measure + gate;
    println!("suite {suite}: {} rows", rows.len());
    println!("  wall (host clock around `attnbench run`)        {wall:9.2} s");
    println!("  Σ measure_s (warmup + repeats + peak-memory call) {measure:9.2} s   of which timed kernel calls (median × repeats) {kernel:.2} s");
    println!("  Σ gate_s    (backend call + f64 reference)        {gate:9.2} s");
    println!("  Σ setup_s   (mask, inputs, prepare)               {setup:9.2} s");
    println!("  rest        (worker start, planning, CSV)         {:9.2} s", wall - work - setup);
    println!("  wall / (measure + gate) = {:.3}  ({:+.1} %)", wall / work, 100.0 * (wall / work - 1.0));
    let mut dry = Command::new(bin);
    dry.args(["run", &suite, "--dry-run", "--overheads-from"]).arg(out.join("results.csv"));
    if let Some(f) = &filter {
        dry.args(["--filter", f]);
    }
    let o = dry.output().expect("dry run");
    let text = String::from_utf8_lossy(&o.stdout);
    println!("  dry-run fitted to these rows: {}", text.lines().last().unwrap_or(""));
    let _ = std::fs::remove_dir_all(&out);
}
