//! Suite → plan: parse and validate the TOML (every error names file, line and key), expand each grid
//! into cases, apply include/exclude and `--filter`, build each distinct mask once to get exact area and
//! FLOPs, and ask each backend/strategy up front whether it supports the case.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::filter::Filter;
use super::schema::{value_to_param, CaseFilter, Grid, PatternSpec, SuiteFile};
use crate::case::{Case, CaseKind, CpOptions, DType, DeviceKind, HeadLayout};
use crate::flops::{pass_flops, Pass};
use crate::mask::{build_pattern, HeadMasks, Params};
use crate::measure::MeasureSettings;

/// A suite problem, located: `file:line: key: message`.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}: {msg}")]
pub struct SuiteError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub msg: String,
}

/// A case with what the plan knows before running it.
#[derive(Debug, Clone)]
pub struct PlannedCase {
    pub case: Case,
    /// FLOPs of the case's pass (all heads, batch).
    pub flops: f64,
    /// Attended pairs per head (mean over head groups).
    pub area: f64,
    pub density: f64,
    /// Distinct head-group masks (1 unless the pattern is per-head): sizes the memory estimate.
    pub mask_groups: usize,
    /// `Err(reason)` when the backend/strategy says up front it cannot run the case.
    pub support: Result<(), String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub file: PathBuf,
    pub sha256: String,
    /// The suite file's text (recorded in meta.json so a refused resume can say what changed).
    pub text: String,
    pub settings: MeasureSettings,
    pub cases: Vec<PlannedCase>,
    /// Workers of the `ext:` backends, relative programs resolved against the suite's folder.
    pub external: crate::backend::external::ExternalConfig,
}

/// Answers whether a backend (kernel case) or strategy (CP case) exists and supports a case. The
/// runner passes the real registries; tests can pass their own.
pub trait SupportOracle {
    /// `None` if the backend name is unknown.
    fn backend_known(&self, name: &str) -> bool;
    fn strategy_known(&self, name: &str) -> bool;
    fn known_backends(&self) -> Vec<String>;
    fn known_strategies(&self) -> Vec<String>;
    fn supports(&self, case: &Case, masks: &HeadMasks) -> Result<(), String>;
}

struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        if span.start == 0 && span.end == 0 {
            return 0;
        }
        self.text[..span.start.min(self.text.len())].matches('\n').count() + 1
    }

    fn err<T>(&self, span: &Range<usize>, key: &str, msg: impl Into<String>) -> Result<T, SuiteError> {
        Err(SuiteError { file: self.file.to_string(), line: self.line(span), key: key.to_string(), msg: msg.into() })
    }
}

/// Reads, validates and expands a suite file. Nothing is written anywhere.
pub fn load(path: &Path, filter: Option<&Filter>, oracle: &dyn SupportOracle) -> Result<Plan, SuiteError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| SuiteError { file: file.clone(), line: 0, key: "file".into(), msg: e.to_string() })?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| SuiteError { file: file.clone(), line: 0, key: "file".into(), msg: "not UTF-8 text".into() })?;
    let loc = Locator { file: &file, text: &text };
    let suite: SuiteFile = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| loc.line(&s)).unwrap_or(0);
        let msg = e.message().replace('\n', " ");
        SuiteError { file: file.clone(), line, key: "toml".into(), msg }
    })?;
    validate_settings(&suite.measure, &loc)?;
    let filters_in = suite.include.iter().map(|f| compile_filter(f, &loc, "include", oracle)).collect::<Result<Vec<_>, _>>()?;
    let filters_out = suite.exclude.iter().map(|f| compile_filter(f, &loc, "exclude", oracle)).collect::<Result<Vec<_>, _>>()?;
    if suite.grid.get_ref().is_empty() {
        return loc.err(&suite.grid.span(), "grid", "at least one [[grid]] is required");
    }

    let external = suite.external.clone().relative_to(path.parent());
    let mut cases = Vec::new();
    for (gi, grid) in suite.grid.get_ref().iter().enumerate() {
        cases.extend(expand_grid(grid, gi, &loc, oracle, &external)?);
    }
    let mut seen = HashSet::new();
    cases.retain(|c: &Case| seen.insert(c.case_id()));
    cases.retain(|c| (filters_in.is_empty() || filters_in.iter().any(|f| f.matches(c))) && !filters_out.iter().any(|f| f.matches(c)));
    if let Some(f) = filter {
        cases.retain(|c| f.matches(c));
    }
    // Memory-sane order: small to large lengths, so an OOM at length L of a backend is seen before the
    // larger lengths it lets us skip; and shape-major (issue 26): every backend, mask and pass of one
    // input shape in a row, so the worker draws the inputs once per shape and shares them.
    cases.sort_by(|a, b| {
        let key = |c: &Case| {
            (
                (c.kind, c.strategy.clone(), c.device, c.seqlen, c.world_size, c.dtype, c.heads, c.head_dim, c.batch),
                (c.backend.clone(), c.pattern.clone(), c.params.clone(), c.pass),
            )
        };
        key(a).cmp(&key(b))
    });

    // Build each distinct mask once (exact area, FLOPs, support checks).
    let mut masks: HashMap<(String, Params, usize), HeadMasks> = HashMap::new();
    let mut planned = Vec::with_capacity(cases.len());
    for case in cases {
        let key = (case.pattern.clone(), case.params.clone(), case.seqlen);
        if !masks.contains_key(&key) {
            let m = build_pattern(&case.pattern, case.seqlen, &case.params).map_err(|e| SuiteError {
                file: file.clone(),
                line: 0,
                key: format!("pattern {} at seqlen {}", case.pattern, case.seqlen),
                msg: e.to_string(),
            })?;
            masks.insert(key.clone(), m);
        }
        let m = &masks[&key];
        let support = m.check_heads(case.heads.q).map_err(|e| e.to_string()).and_then(|_| oracle.supports(&case, m));
        let flops = pass_flops(m.area_over_heads(case.heads.q), case.head_dim, case.batch, case.pass);
        planned.push(PlannedCase { flops, area: m.mean_area(), density: m.density(), mask_groups: m.groups.len(), support, case });
    }
    let name = suite.name.clone().unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "suite".into()));
    Ok(Plan { name, file: path.to_path_buf(), sha256: hex(&Sha256::digest(&bytes)), text, settings: suite.measure, cases: planned, external })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where each `[measure]` key the user wrote is, so an error names the key they wrote and its line.
