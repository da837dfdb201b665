//! What every report shares: loading runs (one CSV each, with a label), choosing a metric, the
//! one-letter marks for failed cases, grouping rows, and number/length formatting.
//!
//! The rule that matters most lives here: [`Metric::value`] returns a number only for rows whose
//! status is `ok`, so a failed, wrong or out-of-memory case can never reach a plot or a table as a
//! number, whatever its CSV cells say.

use std::path::{Path, PathBuf};

use crate::case::CaseKind;
use crate::results::csvio::CsvError;
use crate::results::{read_rows, Row, Status};

/// Errors of the report code. [`ReportError::is_bad_input`] tells the CLI which ones are exit 2.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Csv(#[from] CsvError),
    /// A flag or input the report cannot use (one line naming it).
    #[error("{0}")]
    Input(String),
    /// `err` is not a `source`: the message already carries it, and a chained source would print
    /// the OS error twice on the CLI's one line.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("drawing {what}: {msg}")]
    Draw { what: String, msg: String },
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

impl ReportError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, ReportError::Csv(_) | ReportError::Input(_))
    }

    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
        move |err| ReportError::Io { path: path.to_path_buf(), err }
    }
}

/// The rows of one results CSV, with the label its series get when several runs are overlaid.
#[derive(Debug, Clone)]
pub struct Run {
    pub label: String,
    pub rows: Vec<Row>,
}

/// Reads each CSV. `labels` is empty (labels default to the file's `run_id`, else its file stem) or
/// has one label per path.
pub fn load_runs(paths: &[PathBuf], labels: &[String]) -> Result<Vec<Run>, ReportError> {
    if paths.is_empty() {
        return Err(ReportError::Input("no results CSV given".into()));
    }
    if !labels.is_empty() && labels.len() != paths.len() {
        return Err(ReportError::Input(format!(
            "--label: got {} labels for {} CSV files (give one per file, in the same order, or none)",
            labels.len(),
            paths.len()
        )));
    }
    let mut runs = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let rows = read_checked(p)?;
        let label = match labels.get(i) {
            Some(l) => l.clone(),
            None => rows
                .first()
                .map(|r| r.run_id.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
        };
        runs.push(Run { label, rows });
    }
    // Two runs with the same run_id (e.g. the same suite on two GPUs) would be indistinguishable.
    for i in 0..runs.len() {
        if runs[..i].iter().any(|r| r.label == runs[i].label) {
            runs[i].label = format!("{} ({})", runs[i].label, i + 1);
        }
    }
    Ok(runs)
}

/// The measured columns that can never be negative or non-finite in a row we wrote: times (ms),
/// throughputs (TFLOPS), MFU, spread (cv), bandwidth, scaling efficiency. A CSV holding such a value
/// was edited or corrupted; reports refuse it rather than bolding −5 ms as the best time.
pub const CHECKED_COLUMNS: [&str; 9] = ["ms_median", "ms_p20", "ms_p80", "cv", "tflops", "tflops_per_gpu", "mfu", "bandwidth_gbps", "scaling_eff"];

fn checked_values(r: &Row) -> [Option<f64>; 9] {
    [r.ms_median, r.ms_p20, r.ms_p80, r.cv, r.tflops, r.tflops_per_gpu, r.mfu, r.bandwidth_gbps, r.scaling_eff]
}

/// Reads a results CSV for a report: [`read_rows`], then every value of [`CHECKED_COLUMNS`] must be
/// finite and ≥ 0 (whatever the row's status). The first offender is an input error naming the file,
/// the line and the column.
pub fn read_checked(path: &Path) -> Result<Vec<Row>, ReportError> {
    check_report_columns(path)?;
    let rows = read_rows(path)?;
    let bad = rows.iter().enumerate().find_map(|(i, r)| {
        let j = checked_values(r).iter().position(|v| v.is_some_and(|x| !x.is_finite() || x < 0.0))?;
        Some((i, j, checked_values(r)[j].unwrap_or_default()))
    });
    let Some((index, column, value)) = bad else { return Ok(rows) };
    // Line numbers from the CSV reader itself (a quoted cell may span lines).
    let line = record_lines(path).ok().and_then(|l| l.get(index).copied()).unwrap_or(index as u64 + 2);
    Err(ReportError::Input(format!(
        "{}: line {line}: column {}: {value} is {}; times, throughputs and ratios must be finite and ≥ 0",
        path.display(),
        CHECKED_COLUMNS[column],
        if value.is_finite() { "negative" } else { "not a finite number" }
    )))
}

