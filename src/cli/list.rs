//! `attnbench list [SECTION] [--json]`: what can be named on the command line and in suites.
//!
//! Output is built from sections; each section is one function returning a [`Section`], registered in
//! [`sections`]. To list something new (backends, CP strategies), write `fn backends() -> Section` and
//! add it to that list — text and JSON output follow.

use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;

use crate::error::BadInput;
use crate::mask::{doclen, PATTERNS};

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this section (e.g. `patterns`, `docs`).
    pub section: Option<String>,
    /// Print one JSON object: section key → list of items.
    #[arg(long)]
    pub json: bool,
}

/// One listed thing: a name, a one-line summary and its parameters.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub name: String,
    pub summary: String,
    pub params: Vec<ItemParam>,
}

/// A parameter of an item, with its default as text (may be an expression like `seqlen/4`).
#[derive(Debug, Clone, Serialize)]
pub struct ItemParam {
    pub key: String,
    pub default: String,
    pub help: String,
}

/// A titled group of items; `key` names it on the command line and in the JSON output.
#[derive(Debug, Clone)]
pub struct Section {
    pub key: &'static str,
    pub title: &'static str,
    pub items: Vec<Item>,
}

/// Every section, in output order. Add a section here.
pub fn sections() -> Vec<Section> {
    vec![patterns(), doc_tables(), backends(), strategies()]
}

/// Kernel backends (`--backend NAME`), from the backend registry.
fn backends() -> Section {
    Section {
        key: "backends",
        title: "Kernel backends (--backend NAME)",
        items: crate::backend::registry().iter().map(|b| Item { name: b.name().to_string(), summary: b.summary().to_string(), params: vec![] }).collect(),
    }
}

/// External kernels (`--backend ext:NAME`): the built-in adapters, available here or why not (asks the
/// Python interpreter, about 0.1 s), and the user workers configured in the environment.
fn external() -> Section {
    use crate::backend::external::adapters::availability;
    let a = availability(crate::backend::external::ExternalConfig::default().python_choice());
    let mut items: Vec<Item> = a
        .adapters
        .iter()
        .map(|s| {
            let state = if s.available {
                format!(
                    "available ({}; inputs {})",
                    if s.version.is_empty() { &a.python } else { &s.version },
                    if s.inputs == "file" { "from attnbench's file" } else { "from the seed" }
                )
            } else {
                format!("unavailable here: {}", s.reason)
            };
            let summary = if s.summary.is_empty() { state } else { format!("{} — {state}", s.summary) };
            Item { name: format!("ext:{}", s.name), summary, params: vec![] }
        })
        .collect();
    items.extend(a.user_workers.iter().map(|(name, cmd)| Item { name: name.clone(), summary: format!("user worker: {cmd}"), params: vec![] }));
    Section {
        key: "external",
        title: "External kernels (--backend ext:NAME; python: $ATTNBENCH_PYTHON, launch/setup's CPU torch or python3; docs/EXTERNAL-KERNELS.md)",
        items,
    }
}

/// Context-parallel strategies (`--strategy NAME`), from the CP registry.
fn strategies() -> Section {
    Section {
        key: "strategies",
        title: "Context-parallel strategies (attnbench cp --strategy NAME)",
        items: crate::cp::registry::STRATEGIES
            .iter()
            .map(|s| Item {
                name: s.name.to_string(),
                summary: s.summary.to_string(),
                params: s
                    .options
                    .iter()
                    .map(|k| ItemParam { key: k.to_string(), default: "the strategy's".into(), help: format!("--{}", k.replace('_', "-")) })
                    .collect(),
            })
            .collect(),
    }
}

/// Mask patterns of the zoo with their `--set` keys and defaults.
fn patterns() -> Section {
    Section {
        key: "patterns",
        title: "Mask patterns (--mask NAME, --set key=value)",
        items: PATTERNS
            .iter()
            .map(|p| Item {
                name: p.name.to_string(),
                summary: p.summary.to_string(),
                params: p.params.iter().map(|s| ItemParam { key: s.key.into(), default: s.default.into(), help: s.help.into() }).collect(),
            })
            .collect(),
    }
}

/// Document-length tables for `docs=` of the document patterns.
fn doc_tables() -> Section {
    let mut items = vec![Item {
        name: "auto".into(),
        summary: "pile if seqlen ≤ 12288, else prolong64k (LongCA-bench kernel sweep; *_long: prolong512k from 64K)".into(),
        params: vec![],
    }];
    items.extend(doclen::CORPORA.iter().map(|c| Item { name: c.name.into(), summary: c.about.into(), params: vec![] }));
    items.push(Item {
        name: doclen::MAGI_PACKED.into(),
        summary: "MagiAttention's CP packer over magi_default (chunk ¼ of the pack), our seeded draws at any length".into(),
        params: vec![],
    });
    items.push(Item {
        name: doclen::MAGI_EXACT.into(),
        summary: "the packs MagiAttention's CP benchmark drew (numpy seed 42) at 8K × 8–64 GPUs; seed 42–61 = its pack 0–19".into(),
        params: vec![],
    });
    Section { key: "docs", title: "Document-length tables (--set docs=NAME, sampled with seed)", items }
}

pub fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut all = sections();
    // Last, and only when shown: it starts the Python interpreter.
    if args.section.as_deref().is_none_or(|w| w == "external") {
        all.push(external());
    }
    if let Some(want) = &args.section {
        let mut keys: Vec<&str> = all.iter().map(|s| s.key).collect();
        if !keys.contains(&"external") {
            keys.push("external");
        }
        if !keys.contains(&want.as_str()) {
            return Err(BadInput::new(format!("unknown section `{want}` (expected one of: {})", keys.join(", "))).into());
        }
        all.retain(|s| s.key == want);
    }
    if args.json {
        let mut out = serde_json::Map::new();
        for s in &all {
            out.insert(s.key.to_string(), json!(s.items));
        }
        println!("{}", serde_json::Value::Object(out));
    } else {
        for (n, s) in all.iter().enumerate() {
            if n > 0 {
                println!();
            }
            print!("{}", text(s));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Plain-text rendering of a section: name, summary, then one indented line per parameter.
fn text(s: &Section) -> String {
    let mut out = format!("{}:\n", s.title);
    let width = s.items.iter().map(|i| i.name.chars().count()).max().unwrap_or(0);
    for item in &s.items {
        out.push_str(&format!("  {:width$}  {}\n", item.name, item.summary));
        for p in &item.params {
            let default = if p.default.is_empty() { String::new() } else { format!(" [{}]", p.default) };
            out.push_str(&format!("  {:width$}    {}{default}: {}\n", "", p.key, p.help));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_is_listed_with_its_params() {
        let s = patterns();
        assert_eq!(s.items.len(), PATTERNS.len());
        let t = text(&s);
        for p in PATTERNS {
            assert!(t.contains(p.name));
            for k in p.params {
                assert!(t.contains(&format!("{} [{}]", k.key, k.default)) || k.default.is_empty(), "{}", k.key);
            }
        }
    }
}