#[derive(serde::Deserialize)]
struct MeasureSpans {
    #[serde(default)]
    measure: BTreeMap<String, Spanned<toml::Value>>,
}

fn validate_settings(m: &MeasureSettings, loc: &Locator) -> Result<(), SuiteError> {
    let spans = toml::from_str::<MeasureSpans>(loc.text).map(|s| s.measure).unwrap_or_default();
    let at = |key: &str| -> Range<usize> { spans.get(key).map(|v| v.span()).unwrap_or(0..0) };
    if m.repeats == 0 {
        return loc.err(&at("repeats"), "measure.repeats", "must be at least 1");
    }
    if let Some(t) = m.target_spread {
        if !(t > 0.0 && t < 1.0) {
            return loc.err(&at("target_spread"), "measure.target_spread", format!("must be a fraction in (0, 1), e.g. 0.01 for 1 %, got {t}"));
        }
    }
    // `max_repeats` bounds the adaptive mode and never goes below `repeats` (see measure::clock); only
    // a max_repeats the user wrote below their repeats is a contradiction, and it is theirs to fix.
    if spans.contains_key("max_repeats") && m.max_repeats < m.repeats {
        return loc.err(&at("max_repeats"), "measure.max_repeats", format!("must be ≥ repeats ({}), got {}", m.repeats, m.max_repeats));
    }
    if m.budget_s.is_nan() || m.budget_s <= 0.0 {
        return loc.err(&at("budget_s"), "measure.budget_s", format!("must be > 0 seconds, got {}", m.budget_s));
    }
    if !(m.timeout_s > 0.0 && m.timeout_s <= 1e9) {
        return loc.err(&at("timeout_s"), "measure.timeout_s", format!("must be > 0 and at most 1e9 seconds, got {}", m.timeout_s));
    }
    if let Some((key, msg)) = m.bounds_error() {
        return loc.err(&at(key), &format!("measure.{key}"), msg);
    }
    Ok(())
}

fn nonempty<'a, T>(loc: &Locator, axis: &'a Spanned<Vec<T>>, key: &str) -> Result<&'a Vec<T>, SuiteError> {
    if axis.get_ref().is_empty() {
        return loc.err(&axis.span(), key, "axis is empty: give at least one value");
    }
    Ok(axis.get_ref())
}

fn positive(loc: &Locator, axis: &Spanned<Vec<i64>>, key: &str) -> Result<Vec<usize>, SuiteError> {
    let v = nonempty(loc, axis, key)?;
    v.iter().map(|&x| if x >= 1 { Ok(x as usize) } else { loc.err(&axis.span(), key, format!("must be ≥ 1, got {x}")) }).collect()
}

