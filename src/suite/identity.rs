//! Resume only what is the same run. A row's numbers depend on the case (its `case_id`: what is
//! computed) and on how it was measured: the `[measure]` settings and the machine and software that
//! ran it. The second part is hashed into a `measure_id` that `meta.json` and every row carry;
//! `case_id` stays what is computed, so `compare` still joins runs made with different settings.
//!
//! `--resume` continues a run only when the suite file and the measurement setup are unchanged; else
//! it refuses with one line saying what changed, key by key. `--resume --new-segment` accepts the
//! change as a new segment of the run: recorded in `meta.json`, carried by every new row, and a case
//! counts as done only if it has a row with the current `measure_id` (so a changed `repeats` re-runs
//! every case; an added seqlen runs only the new cases). A different suite (another `name`) is never
//! resumed into a folder.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::plan::Plan;
use crate::error::BadInput;
use crate::measure::MeasureSettings;
use crate::results::meta::MetaError;
use crate::results::run_folder::MetaDecision;
use crate::results::{csvio::peek_rows, RunMeta, Segment};

/// What an `attnbench run` invocation asks of its folder.
pub struct RunRequest<'a> {
    pub out_dir: &'a Path,
    pub resume: bool,
    pub new_segment: bool,
    /// Full command line, recorded in meta.json.
    pub command_line: &'a str,
}

/// Decides what `meta.json` this invocation runs under (the run folder writes it when it changes):
/// - a new run: a fresh meta, segment 1;
/// - `--resume` of the same suite and setup: the existing meta, untouched;
/// - `--resume` after a change: refused (one line listing the changes, exit 2), or with
///   `--new-segment` the next segment, recorded;
/// - `--resume` of another suite: refused;
/// - `--resume` where meta.json is missing, empty or unreadable (a full disk at start used to leave a
///   0-byte one): rewritten, if the folder has no rows yet or every row is of this suite and setup;
///   otherwise refused.
///
/// Called by the run folder, locked, with the current `meta.json` (`existing`).
pub fn decide(plan: &Plan, req: &RunRequest, csv_path: &Path, existing: Option<Result<RunMeta, MetaError>>) -> anyhow::Result<MetaDecision> {
    let meta_path = req.out_dir.join("meta.json");
    let fresh = build_meta(plan, req.command_line, &new_run_id(&plan.name));
    if !req.resume {
        return Ok(MetaDecision::Write(fresh));
    }
    let old = match existing {
        Some(Ok(m)) => m,
        Some(Err(e @ MetaError::Io { .. })) => return Err(e.into()),
        unreadable => {
            let why = match unreadable {
                Some(Err(e)) => e.to_string(),
                _ => format!("{}: missing", meta_path.display()),
            };
            return Ok(MetaDecision::Write(repair(plan, fresh, csv_path, &why)?));
        }
    };
    if !old.suite_name.is_empty() && old.suite_name != plan.name {
        return Err(BadInput::new(format!(
            "{}: holds run {} of suite `{}` ({}); {} is suite `{}` — a different suite is never resumed into a run folder: choose another --out",
            req.out_dir.display(),
            old.run_id,
            old.suite_name,
            old.suite_file,
            plan.file.display(),
            plan.name
        ))
        .into());
    }
    let changed = changes(&old, &fresh);
    if changed.is_empty() {
        return Ok(MetaDecision::Keep(old));
    }
    let next = old.current_segment() + 1;
    if !req.new_segment {
        return Err(BadInput::new(format!(
            "{}: refusing to resume run {}: changed since it started — {} — pass --resume --new-segment to continue it as segment {next} (cases whose measurement setup changed run again), or choose another --out",
            req.out_dir.display(),
            old.run_id,
            one_line(&changed, 8)
        ))
        .into());
    }
    let mut meta = fresh;
    meta.run_id = old.run_id.clone();
    meta.started_utc = old.started_utc.clone();
    let mut segments = old.segments.clone();
    if segments.is_empty() {
        // A meta.json from before segments: its own fields are segment 1.
        segments.push(Segment {
            segment: 1,
            started_utc: old.started_utc.clone(),
            suite_file: old.suite_file.clone(),
            suite_sha256: old.suite_sha256.clone(),
            measure_id: old.measure_id.clone(),
            command_line: old.command_line.clone(),
            changed: String::new(),
        });
    }
    let mut seg = meta.segments.pop().unwrap_or_default();
    seg.segment = next;
    seg.started_utc = chrono::Utc::now().to_rfc3339();
    seg.changed = one_line(&changed, usize::MAX);
    segments.push(seg);
    meta.segments = segments;
    eprintln!("resume: segment {next} of run {} ({})", meta.run_id, one_line(&changed, 8));
    Ok(MetaDecision::Write(meta))
}

