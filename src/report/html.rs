//! `attnbench report`: one self-contained HTML page for a run directory (results.csv + meta.json):
//! the run's metadata, a status summary, the pivot tables, every figure as inline SVG, the failed
//! cases with their messages and, on request, the CAB efficiency analysis. No scripts, no external
//! files: it opens from disk in any browser.

use std::path::Path;

use crate::results::{Row, RunMeta, Status};

use super::cab;
use super::data::{row_label, Metric, ReportError, Run, MARK_LEGEND};
use super::plot::{build_figures, render_svg, Colors, PlotOptions};
use super::table::{html_escape, pivot, TableFormat};

const CSS: &str = r#"
:root { --fg:#1d2433; --muted:#5b6475; --line:#e3e6ec; --accent:#1f77b4; --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 "DejaVu Sans", system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { background:#1d2433; color:#fff; padding:22px 32px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; }
header p { margin:0; color:#c6cbd6; }
main { max-width:1320px; margin:0 auto; padding:8px 32px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:18px 22px; margin:20px 0; }
h2 { font-size:19px; margin:0 0 12px; border-bottom:2px solid var(--accent); display:inline-block; padding-bottom:2px; }
h3 { font-size:15px; margin:16px 0 2px; }
p.sub { margin:0 0 8px; color:var(--muted); font-size:13px; }
table { border-collapse:collapse; font-size:13.5px; margin:4px 0 10px; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
thead th { background:#eef1f5; font-weight:600; }
tbody th, thead th:first-child { text-align:left; font-weight:500; }
tbody tr:nth-child(even) { background:#fafbfc; }
td.best { background:#e8f3e8; }
td.mark { color:#b03030; font-weight:600; text-align:center; }
.meta { display:grid; grid-template-columns: max-content 1fr; gap:3px 18px; font-size:13.5px; }
.meta dt { color:var(--muted); } .meta dd { margin:0; font-family: "DejaVu Sans Mono", monospace; word-break: break-all; }
.tbls { display:flex; flex-wrap:wrap; gap:4px 36px; align-items:flex-start; }
.tbl { max-width:100%; overflow-x:auto; }
.fig { margin:14px 0 22px; } .fig svg { max-width:100%; height:auto; display:block; border:1px solid var(--line); border-radius:6px; }
.pill { display:inline-block; padding:1px 10px; border-radius:10px; margin-right:6px; font-size:13px; background:#eef1f5; }
.pill.bad { background:#fbe9e9; color:#8a1f1f; } .pill.ok { background:#e8f3e8; color:#1f5f1f; }
td.err { text-align:left; white-space:normal; color:var(--muted); max-width:700px; }
nav a { color:var(--accent); margin-right:14px; text-decoration:none; }
"#;

/// What the page says about a run without rows (a header-only or empty results.csv).
pub const EMPTY_RUN: &str = "results.csv has no rows: this run recorded no case, so there is nothing to tabulate, plot or call passed.";

/// Options of the page.
#[derive(Debug, Clone)]
pub struct HtmlOptions {
    /// Include the CAB efficiency analysis (fits, efficiency lengths, figures).
    pub cab: bool,
    /// CAB's baseline backend (its "vanilla"), `naive` by default.
    pub baseline: String,
}

/// A rendered page and what it was made from.
pub struct Report {
    pub html: String,
    /// Rows of results.csv (0: the page says the run is empty).
    pub rows: usize,
}

impl Default for HtmlOptions {
    fn default() -> Self {
        HtmlOptions { cab: false, baseline: cab::DEFAULT_BASELINE.into() }
    }
}

/// Reads `dir/results.csv` and (if present) `dir/meta.json` and returns the page.
pub fn report_dir(dir: &Path, opts: &HtmlOptions) -> Result<Report, ReportError> {
    let csv = dir.join("results.csv");
    if !csv.is_file() {
        return Err(ReportError::Input(format!("{}: no results.csv in this run directory", dir.display())));
    }
    let rows = super::data::read_checked(&csv)?;
    let meta_path = dir.join("meta.json");
    let meta: Option<RunMeta> = if meta_path.is_file() {
        let text = std::fs::read_to_string(&meta_path).map_err(ReportError::io(&meta_path))?;
        Some(serde_json::from_str(&text).map_err(|e| ReportError::Input(format!("{}: not a run meta.json: {e}", meta_path.display())))?)
    } else {
        None
    };
    Ok(Report { html: page(&rows, meta.as_ref(), opts)?, rows: rows.len() })
}

/// The HTML page for `rows` and their metadata.
pub fn page(rows: &[Row], meta: Option<&RunMeta>, opts: &HtmlOptions) -> Result<String, ReportError> {
    let run_id = meta.map(|m| m.run_id.clone()).or_else(|| rows.first().map(|r| r.run_id.clone())).unwrap_or_default();
    let device = meta.map(|m| m.gpu.clone()).filter(|g| !g.is_empty()).or_else(|| rows.first().map(|r| r.device.clone())).unwrap_or_default();
    let mut h = String::new();
    h.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>attnbench — {}</title>\n<style>{CSS}</style></head>\n<body>\n",
        html_escape(&run_id)
    ));
    let started = meta.map(|m| m.started_utc.clone()).unwrap_or_default();
    h.push_str(&format!(
        "<header><h1>attnbench report · {}</h1><p>{} · {} rows{}</p></header>\n<main>\n",
        html_escape(&run_id),
        html_escape(&device),
        rows.len(),
        if started.is_empty() { String::new() } else { format!(" · started {}", html_escape(&started)) }
    ));
    if let Some(why) = meta.map(|m| m.synthetic.as_str()).filter(|s| !s.is_empty()) {
        h.push_str(&format!("<p class=\"pill bad\" id=\"synthetic\">Synthetic data, not a measurement: {}</p>\n", html_escape(why)));
    }
    h.push_str("<nav><a href=\"#summary\">Summary</a><a href=\"#tables\">Tables</a><a href=\"#plots\">Plots</a>");
    if opts.cab {
        h.push_str("<a href=\"#cab\">Efficiency (CAB)</a>");
    }
    h.push_str("<a href=\"#failures\">Failures</a><a href=\"#meta\">Run metadata</a></nav>\n");

    // Summary: counts per status.
    h.push_str("<section id=\"summary\"><h2>Summary</h2><p>");
    if rows.is_empty() {
        h.push_str(&format!("<span class=\"pill bad\">0 rows</span> {}", html_escape(EMPTY_RUN)));
    }
    for s in [Status::Ok, Status::Unsupported, Status::Oom, Status::Wrong, Status::Timeout, Status::Error] {
        let n = rows.iter().filter(|r| r.status == s).count();
        if n > 0 {
            let class = match s {
                Status::Ok => "ok",
                Status::Wrong | Status::Error | Status::Timeout => "bad",
                _ => "",
            };
            h.push_str(&format!("<span class=\"pill {class}\">{} {}</span>", n, s.name()));
        }
    }
    h.push_str(&format!("</p><p class=\"sub\">Table marks: {}. Best value per column highlighted.</p></section>\n", html_escape(MARK_LEGEND)));

    // Tables.
    let html = TableFormat::Html.writer();
    h.push_str("<section id=\"tables\"><h2>Throughput (TFLOPS)</h2><div class=\"tbls\">\n");
    h.push_str(&html.write(&pivot(rows, Metric::Tflops)));
    h.push_str("</div></section>\n");
    if rows.iter().any(|r| Metric::Mem.value(r).is_some()) {
        h.push_str("<section id=\"memory\"><h2>Peak memory</h2><div class=\"tbls\">\n");
        h.push_str(&html.write(&pivot(rows, Metric::Mem)));
        h.push_str("</div></section>\n");
    }
    // Issue 33: energy where a power source was read (docs/ENERGY.md says how).
    if rows.iter().any(|r| Metric::Energy.value(r).is_some()) {
        let sources = crate::report::data::distinct(rows.iter().filter(|r| Metric::Energy.value(r).is_some()).map(|r| r.power_source.clone()));
        h.push_str(&format!(
            "<section id=\"energy\"><h2>Energy</h2><p class=\"sub\">Energy per call (J) = average power over the timed repeats × median time; power read by {} while the repeats ran (energy counter where the device has one, else integrated power). † marks rows throttled while timed.</p><div class=\"tbls\">\n",
            html_escape(&sources.join(", "))
        ));
        h.push_str(&html.write(&pivot(rows, Metric::Energy)));
        h.push_str(&html.write(&pivot(rows, Metric::TflopsPerWatt)));
        h.push_str("</div></section>\n");
    }

    // Figures, inline SVG.
    let runs = vec![Run { label: run_id.clone(), rows: rows.to_vec() }];
    let mut colors = Colors::default();
    let figs = build_figures(&runs, &PlotOptions::default(), &mut colors);
    h.push_str("<section id=\"plots\"><h2>Plots</h2>\n");
    for f in &figs {
        h.push_str(&format!("<div class=\"fig\" id=\"fig-{}\">{}</div>\n", html_escape(&f.name), strip_xml_decl(&render_svg(f)?)));
    }
    h.push_str("</section>\n");

    if opts.cab {
        let groups = cab::analyse(rows, &opts.baseline)?;
        h.push_str(&format!(
            "<section id=\"cab\"><h2>Efficiency (CAB)</h2><p class=\"sub\">CAB's efficiency length, for time and memory: <code>{}</code> fitted with a quadratic in S, each backend with a line (time: without its shortest length); the length beyond which the backend stays cheaper is the larger crossing. Scaling exponents (power-law fits) follow under their own title.</p>\n",
            html_escape(&opts.baseline)
        ));
        h.push_str(&html.write(&cab::tables(&groups)));
        for f in cab::figures(&groups, &mut colors) {
            h.push_str(&format!("<div class=\"fig\">{}</div>\n", strip_xml_decl(&render_svg(&f)?)));
        }
        h.push_str("</section>\n");
    }

    // Failures.
    let failed: Vec<&Row> = rows.iter().filter(|r| r.status != Status::Ok).collect();
    h.push_str("<section id=\"failures\"><h2>Cases without a number</h2>\n");
    if rows.is_empty() {
        h.push_str(&format!("<p>{}</p>", html_escape(EMPTY_RUN)));
    } else if failed.is_empty() {
        h.push_str("<p>None: every case ran and passed its check.</p>");
    } else {
        h.push_str("<table><thead><tr><th>case</th><th>status</th><th>message</th></tr></thead><tbody>\n");
        for r in failed {
            h.push_str(&format!(
                "<tr><th>{}</th><td class=\"mark\">{}</td><td class=\"err\">{}</td></tr>\n",
                html_escape(&row_label(r)),
                r.status.name(),
                html_escape(&r.error)
            ));
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>\n");

    // Metadata.
    h.push_str("<section id=\"meta\"><h2>Run metadata</h2>\n");
    match meta {
        None => h.push_str("<p>No meta.json in this run directory.</p>"),
        Some(m) => {
            h.push_str("<dl class=\"meta\">");
            if let serde_json::Value::Object(map) = serde_json::to_value(m)? {
                for (k, v) in map {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    if !text.is_empty() {
                        h.push_str(&format!("<dt>{}</dt><dd>{}</dd>", html_escape(&k), html_escape(&text)));
                    }
                }
            }
            h.push_str("</dl>");
        }
    }
    h.push_str("</section>\n</main></body></html>\n");
    Ok(h)
}

fn strip_xml_decl(svg: &str) -> &str {
    match svg.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, s)| s.trim_start()).unwrap_or(svg),
        None => svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;
    use crate::results::Status;

    fn row(backend: &str, energy: Option<f64>) -> Row {
        let c = Case::kernel(backend, "causal", Default::default(), 1024, HeadLayout { q: 8, kv: 8 }, 64, DType::Bf16, Pass::Fwd, DeviceKind::Cuda);
        let mut r = Row::for_case("r", &c, "NVIDIA H200");
        r.status = Status::Ok;
        r.ms_median = Some(1.0);
        r.tflops = Some(100.0);
        r.energy_j = energy;
        r.tflops_per_watt = energy.map(|_| 0.2);
        r.avg_power_w = energy.map(|e| e * 1e3);
        r.power_source = if energy.is_some() { "nvml" } else { "unavailable" }.into();
        r
    }

    /// Issue 33: the page has an energy section (tables and the TFLOPS/W figure) when power was
    /// measured, and none when every row says `unavailable`; a throttled row is marked.
    #[test]
    fn energy_section_only_where_power_was_measured() {
        let mut hot = row("b", Some(0.6));
        hot.throttle = "sw_power_cap".into();
        let page_with = page(&[row("a", Some(0.5)), hot], None, &HtmlOptions::default()).unwrap();
        assert!(page_with.contains("id=\"energy\"") && page_with.contains("read by nvml"), "energy section");
        assert!(page_with.contains("fig-tflops-per-watt-"), "TFLOPS/W figure");
        assert!(page_with.contains("0.600†"), "throttled energy cell marked");
        let page_without = page(&[row("a", None)], None, &HtmlOptions::default()).unwrap();
        assert!(!page_without.contains("id=\"energy\"") && !page_without.contains("fig-tflops-per-watt-"));
    }
}