fn parsed<T: std::str::FromStr<Err = String>>(loc: &Locator, axis: &Spanned<Vec<String>>, key: &str) -> Result<Vec<T>, SuiteError> {
    nonempty(loc, axis, key)?.iter().map(|s| s.parse::<T>().or_else(|e| loc.err(&axis.span(), key, e))).collect()
}

fn to_params(loc: &Locator, span: &Range<usize>, key: &str, map: &BTreeMap<String, toml::Value>) -> Result<Params, SuiteError> {
    let mut p = Params::new();
    for (k, v) in map {
        match value_to_param(v) {
            Some(s) => p = p.set(k, s),
            None => return loc.err(span, &format!("{key}.{k}"), "expected a string, number, boolean or array of them"),
        }
    }
    Ok(p)
}

fn expand_grid(
    g: &Grid,
    gi: usize,
    loc: &Locator,
    oracle: &dyn SupportOracle,
    external: &crate::backend::external::ExternalConfig,
) -> Result<Vec<Case>, SuiteError> {
    let k = |name: &str| format!("grid[{gi}].{name}");
    let seqlens = positive(loc, &g.seqlens, &k("seqlens"))?;
    let batches = positive(loc, &g.batch, &k("batch"))?;
    let head_dims = positive(loc, &g.head_dims, &k("head_dims"))?;
    let heads: Vec<HeadLayout> = parsed(loc, &g.heads, &k("heads"))?;
    let dtypes: Vec<DType> = parsed(loc, &g.dtypes, &k("dtypes"))?;
    let passes: Vec<Pass> = parsed(loc, &g.passes, &k("passes"))?;
    let device: DeviceKind = g.device.get_ref().parse().or_else(|e| loc.err(&g.device.span(), &k("device"), e))?;

    let mut patterns = Vec::new();
    for spec in nonempty(loc, &g.patterns, &k("patterns"))? {
        let (name, params) = match spec {
            PatternSpec::Name(n) => (n.clone(), Params::new()),
            PatternSpec::WithParams { name, params, .. } => (name.clone(), to_params(loc, &g.patterns.span(), &k("patterns"), params)?),
        };
        let pat = crate::mask::find_pattern(&name).or_else(|e| loc.err(&g.patterns.span(), &k("patterns"), e.to_string()))?;
        let keys: Vec<&str> = pat.params.iter().map(|s| s.key).collect();
        params.check_known(&name, &keys).or_else(|e| loc.err(&g.patterns.span(), &k("patterns"), e.to_string()))?;
        // Build once per length now, so a bad value (negative window, prefix > seqlen, doc_lens not
        // summing to seqlen, …) is reported with the line of the axis that holds it.
        for &s in &seqlens {
            let total = if g.seqlen_per_rank {
                g.world_sizes.as_ref().map(|w| w.get_ref().iter().map(|&x| s * x.max(1) as usize).collect()).unwrap_or_else(|| vec![s])
            } else {
                vec![s]
            };
            for t in total {
                if let Err(e) = build_pattern(&name, t, &params) {
                    return loc.err(&g.patterns.span(), &format!("{}[{name}] at seqlen {t}", k("patterns")), e.to_string());
                }
            }
        }
        patterns.push((name, params));
    }

    let is_cp = g.strategies.is_some() || g.world_sizes.is_some();
    let backends: Vec<String> = match &g.backends {
        Some(b) => {
            let v = nonempty(loc, b, &k("backends"))?.clone();
            for name in &v {
                if !oracle.backend_known(name) {
                    return loc.err(&b.span(), &k("backends"), format!("unknown backend `{name}` (known: {})", oracle.known_backends().join(", ")));
                }
                if let Some(ext) = crate::backend::external::config::adapter_name(name) {
                    external.command(ext).or_else(|e| loc.err(&b.span(), &k("backends"), e))?;
                }
            }
            v
        }
        None if is_cp => vec!["sliced".to_string()],
        None => return loc.err(&g.patterns.span(), &k("backends"), "a kernel grid needs `backends = [...]`"),
    };
    let (kind, strategies, world_sizes) = if is_cp {
        let Some(s) = &g.strategies else { return loc.err(&g.patterns.span(), &k("strategies"), "a CP grid with world_sizes needs `strategies = [...]`") };
        let Some(w) = &g.world_sizes else { return loc.err(&s.span(), &k("world_sizes"), "a CP grid needs `world_sizes = [...]`") };
        for name in nonempty(loc, s, &k("strategies"))? {
            if !oracle.strategy_known(name) {
                return loc.err(&s.span(), &k("strategies"), format!("unknown strategy `{name}` (known: {})", oracle.known_strategies().join(", ")));
            }
        }
        (CaseKind::Cp, s.get_ref().clone(), positive(loc, w, &k("world_sizes"))?)
    } else {
        (CaseKind::Kernel, vec![String::new()], vec![1])
    };
    let cp_options = if is_cp {
        match super::strategy_params::expand(&g.strategy_params, &strategies) {
            Ok(o) => o,
            Err((key, msg)) => return loc.err(&g.seqlens.span(), &k(&format!("strategy_params.{key}")), msg),
        }
    } else if let Some(key) = g.strategy_params.keys().next() {
        return loc.err(&g.seqlens.span(), &k(&format!("strategy_params.{key}")), "strategy options need a CP grid (strategies and world_sizes)");
    } else {
        BTreeMap::from([(String::new(), vec![CpOptions::default()])])
    };

    let mut out = Vec::new();
    for (pattern, params) in &patterns {
        for &s in &seqlens {
            for &batch in &batches {
                for &h in &heads {
                    for &d in &head_dims {
                        for &dtype in &dtypes {
                            for &pass in &passes {
                                for backend in &backends {
                                    for strategy in &strategies {
                                        for (&cp, &ws) in cp_options[strategy].iter().flat_map(|o| world_sizes.iter().map(move |w| (o, w))) {
                                            let seqlen = if is_cp && g.seqlen_per_rank { s * ws } else { s };
                                            out.push(Case {
                                                kind,
                                                backend: backend.clone(),
                                                strategy: strategy.clone(),
                                                pattern: pattern.clone(),
                                                params: params.clone(),
                                                seqlen,
                                                batch,
                                                heads: h,
                                                head_dim: d,
                                                dtype,
                                                pass,
                                                device,
                                                world_size: ws,
                                                cp,
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if is_cp {
        check_cp_grid(&out, loc, g.world_sizes.as_ref().map(|w| w.span()).unwrap_or(0..0), &k("world_sizes"))?;
    }
    Ok(out)
}

/// Most ranks a suite's CP case may launch (`mpirun -np` on this allocation; `simulate` projects
/// beyond with virtual ranks).
pub const MAX_SUITE_WORLD: usize = 4096;

/// Refuses, at plan time and naming `world_sizes`, a CP case that `attnbench cp` would refuse: more
/// ranks than [`MAX_SUITE_WORLD`], a sequence that cannot be split into the ranks' chunks (more
/// ranks than tokens), or a rank grid the strategy cannot form — checked without building the
/// schedule. Otherwise the case failed inside mpirun with its reason lost (or launched 100 000 ranks).
fn check_cp_grid(cases: &[Case], loc: &Locator, span: Range<usize>, key: &str) -> Result<(), SuiteError> {
    for c in cases {
        let ws = c.world_size;
        if ws > MAX_SUITE_WORLD {
            return loc.err(&span, key, format!("{ws} ranks: at most {MAX_SUITE_WORLD} per CP case (use `attnbench simulate` to project larger worlds)"));
        }
        let Ok(def) = crate::cp::registry::find_strategy(&c.strategy) else { continue };
        let sharding = c.cp.sharding.unwrap_or(def.default_sharding);
        if let Err(e) = crate::cp::shard::Shard::new(sharding, c.seqlen, ws) {
            return loc.err(&span, key, format!("{} at world size {ws}: {e}", c.strategy));
        }
        if let Err(e) = (def.engine)(ws, &crate::cp::setup::layout(c), &c.cp) {
            return loc.err(&span, key, format!("{} at world size {ws}: {e}", c.strategy));
        }
    }
    Ok(())
}

fn compile_filter(f: &Spanned<CaseFilter>, loc: &Locator, key: &str, oracle: &dyn SupportOracle) -> Result<Filter, SuiteError> {
    let c = f.get_ref();
    if let Some(b) = &c.backend {
        if !oracle.backend_known(b) {
            return loc.err(&f.span(), &format!("{key}.backend"), format!("unknown backend `{b}`"));
        }
    }
    if let Some(p) = &c.pattern {
        crate::mask::find_pattern(p).or_else(|e| loc.err(&f.span(), &format!("{key}.pattern"), e.to_string()))?;
    }
    if let Some(p) = &c.pass {
        p.parse::<Pass>().or_else(|e| loc.err(&f.span(), &format!("{key}.pass"), e))?;
    }
    if let Some(d) = &c.dtype {
        d.parse::<DType>().or_else(|e| loc.err(&f.span(), &format!("{key}.dtype"), e))?;
    }
    Ok(Filter::from_case_filter(c))
}