/// Columns every report reads (a row's identity, its status and its timing). Rows fill a missing
/// column with nothing, so without this check a CSV without `ms_median` read as a run where nothing
/// was timed (issue 30); columns appended to rows later (with defaults) stay optional, so older runs
/// still load.
pub const REPORT_COLUMNS: [&str; 10] = ["run_id", "case_id", "kind", "backend", "mask", "seqlen", "status", "ms_median", "ms_p20", "ms_p80"];

/// A CSV lacking one of [`REPORT_COLUMNS`] is an input error naming the first missing column.
fn check_report_columns(path: &Path) -> Result<(), ReportError> {
    let Ok(mut rdr) = csv::ReaderBuilder::new().has_headers(true).from_path(path) else { return Ok(()) };
    let Ok(header) = rdr.headers() else { return Ok(()) };
    if header.is_empty() || (header.len() == 1 && header[0].trim().is_empty()) {
        return Ok(()); // an empty file: the commands say "no rows" themselves
    }
    let got: Vec<&str> = header.iter().map(|h| h.trim_start_matches('\u{feff}').trim()).collect();
    match REPORT_COLUMNS.iter().find(|c| !got.contains(c)) {
        Some(c) => Err(ReportError::Input(format!(
            "{}: line 1: no `{c}` column (the header must name {}): not an attnbench results CSV",
            path.display(),
            REPORT_COLUMNS.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The line each data record starts on, in file order.
fn record_lines(path: &Path) -> Result<Vec<u64>, csv::Error> {
    let text = crate::results::csvio::lf_lines(std::fs::read_to_string(path)?);
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let mut out = Vec::new();
    let mut rec = csv::StringRecord::new();
    while rdr.read_record(&mut rec)? {
        out.push(rec.position().map(|p| p.line()).unwrap_or(0));
    }
    Ok(out)
}

/// What a table cell or a plot's y value shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Metric {
    /// TFLOPS (10¹² FLOP/s); per GPU for context-parallel rows.
    Tflops,
    /// Median time of one call, milliseconds.
    Ms,
    /// Peak memory above the pre-call baseline, bytes (shown in MiB/GiB).
    Mem,
    /// Model FLOP utilisation against the device's dense peak (shown in percent).
    Mfu,
    /// Energy of one call, joules (`energy_j`: average power over the timed repeats × median time).
    Energy,
    /// TFLOPS per watt (`tflops_per_watt`; 10¹² FLOP per joule).
    #[value(name = "tflops-per-watt")]
    TflopsPerWatt,
}

impl Metric {
    /// The number for `row`, or `None` when the row is not `ok` or the column is empty.
    pub fn value(self, row: &Row) -> Option<f64> {
        if row.status != Status::Ok {
            return None;
        }
        let v = match self {
            Metric::Tflops => match row.kind {
                CaseKind::Kernel => row.tflops,
                CaseKind::Cp | CaseKind::Simulated => row.tflops_per_gpu.or(row.tflops),
            },
            Metric::Ms => row.ms_median,
            Metric::Mem => row.peak_mem_bytes.map(|b| b as f64),
            Metric::Mfu => row.mfu,
            Metric::Energy => row.energy_j,
            Metric::TflopsPerWatt => row.tflops_per_watt,
        };
        v.filter(|x| x.is_finite())
    }

    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Tflops | Metric::Mfu | Metric::TflopsPerWatt)
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Tflops => "tflops",
            Metric::Ms => "ms",
            Metric::Mem => "mem",
            Metric::Mfu => "mfu",
            Metric::Energy => "energy",
            Metric::TflopsPerWatt => "tflops-per-watt",
        }
    }

    /// Column/axis caption with the unit.
    pub fn caption(self, kind: CaseKind) -> &'static str {
        match (self, kind) {
            (Metric::Tflops, CaseKind::Kernel) => "TFLOPS",
            (Metric::Tflops, _) => "TFLOPS/GPU",
            (Metric::Ms, _) => "median ms",
            (Metric::Mem, _) => "peak memory",
            (Metric::Mfu, _) => "MFU %",
            (Metric::Energy, _) => "energy per call (J)",
            (Metric::TflopsPerWatt, _) => "TFLOPS/W",
        }
    }

    /// The cell text of a value.
    pub fn format(self, v: f64) -> String {
        match self {
            Metric::Tflops => fmt_sig(v),
            Metric::Ms => fmt_sig(v),
            Metric::Mem => fmt_bytes(v),
            Metric::Mfu => format!("{:.1}", v * 100.0),
            Metric::Energy | Metric::TflopsPerWatt => fmt_sig(v),
        }
    }
}

