//! End-to-end tests of `attnbench plot | table | compare | report` on committed fixtures
//! (tests/fixtures/h100_run: modelled H100 numbers; tests/fixtures/oom_bogus.csv: a hand-written CSV
//! whose `oom` row carries bogus timing numbers that must never be drawn or tabulated).

use std::path::{Path, PathBuf};
use std::process::Command;

use attnbench::case::{Case, DType, DeviceKind, HeadLayout};
use attnbench::flops::Pass;
use attnbench::results::{CsvAppender, Row, Status};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attnbench"))
}

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(p)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Distinct `stroke` colours of the polylines drawn 2 px wide (data series; the legend samples are
/// 3 px, axes and grid 1 px).
fn series_colours(svg: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for el in svg.split("<polyline").skip(1) {
        let el = &el[..el.find("/>").unwrap()];
        if !el.contains("stroke-width=\"2\"") {
            continue;
        }
        let c = el.split("stroke=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Trimmed contents of the SVG's `<text>` elements (legend entries, tick labels, marks).
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text").skip(1).map(|t| t.split_once('>').unwrap().1.split("</text>").next().unwrap().trim().to_string()).collect()
}

fn count_text(svg: &str, what: &str) -> usize {
    texts(svg).iter().filter(|t| *t == what).count()
}

#[test]
fn plot_writes_valid_svg_and_png_with_one_series_per_backend() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_ok(bin().args(["plot"]).arg(fixture("h100_run/results.csv")).arg("--out").arg(dir.path()).arg("--cab"));
    for name in ["tflops-full", "tflops-causal", "mem-full", "bars-fwd-S32K", "bars-bwd-S32K", "cp-causal-S64K-fwd", "cab-full-fwd"] {
        let png = std::fs::read(dir.path().join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
        assert!(png.len() > 10_000, "{name}.png is {} bytes", png.len());
        let svg = std::fs::read_to_string(dir.path().join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{name}.svg");
        assert!(stdout.contains(&format!("{name}.svg")));
    }
    let svg = std::fs::read_to_string(dir.path().join("tflops-full.svg")).unwrap();
    // Four backends → four series colours; each backend named once in the legend.
    assert_eq!(series_colours(&svg).len(), 4, "{:?}", series_colours(&svg));
    for b in ["sdpa-flash", "sdpa-efficient", "varlen-flash", "naive"] {
        assert_eq!(count_text(&svg, b), 1, "legend entry {b}");
    }
    assert!(svg.contains("NVIDIA H100 80GB HBM3") && svg.contains("heads 64:8") && svg.contains("D 128") && svg.contains("bf16"));
    // CP: three measured strategies + the projected zigzag_ring (dashed, same colour) → 3 colours,
    // and a "projected" legend entry.
    let cp = std::fs::read_to_string(dir.path().join("cp-causal-S64K-fwd.svg")).unwrap();
    assert_eq!(series_colours(&cp).len(), 3);
    assert_eq!(count_text(&cp, "zigzag_ring (projected)"), 1);
    // Bars: causal_document at 32K → sdpa-flash unsupported (X), naive out of memory (E).
    let bars = std::fs::read_to_string(dir.path().join("bars-fwd-S32K.svg")).unwrap();
    assert_eq!(count_text(&bars, "X"), 1, "sdpa-flash on causal_document");
    assert_eq!(count_text(&bars, "E"), 3, "naive on three patterns");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("plots.json")).unwrap()).unwrap();
    assert!(json.as_array().unwrap().len() >= 7);
    // One mask picture per distinct (mask, params) of the CSV.
    let rows = attnbench::results::read_rows(&fixture("h100_run/results.csv")).unwrap();
    let mut masks: Vec<(String, String)> = rows.iter().map(|r| (r.mask.clone(), r.mask_params.clone())).collect();
    masks.sort();
    masks.dedup();
    let pictures: Vec<PathBuf> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("mask-")).collect();
    assert_eq!(pictures.len(), masks.len(), "{pictures:?}");
    for p in &pictures {
        assert_eq!(&std::fs::read(p).unwrap()[..8], b"\x89PNG\r\n\x1a\n", "{}", p.display());
    }
}

#[test]
fn failed_rows_never_reach_a_plot_as_numbers() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(bin().args(["plot"]).arg(fixture("oom_bogus.csv")).arg("--out").arg(dir.path()));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("plots.json")).unwrap()).unwrap();
    let figs = json.as_array().unwrap();
    let line = figs.iter().find(|f| f["name"] == "tflops-causal").unwrap();
    let series = line["panels"][0]["content"]["lines"].as_array().unwrap();
    let naive = series.iter().find(|s| s["label"] == "naive").unwrap();
    // Only the ok 1K point; the oom row's 13861.9 TFLOPS is not there.
    assert_eq!(naive["points"], serde_json::json!([[1024.0, 30.02]]));
    let bars = figs.iter().find(|f| f["name"] == "bars-fwd-S2K").unwrap();
    assert_eq!(bars["panels"][0]["content"]["bars"]["values"], serde_json::json!([[{"value": 199.9}, {"mark": "E"}]]));
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "svg" || e == "json") {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(!text.contains("13861") && !text.contains("13862") && !text.contains("0.00031"), "{}", p.display());
        }
    }
    let svg = std::fs::read_to_string(dir.path().join("bars-fwd-S2K.svg")).unwrap();
    assert_eq!(count_text(&svg, "E"), 1);
    // The y axis of the line plot tops out near the real 200 TFLOPS, not at the bogus value.
    let svg = std::fs::read_to_string(dir.path().join("tflops-causal.svg")).unwrap();
    let ticks = texts(&svg);
    assert!(ticks.iter().any(|t| t == "200"), "{ticks:?}");
    assert!(!ticks.iter().any(|t| t.parse::<f64>().is_ok_and(|v| v > 1000.0)), "{ticks:?}");
    let md = run_ok(bin().args(["table"]).arg(fixture("oom_bogus.csv")));
    assert!(md.contains("| naive | 30.0 | E |"), "{md}");
}

