//! `attnbench mask area|show`: exact area / density of a zoo pattern, or its picture.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::case::HeadLayout;
use crate::error::BadInput;
use crate::flops;
use crate::mask::{build_pattern, render, HeadMasks, Params};

#[derive(Subcommand, Debug)]
pub enum MaskCommand {
    /// Exact attended area (query, key pairs), density, slice count, and FLOPs with --heads.
    Area(AreaArgs),
    /// Picture of the mask: Unicode on stdout, and a PNG with --png.
    Show(ShowArgs),
}

/// Which mask: pattern, sequence length, parameters.
#[derive(Args, Debug)]
pub struct MaskSpec {
    /// Pattern name (see `attnbench list patterns`).
    pub pattern: String,
    /// Sequence length in tokens (queries = keys).
    #[arg(long)]
    pub seqlen: usize,
    /// Pattern parameter, repeatable: --set window=512 --set doc_lens=100,200.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl MaskSpec {
    fn build(&self) -> anyhow::Result<(Params, HeadMasks)> {
        let params = Params::parse_kv(&self.set)?;
        let masks = build_pattern(&self.pattern, self.seqlen, &params)?;
        Ok((params, masks))
    }
}

#[derive(Args, Debug)]
pub struct AreaArgs {
    #[command(flatten)]
    pub mask: MaskSpec,
    /// Query:KV heads (e.g. 64:8); with it, the output includes forward FLOPs for one batch element.
    #[arg(long)]
    pub heads: Option<HeadLayout>,
    /// Head dimension for the FLOP count.
    #[arg(long, default_value_t = 128)]
    pub head_dim: usize,
    /// Also report the fraction of (B×B) tiles a block-sparse kernel visits, at this block size.
    #[arg(long)]
    pub block: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub mask: MaskSpec,
    /// Characters per row of the Unicode picture.
    #[arg(long, default_value_t = 64)]
    pub width: usize,
    /// Also write a PNG (at most ~1024×1024 cells, grey = attended fraction) to this file.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
}

pub fn run(c: MaskCommand) -> anyhow::Result<ExitCode> {
    match c {
        MaskCommand::Area(a) => area(a),
        MaskCommand::Show(a) => show(a),
    }
}

fn area(a: AreaArgs) -> anyhow::Result<ExitCode> {
    let (params, masks) = a.mask.build()?;
    if let Some(h) = &a.heads {
        masks.check_heads(h.q)?;
    }
    if a.block == Some(0) {
        return Err(BadInput::new("--block: must be at least 1").into());
    }
    let shared = masks.is_shared();
    let group_areas: Vec<u64> = masks.groups.iter().map(|m| m.area()).collect();
    let slices: usize = masks.groups.iter().map(|m| m.slices().len()).sum();
    let flops_fwd = a.heads.as_ref().map(|h| flops::forward_flops(masks.area_over_heads(h.q), a.head_dim, 1));
    let block_sparsity = a.block.map(|b| masks.groups.iter().map(|m| m.block_sparsity(b, b)).sum::<f64>() / masks.groups.len() as f64);
    if a.json {
        let mut out = json!({
            "pattern": a.mask.pattern,
            "seqlen": a.mask.seqlen,
            "params": params.0,
            // One shared mask: its exact area. Head groups: the mean over groups (per head).
            "area": if shared { json!(group_areas[0]) } else { json!(masks.mean_area()) },
            "density": masks.density(),
            "slices": slices,
            "groups": masks.groups.len(),
        });
        if !shared {
            out["group_areas"] = json!(group_areas);
        }
        if let (Some(h), Some(f)) = (&a.heads, flops_fwd) {
            out["heads_q"] = json!(h.q);
            out["heads_kv"] = json!(h.kv);
            out["head_dim"] = json!(a.head_dim);
            out["flops_fwd"] = json!(f);
        }
        if let (Some(b), Some(bs)) = (a.block, block_sparsity) {
            out["block"] = json!(b);
            out["block_sparsity"] = json!(bs);
        }
        println!("{out}");
    } else {
        let shown = if params.is_empty() { String::new() } else { format!(" ({params})") };
        println!("pattern      {}{shown}", a.mask.pattern);
        println!("seqlen       {}", a.mask.seqlen);
        if shared {
            println!("area         {}", group_areas[0]);
        } else {
            println!("area         {} (mean per head; groups: {group_areas:?})", masks.mean_area());
        }
        println!("density      {:.6}", masks.density());
        println!("slices       {slices}");
        if let (Some(h), Some(f)) = (&a.heads, flops_fwd) {
            println!("flops_fwd    {f:.4e} (heads {h}, head_dim {}, batch 1)", a.head_dim);
        }
        if let (Some(b), Some(bs)) = (a.block, block_sparsity) {
            println!("tiles {b}×{b}  {bs:.6} visited");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    if a.width == 0 {
        return Err(BadInput::new("--width: must be at least 1").into());
    }
    let (params, masks) = a.mask.build()?;
    let shown = if params.is_empty() { String::new() } else { format!(" {params}") };
    let title = format!("{}{shown}  S={}  density={:.4}", a.mask.pattern, a.mask.seqlen, masks.density());
    // The PNG first, so a bad path fails before anything is printed.
    if let Some(path) = &a.png {
        render::write_png(&masks.groups, &title, path, render::MAX_CELLS).map_err(|e| BadInput::new(format!("--png {}: {e}", path.display())))?;
        eprintln!("wrote {}", path.display());
    }
    println!("{title}");
    for (g, m) in masks.groups.iter().enumerate() {
        if !masks.is_shared() {
            println!("head group {g}: density {:.4}", m.density());
        }
        print!("{}", m.render(a.width));
    }
    Ok(ExitCode::SUCCESS)
}