/// The one-letter mark for a case that has no number: X unsupported, E out of memory (LongCA-bench's
/// letters), W wrong result, T timeout, ! any other error. `None` for `ok`.
pub fn mark(status: Status) -> Option<&'static str> {
    match status {
        Status::Ok => None,
        Status::Unsupported => Some("X"),
        Status::Oom => Some("E"),
        Status::Wrong => Some("W"),
        Status::Timeout => Some("T"),
        Status::Error => Some("!"),
    }
}

/// Appended to a number whose row was throttled (issue 33: clocks limited by a power or thermal
/// limit, or dropped, while it was timed — its `throttle` column says which), in tables and plots.
pub const THROTTLE_MARK: &str = "†";
/// What [`THROTTLE_MARK`] means, added to a table's or figure's subtitle when one of its rows has it.
pub const THROTTLE_LEGEND: &str =
    "† throttled while timed (power/thermal clock limit or SM clock drop; see the throttle column): slower than the kernel itself";

/// The legend of the marks, for table footers and HTML.
pub const MARK_LEGEND: &str = "X unsupported · E out of memory · W wrong result · T timeout · ! error";

/// `1024` → `1K`, `131072` → `128K`, `1048576` → `1M`; other numbers as they are.
pub fn fmt_seqlen(s: usize) -> String {
    if s >= 1 << 20 && s.is_multiple_of(1 << 20) {
        format!("{}M", s >> 20)
    } else if s >= 1024 && s.is_multiple_of(1024) {
        format!("{}K", s >> 10)
    } else {
        s.to_string()
    }
}

/// Bytes with a binary unit, three significant digits (`512 MiB`, `1.50 GiB`).
pub fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{} {}", fmt_sig(v), UNITS[u])
    }
}

/// Three significant digits without exponent for the ranges benchmarks produce (0.00123 … 99900).
pub fn fmt_sig(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        let digits = (-a.log10()).floor() as usize + 3;
        format!("{v:.digits$}")
    }
}

/// Groups items by a key, groups in order of first appearance, items in input order.
pub fn group_ordered<'a, T, K: PartialEq + Clone>(items: impl IntoIterator<Item = &'a T>, key: impl Fn(&T) -> K) -> Vec<(K, Vec<&'a T>)>
where
    T: 'a,
{
    let mut out: Vec<(K, Vec<&T>)> = Vec::new();
    for it in items {
        let k = key(it);
        match out.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(it),
            None => out.push((k, vec![it])),
        }
    }
    out
}

/// Distinct values in order of first appearance.
pub fn distinct<T: PartialEq + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for it in items {
        if !out.contains(&it) {
            out.push(it);
        }
    }
    out
}

/// The label of each CP row as a series over world size (a table's row, a plot's line): its
/// `strategy_label`, except that the rows of one strategy with the same option *names* and one option
/// set per world size form one series, whose options that change with W list their values in W
/// order: `double-ring[inner_ring=2/4/4/8]` (the default inner ring follows W), LoongTrain as
/// published, `usp[inner_ring=1/2/2/4;ulysses_degree=8]`. Where one world size has two option sets
/// (usp with U = 2 and U = 4) each keeps its own label. Rows whose `apart[i]` differ (run, measured
/// or projected) never share a series. Returned in the order of `rows`.
pub fn cp_series_labels(rows: &[&Row], apart: &[String]) -> Vec<String> {
    let pairs = |p: &str| -> Vec<(String, String)> {
        p.split(';')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split_once('=').map_or((kv.to_string(), String::new()), |(k, v)| (k.to_string(), v.to_string())))
            .collect()
    };
    let names = |p: &str| pairs(p).into_iter().map(|(k, _)| k).collect::<Vec<_>>().join(";");
    let mut out: Vec<String> = rows.iter().map(|r| r.strategy_label()).collect();
    let index: Vec<usize> = (0..rows.len()).collect();
    for ((_, strategy, _), members) in group_ordered(index.iter(), |&i| (apart[i].clone(), rows[i].strategy.clone(), names(&rows[i].strategy_params))) {
        let mut by_w: Vec<(usize, String)> = distinct(members.iter().map(|&&i| (rows[i].world_size, rows[i].strategy_params.clone())));
        by_w.sort();
        let one_per_w = by_w.windows(2).all(|w| w[0].0 != w[1].0);
        if !one_per_w || distinct(by_w.iter().map(|(_, p)| p.clone())).len() < 2 {
            continue;
        }
        let per_w: Vec<Vec<(String, String)>> = by_w.iter().map(|(_, p)| pairs(p)).collect();
        let opts: Vec<String> = per_w[0]
            .iter()
            .enumerate()
            .map(|(i, (k, _))| {
                let values = per_w.iter().map(|kv| kv[i].1.clone()).collect::<Vec<_>>();
                let shown = if distinct(values.iter().cloned()).len() == 1 { values[0].clone() } else { values.join("/") };
                format!("{k}={shown}")
            })
            .collect();
        let merged = crate::case::strategy_label(&strategy, &opts.join(";"));
        for &&i in &members {
            out[i] = merged.clone();
        }
    }
    out
}