#[test]
fn table_matches_expected_files() {
    let md = run_ok(bin().args(["table"]).arg(fixture("h100_run/results.csv")));
    assert_eq!(md, std::fs::read_to_string(fixture("h100_tflops.md")).unwrap());
    let tex = run_ok(bin().args(["table", "--format", "latex", "--metric", "ms"]).arg(fixture("h100_run/results.csv")));
    assert_eq!(tex, std::fs::read_to_string(fixture("h100_ms.tex")).unwrap());
    assert_eq!(tex.matches("\\toprule").count(), tex.matches("\\bottomrule").count());
    let csv = run_ok(bin().args(["table", "--format", "csv", "--metric", "mem"]).arg(fixture("h100_run/results.csv")));
    assert!(csv.contains("naive,384 MiB,1.50 GiB,6.00 GiB,24.0 GiB,E,E"), "{csv}");
    let cab = run_ok(bin().args(["table", "--cab"]).arg(fixture("h100_run/results.csv")));
    // The scaling exponents, under their own title; CAB's efficiency lengths in their own table.
    assert!(cab.contains("scaling exponents (power-law fits, not CAB's efficiency length)"), "{cab}");
    assert!(cab.contains("| naive | 1.770e-6 ms | 1.83 | 0.999 | 3.840e2 B | 2.00 | 1.000 |\n"), "{cab}");
    assert!(cab.contains("| sdpa-flash | 2.838e-7 ms | 1.87 | 0.999 |"), "{cab}");
    assert!(cab.contains("### full · fwd · CAB efficiency length vs `naive`"), "{cab}");
    assert!(cab.contains("| naive | (baseline) | quadratic fit, R² "), "{cab}");
}

fn write_run(path: &Path, cases: &[(usize, f64, f64, Status)]) {
    let mut a = CsvAppender::open(path).unwrap();
    for &(s, ms, spread, status) in cases {
        let c = Case::kernel("sdpa-flash", "causal", Default::default(), s, HeadLayout { q: 16, kv: 4 }, 128, DType::Bf16, Pass::Fwd, DeviceKind::Cuda);
        let mut r = Row::for_case("run", &c, "NVIDIA H100 80GB HBM3");
        r.flops = 4.0 * (s * (s + 1) / 2) as f64 * 16.0 * 128.0;
        if status == Status::Ok {
            r.status = Status::Ok;
            r.ms_median = Some(ms);
            r.ms_p20 = Some(ms * (1.0 - spread));
            r.ms_p80 = Some(ms * (1.0 + spread));
            r.tflops = Some(r.flops / (ms * 1e-3) / 1e12);
        } else {
            r.fail(status, "out of memory");
        }
        a.append(&r).unwrap();
    }
}