pub(crate) fn new_run_id(name: &str) -> String {
    format!("{}-{}", name, chrono::Utc::now().format("%Y%m%d-%H%M%S"))
}

/// The meta.json this invocation would write for a new run (segment 1): machine, suite (with its
/// text) and the measurement setup with its `measure_id`.
pub(crate) fn build_meta(plan: &Plan, command_line: &str, run_id: &str) -> RunMeta {
    let mut meta = RunMeta {
        run_id: run_id.to_string(),
        started_utc: chrono::Utc::now().to_rfc3339(),
        attnbench_version: env!("CARGO_PKG_VERSION").to_string(),
        suite_file: plan.file.display().to_string(),
        suite_sha256: plan.sha256.clone(),
        command_line: command_line.to_string(),
        settings: serde_json::to_value(&plan.settings).unwrap_or_default(),
        ..Default::default()
    };
    crate::envinfo::fill_meta(&mut meta);
    meta.tf32 = crate::sys::precision::describe(plan.settings.tf32);
    meta.suite_name = plan.name.clone();
    meta.suite_toml = plan.text.clone();
    meta.measure_setup = measure_setup(&plan.settings, &meta, tch::get_num_threads());
    meta.measure_id = measure_id(&meta.measure_setup);
    meta.segments = vec![first_segment(&meta)];
    meta
}

/// The meta.json of one command that appends rows to a CSV (`cp --out`, `simulate --out`; its folder
/// records each such command as a segment): the machine, the command line, and how the rows were
/// measured — `measure` settings (hashed with the machine fields, like a suite run's) — or projected
/// (`model`, hashed as given).
pub fn command_meta(command: &str, measure: Option<&MeasureSettings>, model: Option<Value>) -> RunMeta {
    let mut meta = RunMeta {
        run_id: new_run_id(command),
        started_utc: chrono::Utc::now().to_rfc3339(),
        attnbench_version: env!("CARGO_PKG_VERSION").to_string(),
        command_line: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "),
        suite_name: format!("attnbench {command}"),
        ..Default::default()
    };
    crate::envinfo::fill_meta(&mut meta);
    if let Some(m) = measure {
        meta.tf32 = crate::sys::precision::describe(m.tf32);
    }
    meta.settings = match (measure, &model) {
        (Some(m), _) => serde_json::to_value(m).unwrap_or_default(),
        (None, Some(v)) => v.clone(),
        (None, None) => Value::Null,
    };
    meta.measure_setup = match (measure, model) {
        (Some(m), _) => measure_setup(m, &meta, tch::get_num_threads()),
        (None, Some(v)) => json!({ "model": v }),
        (None, None) => Value::Null,
    };
    meta.measure_id = measure_id(&meta.measure_setup);
    meta.segments = vec![first_segment(&meta)];
    meta
}

/// Segment 1 of a run described by `meta`.
pub fn first_segment(meta: &RunMeta) -> Segment {
    Segment {
        segment: 1,
        started_utc: meta.started_utc.clone(),
        suite_file: meta.suite_file.clone(),
        suite_sha256: meta.suite_sha256.clone(),
        measure_id: meta.measure_id.clone(),
        command_line: meta.command_line.clone(),
        changed: String::new(),
    }
}

