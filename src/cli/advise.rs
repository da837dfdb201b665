//! `attnbench advise`: the flags (or an `[advise]` TOML section, the same keys; flags win) and the
//! printing. The work is in `crate::advise`; docs/ADVISE.md describes it.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::advise::{advise, output, Request};

#[derive(clap::Args, Debug)]
pub struct AdviseArgs {
    /// TOML file with an `[advise]` section (keys as the flags, with underscores).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Mask pattern, `name` or `name?key=value&key=value`; repeat for a mix (with --weight).
    #[arg(long)]
    pub mask: Vec<String>,
    /// Weight of each --mask in the mix (share of steps) [equal].
    #[arg(long)]
    pub weight: Vec<f64>,
    /// Mask parameter for every mask, `key=value` (docs=prolong64k, doc_lens=a,b,c; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Hq:Hkv [64:8].
    #[arg(long)]
    pub heads: Option<String>,
    /// [128]
    #[arg(long)]
    pub head_dim: Option<usize>,
    /// [bf16]
    #[arg(long)]
    pub dtype: Option<String>,
    /// fwd, bwd or fwdbwd [fwdbwd: a training step].
    #[arg(long = "pass")]
    pub pass: Option<String>,
    /// Total tokens over all GPUs.
    #[arg(long)]
    pub seqlen: Option<usize>,
    /// Tokens per GPU (instead of --seqlen).
    #[arg(long)]
    pub seqlen_per_rank: Option<usize>,
    /// GPU count.
    #[arg(long)]
    pub world_size: Option<usize>,
    /// GPU kind and interconnect, as `simulate`: h100, h200, a100, h100-longca [h100].
    #[arg(long)]
    pub topology: Option<String>,
    #[arg(long)]
    pub gpus_per_node: Option<usize>,
    /// Memory per GPU left for attention (12G, 80GiB) [the GPU's HBM].
    #[arg(long)]
    pub mem_per_gpu: Option<String>,
    /// Whose CP implementation: attnbench or longca (LongCA-bench's baselines) [attnbench].
    #[arg(long = "impl")]
    pub implementation: Option<String>,
    /// Result CSVs or run folders to take evidence from (repeatable).
    #[arg(long, num_args = 1..)]
    pub results: Vec<PathBuf>,
    /// Only these strategies (repeatable).
    #[arg(long)]
    pub strategy: Vec<String>,
    /// Only these kernel backends (repeatable).
    #[arg(long)]
    pub backend: Vec<String>,
    /// Only this Ulysses degree for usp.
    #[arg(long)]
    pub ulysses_degree: Option<usize>,
    /// Only this inner ring (double-ring; usp under --impl longca).
    #[arg(long)]
    pub inner_ring: Option<usize>,
    /// Mask draws per projection of a document mask [1].
    #[arg(long)]
    pub packs: Option<usize>,
    /// Do not run the simulator: only --results rows are evidence.
    #[arg(long)]
    pub no_simulate: bool,
    /// Print one JSON object instead of Markdown.
    #[arg(long)]
    pub json: bool,
    /// Write the picture (advise.svg, advise.png, plots.json) into this folder.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

pub fn run(a: AdviseArgs) -> anyhow::Result<ExitCode> {
    let flags = Request {
        mask: a.mask,
        weight: a.weight,
        set: a.set,
        heads: a.heads,
        head_dim: a.head_dim,
        dtype: a.dtype,
        pass: a.pass,
        seqlen: a.seqlen,
        seqlen_per_rank: a.seqlen_per_rank,
        world_size: a.world_size,
        topology: a.topology,
        gpus_per_node: a.gpus_per_node,
        mem_per_gpu: a.mem_per_gpu,
        implementation: a.implementation,
        results: a.results,
        strategy: a.strategy,
        backend: a.backend,
        ulysses_degree: a.ulysses_degree,
        inner_ring: a.inner_ring,
        packs: a.packs,
        simulate: a.no_simulate.then_some(false),
    };
    let request = match &a.config {
        Some(p) => Request::from_toml_file(p)?.overlay(flags),
        None => flags,
    };
    let advice = advise(request.plan()?)?;
    if a.json {
        println!("{}", serde_json::to_string(&output::json(&advice))?);
    } else {
        print!("{}", output::markdown(&advice));
    }
    if let Some(dir) = &a.plot {
        let files = output::picture(&advice, dir)?;
        eprintln!("wrote {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