/// What a figure or table group holds fixed: everything that identifies a case except the axes
/// (backend/strategy, length, world size) and the pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKey {
    pub mask: String,
    pub mask_params: String,
    pub dtype: String,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    pub batch: usize,
    pub device: String,
}

impl GroupKey {
    pub fn of(r: &Row) -> GroupKey {
        GroupKey {
            mask: r.mask.clone(),
            mask_params: r.mask_params.clone(),
            dtype: r.dtype.clone(),
            heads_q: r.heads_q,
            heads_kv: r.heads_kv,
            head_dim: r.head_dim,
            batch: r.batch,
            device: r.device.clone(),
        }
    }

    /// `causal_document [docs=pile;seed=42]`
    pub fn pattern(&self) -> String {
        if self.mask_params.is_empty() {
            self.mask.clone()
        } else {
            format!("{} [{}]", self.mask, self.mask_params)
        }
    }

    /// `bf16 · heads 64:8 · D 128 · NVIDIA H100 80GB HBM3` (batch only when not 1).
    pub fn setup(&self) -> String {
        let b = if self.batch == 1 { String::new() } else { format!(" · batch {}", self.batch) };
        format!("{} · heads {}:{} · D {}{b} · {}", self.dtype, self.heads_q, self.heads_kv, self.head_dim, self.device)
    }

    /// A file-name-safe slug of the pattern (with params hashed into it when present).
    pub fn slug(&self) -> String {
        let mut s = slug(&self.mask);
        if !self.mask_params.is_empty() {
            s.push('-');
            s.push_str(&slug(&self.mask_params));
        }
        s
    }
}

/// Lower-case ASCII letters, digits, `-` and `_`; anything else becomes `-`.
pub fn slug(s: &str) -> String {
    let t: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c.to_ascii_lowercase() } else { '-' }).collect();
    let mut out = String::new();
    for c in t.chars() {
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out.trim_matches('-').to_string()
}

/// A short, stable, human name of a row's case, e.g. `sdpa-flash causal S=4K h64:8 d128 bf16 fwd`
/// or `ring×8 (varlen-flash) causal S=64K …`; used as the benchmark name in exports.
pub fn row_label(r: &Row) -> String {
    let what = if r.strategy.is_empty() { r.backend.clone() } else { format!("{}×{} ({})", r.strategy_label(), r.world_size, r.backend) };
    let p = if r.mask_params.is_empty() { String::new() } else { format!("[{}]", r.mask_params) };
    let b = if r.batch == 1 { String::new() } else { format!(" b{}", r.batch) };
    let sim = if r.kind == CaseKind::Simulated { " (projected)" } else { "" };
    format!("{what} {}{p} S={}{b} h{}:{} d{} {} {} {}{sim}", r.mask, fmt_seqlen(r.seqlen), r.heads_q, r.heads_kv, r.head_dim, r.dtype, r.pass, r.device)
}