/// A meta.json to continue with when the old one is gone or unreadable (`why`): the fresh one if the
/// run has no rows yet; if it has rows, the fresh one under their run id, provided every row is of
/// this suite (its case ids are planned) and this setup (its measure_id) and one segment.
fn repair(plan: &Plan, mut fresh: RunMeta, csv_path: &Path, why: &str) -> anyhow::Result<RunMeta> {
    let rows = peek_rows(csv_path).map_err(crate::results::csvio::CsvError::into_cli)?;
    if rows.is_empty() {
        eprintln!("repaired {}: rewritten ({why}); the run had no rows yet", csv_path.with_file_name("meta.json").display());
        return Ok(fresh);
    }
    let planned: HashSet<String> = plan.cases.iter().map(|p| p.case.case_id()).collect();
    let run_ids: HashSet<&str> = rows.iter().map(|r| r.run_id.as_str()).collect();
    let segments: HashSet<u32> = rows.iter().map(|r| r.segment).collect();
    let refuse = |what: String| -> anyhow::Error {
        BadInput::new(format!("{why}; its {} rows in {} cannot be re-attributed ({what}): choose another --out", rows.len(), csv_path.display())).into()
    };
    if let Some(r) = rows.iter().find(|r| r.measure_id != fresh.measure_id) {
        return Err(refuse(format!("row {} has measure_id `{}`, this setup is `{}`", r.case_id, r.measure_id, fresh.measure_id)));
    }
    if let Some(r) = rows.iter().find(|r| !planned.contains(&r.case_id)) {
        return Err(refuse(format!("case {} is not in {}", r.case_id, plan.file.display())));
    }
    if run_ids.len() != 1 || segments.len() != 1 {
        return Err(refuse(format!("rows of {} runs and {} segments", run_ids.len(), segments.len())));
    }
    fresh.run_id = rows[0].run_id.clone();
    let segment = rows[0].segment;
    for s in &mut fresh.segments {
        s.segment = segment;
        s.changed = format!("meta.json rebuilt on resume ({why})");
    }
    eprintln!("repaired {}: rebuilt for run {} ({why})", csv_path.with_file_name("meta.json").display(), fresh.run_id);
    Ok(fresh)
}

/// Settings that do not change a measured number: `timeout_s` only decides when a hung case is
/// killed.
const NOT_IN_IDENTITY: &[&str] = &["timeout_s"];

/// What `measure_id` hashes: the measure settings (minus [`NOT_IN_IDENTITY`]) and the machine fields
/// of `meta` that change timings (CPU model and cores, GPU, torch and tch versions, attnbench
/// version, torch threads, host allocator). The host name is not part of it: the same hardware under
/// another name measures the same.
pub fn measure_setup(settings: &MeasureSettings, meta: &RunMeta, torch_threads: i32) -> Value {
    let mut m = serde_json::to_value(settings).unwrap_or_default();
    if let Some(obj) = m.as_object_mut() {
        for k in NOT_IN_IDENTITY {
            obj.remove(*k);
        }
    }
    json!({
        "measure": m,
        "machine": {
            "cpu": meta.cpu, "cpu_cores": meta.cpu_cores, "gpu": meta.gpu, "torch": meta.torch, "tch": meta.tch,
            "attnbench": meta.attnbench_version, "torch_threads": torch_threads, "host_allocator": meta.host_allocator,
        },
    })
}