#[test]
fn compare_flags_a_slowdown_beyond_noise_only() {
    let dir = tempfile::tempdir().unwrap();
    let (base, tight, wide) = (dir.path().join("base.csv"), dir.path().join("tight.csv"), dir.path().join("wide.csv"));
    write_run(&base, &[(4096, 2.00, 0.01, Status::Ok), (8192, 7.5, 0.01, Status::Ok)]);
    // 10 % slower with ±1 % noise: regression → exit 1.
    write_run(&tight, &[(4096, 2.20, 0.01, Status::Ok), (8192, 7.5, 0.01, Status::Ok)]);
    let (md, gab, bmf) = (dir.path().join("c.md"), dir.path().join("gab.json"), dir.path().join("bmf.json"));
    let out = bin().arg("compare").args([&base, &tight]).arg("--markdown").arg(&md).arg("--json-gab").arg(&gab).arg("--bmf").arg(&bmf).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("regression") && text.contains("+10.0 %"), "{text}");
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("**1 regression(s)**") && md.contains("### Regressions"), "{md}");
    let gab: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&gab).unwrap()).unwrap();
    assert_eq!(gab.as_array().unwrap().len(), 2);
    assert_eq!(gab[0]["unit"], "ms");
    assert!((gab[0]["value"].as_f64().unwrap() - 2.2).abs() < 1e-12);
    let bmf: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&bmf).unwrap()).unwrap();
    let first = bmf.as_object().unwrap().values().next().unwrap();
    assert!(first["latency"]["lower_value"].as_f64().unwrap() < first["latency"]["value"].as_f64().unwrap());
    // The same 10 % inside ±10 % noise: unchanged → exit 0.
    let base_wide = dir.path().join("base_wide.csv");
    write_run(&base_wide, &[(4096, 2.00, 0.10, Status::Ok), (8192, 7.5, 0.01, Status::Ok)]);
    write_run(&wide, &[(4096, 2.20, 0.10, Status::Ok), (8192, 7.5, 0.01, Status::Ok)]);
    let out = bin().arg("compare").args([&base_wide, &wide]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    // A case ok in the base that went out of memory fails the comparison (issue 30: fail closed),
    // unless --allow-broken; --fail-on-broken is still accepted.
    let broken = dir.path().join("broken.csv");
    write_run(&broken, &[(4096, 0.0, 0.0, Status::Oom), (8192, 7.5, 0.01, Status::Ok)]);
    let out = bin().arg("compare").args([&base, &broken]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 not-ok"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-broken"));
    let out = bin().arg("compare").args([&base, &broken]).arg("--allow-broken").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = bin().arg("compare").args([&base, &broken]).arg("--fail-on-broken").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn report_is_one_self_contained_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.html");
    run_ok(bin().args(["report"]).arg(fixture("h100_run")).arg("--out").arg(&out).arg("--cab"));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(html.matches("<svg").count() >= 10, "inline SVG figures");
    assert!(!html.contains("<script") && !html.contains("src=\"") && !html.contains("href=\"http"), "no external resources");
    assert!(html.contains("suites/longca-kernels.toml") && html.contains("Efficiency (CAB)"));
    assert!(html.contains("<td class=\"mark\" title=\"out of memory\">E</td>"));
    // The fixture's meta.json says it is synthetic, and the page says so above everything else.
    let banner = html.find("Synthetic data, not a measurement: fixture for the report tests").expect("synthetic banner");
    assert!(banner < html.find("id=\"summary\"").unwrap());
}

#[test]
fn bad_input_is_exit_2_with_one_line() {
    let out = bin().args(["table", "/nonexistent/results.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/results.csv"));
    let out = bin().args(["plot"]).arg(fixture("oom_bogus.csv")).args(["--label", "a", "--label", "b"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--label"));
    let dir = tempfile::tempdir().unwrap();
    let out = bin().args(["report"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("results.csv"));
}