/// Order passes fwd, bwd, fwdbwd, then anything else.
pub fn pass_rank(p: &str) -> usize {
    match p {
        "fwd" => 0,
        "bwd" => 1,
        "fwdbwd" => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Case, DType, DeviceKind, HeadLayout};
    use crate::flops::Pass;

    #[test]
    fn cp_series_follow_an_option_that_changes_with_world_size() {
        let row = |strategy: &str, w: usize, params: &str| {
            let c = Case::kernel("sliced", "full", Default::default(), 1024, HeadLayout { q: 8, kv: 8 }, 64, DType::Fp32, Pass::Fwd, DeviceKind::Cpu);
            let mut r = Row::for_case("r", &c, "cpu");
            (r.strategy, r.world_size, r.strategy_params) = (strategy.into(), w, params.into());
            r
        };
        let rows = [
            row("double-ring", 8, "inner_ring=2"),
            row("double-ring", 16, "inner_ring=4"),
            row("double-ring", 64, "inner_ring=8"),
            row("usp", 8, "inner_ring=1;ulysses_degree=8"),
            row("usp", 16, "inner_ring=2;ulysses_degree=8"),
            row("usp", 8, "ulysses_degree=2"),
            row("usp", 8, "ulysses_degree=4"),
            row("usp", 16, "ulysses_degree=4"),
            row("ring-p2p", 8, ""),
            row("ring-p2p", 16, ""),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let labels = cp_series_labels(&refs, &vec![String::new(); refs.len()]);
        assert_eq!(labels[..3], ["double-ring[inner_ring=2/4/8]"; 3]);
        assert_eq!(labels[3..5], ["usp[inner_ring=1/2;ulysses_degree=8]"; 2]);
        // Two option sets at one world size stay apart.
        assert_eq!(labels[5..8], ["usp[ulysses_degree=2]", "usp[ulysses_degree=4]", "usp[ulysses_degree=4]"]);
        assert_eq!(labels[8..], ["ring-p2p"; 2]);
        // Rows kept apart (two runs) are never merged into one series.
        let apart = cp_series_labels(&refs[..2], &["8".to_string(), "16".to_string()]);
        assert_eq!(apart, ["double-ring[inner_ring=2]", "double-ring[inner_ring=4]"]);
    }

    #[test]
    fn metric_never_reads_a_failed_row() {
        let c = Case::kernel("naive", "full", Default::default(), 4096, HeadLayout { q: 4, kv: 4 }, 64, DType::Bf16, Pass::Fwd, DeviceKind::Cuda);
        let mut r = Row::for_case("r", &c, "NVIDIA H100");
        r.status = Status::Oom;
        r.ms_median = Some(9999.0); // a bogus number a hand-edited CSV might carry
        r.tflops = Some(12345.0);
        r.peak_mem_bytes = Some(1);
        for m in [Metric::Tflops, Metric::Ms, Metric::Mem, Metric::Mfu] {
            assert_eq!(m.value(&r), None, "{m:?}");
        }
        r.status = Status::Ok;
        assert_eq!(Metric::Tflops.value(&r), Some(12345.0));
        assert_eq!(mark(Status::Oom), Some("E"));
        assert_eq!(mark(Status::Unsupported), Some("X"));
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_seqlen(1024), "1K");
        assert_eq!(fmt_seqlen(131072), "128K");
        assert_eq!(fmt_seqlen(1 << 20), "1M");
        assert_eq!(fmt_seqlen(3000), "3000");
        assert_eq!(fmt_bytes(512.0 * 1024.0 * 1024.0), "512 MiB");
        assert_eq!(fmt_bytes(1.5 * 1024.0 * 1024.0 * 1024.0), "1.50 GiB");
        assert_eq!(fmt_sig(0.012345), "0.0123");
        assert_eq!(fmt_sig(412.4), "412");
        assert_eq!(slug("docs=pile;seed=42"), "docs-pile-seed-42");
    }
}

/// How CP rows are grouped into one scaling figure/table: by total tokens (strong scaling), or by
/// tokens per rank when the run scaled the sequence with the world size (weak scaling, LongCA-bench's
/// "8K per GPU"). Chosen per set of rows: whichever gives fewer groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpLen {
    Total,
    PerRank,
}

impl CpLen {
    pub fn choose(rows: &[&Row]) -> CpLen {
        let total = distinct(rows.iter().map(|r| r.seqlen)).len();
        let per = distinct(rows.iter().map(|r| r.seqlen / r.world_size.max(1))).len();
        if per < total {
            CpLen::PerRank
        } else {
            CpLen::Total
        }
    }

    pub fn key(self, r: &Row) -> usize {
        match self {
            CpLen::Total => r.seqlen,
            CpLen::PerRank => r.seqlen / r.world_size.max(1),
        }
    }

    /// `S=8K` or `S=8K/GPU`.
    pub fn label(self, len: usize) -> String {
        match self {
            CpLen::Total => format!("S={}", fmt_seqlen(len)),
            CpLen::PerRank => format!("S={}/GPU", fmt_seqlen(len)),
        }
    }
}