/// 16 hex digits of SHA-256 over the setup's flattened `key=value` lines (key order independent).
pub fn measure_id(setup: &Value) -> String {
    let mut flat = BTreeMap::new();
    flatten_json("", setup, &mut flat);
    let text: String = flat.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn flatten_json(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                flatten_json(&join(prefix, k), x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

/// The suite's keys as `path = value` (arrays of tables by index, e.g. `grid[0].seqlens`), without
/// `[measure]` (compared through the effective settings instead, defaults included).
fn flatten_toml(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                if prefix.is_empty() && k == "measure" {
                    continue;
                }
                flatten_toml(&join(prefix, k), x, out);
            }
        }
        toml::Value::Array(a) if !a.is_empty() && a.iter().all(|x| x.is_table()) => {
            for (i, x) in a.iter().enumerate() {
                flatten_toml(&format!("{prefix}[{i}]"), x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn diff(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>, out: &mut Vec<String>) {
    for (k, a) in old {
        match new.get(k) {
            Some(b) if a == b => {}
            Some(b) => out.push(format!("{k}: {a} → {b}")),
            None => out.push(format!("{k}: {a} → (removed)")),
        }
    }
    for (k, b) in new {
        if !old.contains_key(k) {
            out.push(format!("{k}: (absent) → {b}"));
        }
    }
}

/// What differs between the run in `old` and the one this invocation would make (`new`), one item per
/// key: the measurement setup first, then the suite text. Empty when it is the same run.
pub fn changes(old: &RunMeta, new: &RunMeta) -> Vec<String> {
    let mut out = Vec::new();
    if old.measure_id != new.measure_id {
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        flatten_json("", &old.measure_setup, &mut a);
        flatten_json("", &new.measure_setup, &mut b);
        diff(&a, &b, &mut out);
        if out.is_empty() {
            out.push(format!("measure_id: {} → {}", old.measure_id, new.measure_id));
        }
    }
    if old.suite_sha256 != new.suite_sha256 {
        let parse = |t: &str| t.parse::<toml::Table>().ok().map(toml::Value::Table);
        let before = out.len();
        if let (Some(a), Some(b)) = (parse(&old.suite_toml), parse(&new.suite_toml)) {
            let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
            flatten_toml("", &a, &mut fa);
            flatten_toml("", &b, &mut fb);
            diff(&fa, &fb, &mut out);
        }
        if out.len() == before && old.measure_id == new.measure_id {
            // Only comments / formatting changed, or the old text is not recorded.
            out.push(format!("suite file {}: sha256 {} → {}", new.suite_file, short(&old.suite_sha256), short(&new.suite_sha256)));
        }
    }
    out
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `changes` as one line, at most `max` items.
pub fn one_line(changes: &[String], max: usize) -> String {
    let mut s = changes.iter().take(max).cloned().collect::<Vec<_>>().join("; ");
    if changes.len() > max {
        s.push_str(&format!("; and {} more", changes.len() - max));
    }
    crate::results::one_line(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(settings: &MeasureSettings, toml: &str) -> RunMeta {
        let mut m =
            RunMeta { cpu: "x86".into(), cpu_cores: 2, suite_toml: toml.into(), suite_sha256: format!("{:x}", Sha256::digest(toml)), ..Default::default() };
        m.measure_setup = measure_setup(settings, &m, 2);
        m.measure_id = measure_id(&m.measure_setup);
        m
    }

    #[test]
    fn same_setup_same_id_and_timeout_is_not_part_of_it() {
        let s = MeasureSettings::default();
        let a = meta(&s, "name = \"x\"\n");
        assert!(changes(&a, &a.clone()).is_empty());
        let b = meta(&MeasureSettings { timeout_s: 1.0, ..s.clone() }, "name = \"x\"\n");
        assert_eq!(a.measure_id, b.measure_id);
        let c = meta(&MeasureSettings { repeats: 7, ..s }, "name = \"x\"\n");
        assert_ne!(a.measure_id, c.measure_id);
        assert_eq!(changes(&a, &c), vec!["measure.repeats: 10 → 7".to_string()]);
    }

    #[test]
    fn suite_edits_are_named_key_by_key() {
        let s = MeasureSettings::default();
        let old = "[[grid]]\nseqlens = [64, 96]\npatterns = [\"causal\"]\n[measure]\nrepeats = 3\n";
        let new = "[[grid]]\nseqlens = [64, 96, 128]\npatterns = [\"causal\"]\n[measure]\nrepeats = 7\n";
        let c = changes(&meta(&MeasureSettings { repeats: 3, ..s.clone() }, old), &meta(&MeasureSettings { repeats: 7, ..s }, new));
        assert_eq!(c, vec!["measure.repeats: 3 → 7".to_string(), "grid[0].seqlens: [64, 96] → [64, 96, 128]".to_string()]);
        let line = one_line(&c, 1);
        assert!(line.ends_with("; and 1 more"), "{line}");
    }

    #[test]
    fn a_comment_only_edit_still_counts_as_a_change() {
        let s = MeasureSettings::default();
        let c = changes(&meta(&s, "name = \"x\"\n"), &meta(&s, "# hi\nname = \"x\"\n"));
        assert_eq!(c.len(), 1);
        assert!(c[0].contains("sha256"), "{c:?}");
    }
}
