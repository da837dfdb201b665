//! Issue 29, point 2: CP options a strategy takes are checked, kept in the row (`strategy_params`)
//! and tell cases apart in labels and tables; LoongTrain (`usp` with `--inner-ring`) runs and passes
//! the one-device gate. Through the real binary, ranks as threads (`--comm local`).

use std::process::{Command, Output};

fn attnbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attnbench")).args(args).env("OMP_NUM_THREADS", "1").output().expect("binary runs")
}

/// A small causal CP case on threads: the toy shape (8:2 heads, d32, fp32, per-rank kernel sliced).
fn cp(world: usize, extra: &[&str]) -> Output {
    let w = world.to_string();
    let mut args = vec!["cp", "--comm", "local", "--world", &w, "--mask", "causal", "--seqlen", "64", "--repeats", "1", "--warmup", "0"];
    args.extend_from_slice(extra);
    attnbench(&args)
}

fn rows(out: &Output) -> Vec<serde_json::Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn one_line_exit_2(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

#[test]
fn an_option_the_strategy_does_not_take_is_bad_input() {
    let e = one_line_exit_2(&cp(2, &["--strategy", "ring-p2p", "--ulysses-degree", "2"]));
    assert!(e.contains("--strategy ring-p2p takes no --ulysses-degree"), "{e}");
    let e = one_line_exit_2(&cp(4, &["--strategy", "ulysses", "--inner-ring", "2"]));
    assert!(e.contains("--strategy ulysses takes no --inner-ring"), "{e}");
    let e = one_line_exit_2(&cp(4, &["--strategy", "double-ring", "--ulysses-degree", "2"]));
    assert!(e.contains("takes no --ulysses-degree (it takes: inner_ring, sharding)"), "{e}");
}

/// With several strategies an option goes to those that take it; the others' case ids are the ones
/// they have without it.
#[test]
fn an_option_does_not_change_the_case_id_of_a_strategy_that_does_not_take_it() {
    let alone = rows(&cp(2, &["--strategy", "ring-p2p", "--json"]));
    let both = rows(&cp(2, &["--strategy", "ring-p2p", "--strategy", "usp", "--ulysses-degree", "2", "--json"]));
    assert_eq!(both[0]["strategy"], "ring-p2p");
    assert_eq!(both[0]["case_id"], alone[0]["case_id"]);
    assert_eq!(both[0]["strategy_params"], "");
    assert_eq!((both[1]["strategy"].as_str(), both[1]["strategy_params"].as_str()), (Some("usp"), Some("ulysses_degree=2")));
}

/// LoongTrain: Ulysses degree 2 × a ring of 4 split into 2 inner rings of 2 (8 ranks), forward and
/// backward, checked against one device like every strategy.
#[test]
fn loongtrain_passes_the_gate_on_local_ranks() {
    for (u, inner) in [("2", "2"), ("1", "2")] {
        let r = rows(&cp(8, &["--strategy", "usp", "--ulysses-degree", u, "--inner-ring", inner, "--pass", "fwdbwd", "--json"]));
        let r = &r[0];
        assert_eq!(r["status"], "ok", "{r}");
        assert!(r["max_abs_err"].as_f64().unwrap() < 1e-4, "{r}");
        assert_eq!(r["strategy_params"].as_str().unwrap(), format!("inner_ring={inner};ulysses_degree={u}"));
        let ring = 8 / u.parse::<usize>().unwrap();
        assert!(r["note"].as_str().unwrap().starts_with(&format!("ulysses={u} ring={ring} inner=2 outer={}", ring / 2)), "{r}");
    }
    // An inner ring that does not divide the ring (W/U = 4) is bad input naming the flag.
    let e = one_line_exit_2(&cp(8, &["--strategy", "usp", "--ulysses-degree", "2", "--inner-ring", "3"]));
    assert!(e.contains("--inner-ring 3 must divide the ring degree 4"), "{e}");
}

/// usp at Ulysses degree 2 and 4 (same world, same everything else) are two rows of one table, and
/// the default degree is written out.
#[test]
fn usp_degrees_are_two_labels_in_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("rows.csv");
    let csv_s = csv.display().to_string();
    for u in [&["--ulysses-degree", "2"][..], &["--ulysses-degree", "4"], &[]] {
        let mut args = vec!["--strategy", "usp", "--out", &csv_s];
        args.extend_from_slice(u);
        let out = cp(4, &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = attnbench(&["table", &csv_s]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("usp[ulysses_degree=2]") && text.contains("usp[ulysses_degree=4]"), "{text}");
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    let header = csv_text.lines().next().unwrap();
    assert!(header.ends_with(",strategy_params"), "{header}");
    // The default degree at W = 4 with 8:2 heads is 2: the third row says so.
    assert_eq!(csv_text.lines().filter(|l| l.ends_with(",ulysses_degree=2")).count(), 2, "{csv_text}");

    // `compare` never pairs U = 2 with U = 4 as one case whose id changed.
    let (a, b) = (tmp.path().join("a.csv"), tmp.path().join("b.csv"));
    let header = csv_text.lines().next().unwrap();
    let lines: Vec<&str> = csv_text.lines().skip(1).collect();
    std::fs::write(&a, format!("{header}\n{}\n", lines[0])).unwrap();
    std::fs::write(&b, format!("{header}\n{}\n", lines[1])).unwrap();
    let out = attnbench(&["compare", &a.display().to_string(), &b.display().to_string(), "--allow-empty"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 removed, 1 new") && !text.contains("case_id"), "{text}");
}

#[test]
fn simulate_rows_carry_strategy_params() {
    let out = attnbench(&[
        "simulate",
        "--strategy",
        "usp",
        "--ulysses-degree",
        "2",
        "--inner-ring",
        "2",
        "--world-size",
        "8",
        "--mask",
        "causal",
        "--seqlen",
        "512",
        "--heads",
        "8:2",
        "--head-dim",
        "32",
        "--json",
    ]);
    let r = &rows(&out)[0]["row"];
    assert_eq!((r["kind"].as_str(), r["strategy_params"].as_str()), (Some("simulated"), Some("inner_ring=2;ulysses_degree=2")), "{r}");
    let e =
        one_line_exit_2(&attnbench(&["simulate", "--strategy", "ring-p2p", "--inner-ring", "2", "--world-size", "8", "--mask", "causal", "--seqlen", "512"]));
    assert!(e.contains("--strategy ring-p2p takes no --inner-ring"), "{e}");
}

/// A suite's options go per strategy: a shared key only to the strategies that take it, a table per
/// strategy with arrays swept; a key no strategy of the grid takes is one line, exit 2.
#[test]
fn suite_strategy_params_are_per_strategy() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = |body: &str| {
        let p = tmp.path().join("s.toml");
        std::fs::write(&p, format!("name = \"t\"\n[[grid]]\npatterns = [\"causal\"]\nseqlens = [64]\nheads = [\"8:2\"]\nhead_dims = [16]\ndtypes = [\"fp32\"]\ndevice = \"cpu\"\nbackends = [\"sliced\"]\nworld_sizes = [4]\n{body}")).unwrap();
        p.display().to_string()
    };
    let ok =
        suite("strategies = [\"ring-p2p\", \"usp\"]\n[grid.strategy_params]\nsharding = \"zigzag\"\n[grid.strategy_params.usp]\nulysses_degree = [2, 4]\n");
    let out = attnbench(&["run", &ok, "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("usp[sharding=zigzag;ulysses_degree=2]") && text.contains("usp[sharding=zigzag;ulysses_degree=4]"), "{text}");
    assert!(text.contains("ring-p2p[sharding=zigzag]") && !text.contains("ring-p2p[sharding=zigzag;ulysses"), "{text}");
    let bad = suite("strategies = [\"ring-p2p\"]\nstrategy_params = { ulysses_degree = 2 }\n");
    let e = one_line_exit_2(&attnbench(&["run", &bad, "--dry-run"]));
    assert!(e.contains("strategy_params.ulysses_degree") && e.contains("none of this grid's strategies"), "{e}");
}
