//! The flags that define a case, shared by `kernel`, `cp` and `simulate` (each subcommand flattens
//! these groups), and their translation into the one case definition ([`Case`]) and measurement
//! settings. Subcommands differ only in defaults: `kernel` and `simulate` default to LongCA-bench's
//! shape (64:8 heads, D = 128, bf16), `cp` to a toy size that runs on CPU ranks in seconds.

use crate::case::{Case, CpOptions, DType, DeviceKind, HeadLayout, Sharding};
use crate::error::BadInput;
use crate::flops::Pass;
use crate::mask::Params;
use crate::measure::{MeasureSettings, TimingMode};

/// What a case computes.
#[derive(clap::Args, Debug, Clone)]
pub struct CaseArgs {
    /// Kernel backend (see `attnbench list`). For `cp` and `simulate`: the per-rank attention kernel
    /// [default: sliced].
    #[arg(long)]
    pub backend: Option<String>,
    /// Mask pattern (see `attnbench list`), optionally with its own parameters as
    /// `name?key=value&key=value`. Repeatable for `cp` and `simulate` (one case per mask).
    #[arg(long)]
    pub mask: Vec<String>,
    /// Mask parameter `key=value` for every mask (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Sequence length in tokens (CP: all ranks together).
    #[arg(long)]
    pub seqlen: Option<usize>,
    /// Head layout Hq:Hkv [default: 64:8; cp: 8:2].
    #[arg(long)]
    pub heads: Option<String>,
    /// Head dimension [default: 128; cp: 32].
    #[arg(long)]
    pub head_dim: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// bf16, fp16, fp32 or fp64 [default: bf16; cp: fp32].
    #[arg(long)]
    pub dtype: Option<String>,
    /// fwd, bwd (timed without the forward) or fwdbwd.
    #[arg(long = "pass", default_value = "fwd")]
    pub pass: String,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Per-subcommand defaults of the shape flags.
pub struct ShapeDefaults {
    pub heads: &'static str,
    pub head_dim: usize,
    pub dtype: &'static str,
    pub backend: Option<&'static str>,
}

/// LongCA-bench's shape (`kernel`: the backend must be named).
pub const LONGCA_SHAPE: ShapeDefaults = ShapeDefaults { heads: "64:8", head_dim: 128, dtype: "bf16", backend: None };
/// LongCA-bench's CP shape (`simulate`), per-rank kernel `sliced`.
pub const LONGCA_CP_SHAPE: ShapeDefaults = ShapeDefaults { backend: Some("sliced"), ..LONGCA_SHAPE };
/// A toy shape for CPU ranks (`cp`).
pub const CPU_TOY_SHAPE: ShapeDefaults = ShapeDefaults { heads: "8:2", head_dim: 32, dtype: "fp32", backend: Some("sliced") };

fn parse<T: std::str::FromStr<Err = String>>(flag: &str, v: &str) -> Result<T, BadInput> {
    v.parse::<T>().map_err(|e| BadInput::new(format!("--{flag}: {e}")))
}

impl CaseArgs {
    /// One kernel case per `--mask` (in order), at `seqlen` tokens. Errors name the flag.
    pub fn cases(&self, defaults: &ShapeDefaults, seqlen: usize) -> Result<Vec<Case>, BadInput> {
        let heads: HeadLayout = parse("heads", self.heads.as_deref().unwrap_or(defaults.heads))?;
        let dtype: DType = parse("dtype", self.dtype.as_deref().unwrap_or(defaults.dtype))?;
        let pass: Pass = parse("pass", &self.pass)?;
        let device: DeviceKind = parse("device", &self.device)?;
        let head_dim = self.head_dim.unwrap_or(defaults.head_dim);
        let backend = self.backend.as_deref().or(defaults.backend).ok_or_else(|| BadInput::new("--backend is required (see `attnbench list`)"))?;
        crate::backend::find_backend(backend).map_err(|e| BadInput::new(format!("--backend: {e}")))?;
        if seqlen == 0 || head_dim == 0 || self.batch == 0 {
            return Err(BadInput::new("--seqlen, --head-dim and --batch must be at least 1"));
        }
        if self.mask.is_empty() {
            return Err(BadInput::new("--mask is required (see `attnbench list`)"));
        }
        let common = Params::parse_kv(&self.set).map_err(|e| BadInput::new(format!("--set: {e}")))?;
        self.mask
            .iter()
            .map(|m| {
                let (name, own) = m.split_once('?').unwrap_or((m.as_str(), ""));
                let mut params = common.clone();
                if !own.is_empty() {
                    let kv: Vec<&str> = own.split('&').collect();
                    params.0.extend(Params::parse_kv(&kv).map_err(|e| BadInput::new(format!("--mask {m}: {e}")))?.0);
                }
                let mut c = Case::kernel(backend, name, params, seqlen, heads, head_dim, dtype, pass, device);
                c.batch = self.batch;
                Ok(c)
            })
            .collect()
    }

    /// The total sequence length: `--seqlen`, or `per_rank` × `world` when given instead.
    pub fn total_seqlen(&self, per_rank: Option<usize>, world: usize) -> Result<usize, BadInput> {
        match (self.seqlen, per_rank) {
            (Some(s), None) => Ok(s),
            (None, Some(s)) => Ok(s * world),
            (None, None) => Err(BadInput::new("--seqlen is required")),
            (Some(_), Some(_)) => Err(BadInput::new("give one of --seqlen (total tokens) or --seqlen-per-rank, not both")),
        }
    }
}

/// Which CP strategies, with which options.
#[derive(clap::Args, Debug, Clone)]
pub struct CpArgs {
    /// CP strategy: ring-p2p, ring-p2p-zigzag, ring-allgather, ulysses, usp, double-ring; repeatable,
    /// or `all`. Every strategy × mask is one case.
    #[arg(long)]
    pub strategy: Vec<String>,
    /// Tokens per rank (the total is this × the world size), instead of --seqlen.
    #[arg(long)]
    pub seqlen_per_rank: Option<usize>,
    /// Ulysses (head-parallel) degree of usp (must divide the world size and Hq) [default: the
    /// strategy's]. Given to the listed strategies that take it; bad input if none does.
    #[arg(long)]
    pub ulysses_degree: Option<usize>,
    /// Inner ring size of double-ring (must divide the world size), or of usp's double ring
    /// (LoongTrain: must divide W/U) [default: double-ring's; usp: a plain ring]. Given to the listed
    /// strategies that take it; bad input if none does.
    #[arg(long)]
    pub inner_ring: Option<usize>,
    /// contiguous or zigzag [default: the strategy's].
    #[arg(long)]
    pub sharding: Option<String>,
}

impl CpArgs {
    /// The typed strategy options of these flags.
    pub fn options(&self) -> Result<CpOptions, BadInput> {
        let positive = |flag: &str, v: Option<usize>| -> Result<Option<usize>, BadInput> {
            match v {
                Some(0) => Err(BadInput::new(format!("--{flag} must be at least 1"))),
                other => Ok(other),
            }
        };
        Ok(CpOptions {
            ulysses_degree: positive("ulysses-degree", self.ulysses_degree)?,
            inner_ring: positive("inner-ring", self.inner_ring)?,
            sharding: self.sharding.as_deref().map(|s| parse::<Sharding>("sharding", s)).transpose()?,
        })
    }

    /// Every strategy × mask × world size of a command line as a CP case, in that order.
    pub fn cases(&self, case_args: &CaseArgs, defaults: &ShapeDefaults, worlds: &[usize]) -> Result<Vec<Case>, BadInput> {
        if self.strategy.is_empty() {
            return Err(BadInput::new("--strategy is required (or `all`)"));
        }
        let options = self.options()?;
        let strategies: Vec<String> = if self.strategy.iter().any(|s| s == "all") {
            crate::cp::registry::STRATEGIES.iter().map(|s| s.name.to_string()).collect()
        } else {
            self.strategy.clone()
        };
        let mut defs = Vec::new();
        for s in &strategies {
            defs.push(crate::cp::registry::find_strategy(s).map_err(|e| BadInput::new(e.to_string()))?);
        }
        // Each option goes to the strategies that take it; one that none of them takes is bad input.
        for key in options.keys_set() {
            if !defs.iter().any(|d| d.takes(key)) {
                let d = defs[0];
                let msg = crate::cp::setup::not_taken_message(d, &[key]);
                return Err(BadInput::new(if defs.len() == 1 { msg } else { format!("{msg}; none of the strategies given takes it") }));
            }
        }
        let mut out = Vec::new();
        for (st, def) in strategies.iter().zip(&defs) {
            let options = def.keep_taken(&options);
            for &w in worlds {
                if w == 0 {
                    return Err(BadInput::new("--world-size must be at least 1"));
                }
                let seqlen = case_args.total_seqlen(self.seqlen_per_rank, w)?;
                for kernel in case_args.cases(defaults, seqlen)? {
                    let backend = kernel.backend.clone();
                    out.push(Case::cp(st, &backend, w, options, kernel));
                }
            }
        }
        Ok(out)
    }
}

/// How a case is measured (the flags of `measure::MeasureSettings`).
#[derive(clap::Args, Debug, Clone)]
pub struct MeasureArgs {
    /// Untimed calls before timing.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Timed repeats.
    #[arg(long)]
    pub repeats: Option<usize>,
    /// l2flush or back2back (CUDA events; kernel cases).
    #[arg(long)]
    pub timing_mode: Option<String>,
    /// Skip the correctness check.
    #[arg(long)]
    pub no_check: bool,
    /// Seed of the inputs (same seed ⇒ same Q, K, V).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Allow TF32 for fp32 work on CUDA (cuBLAS and cuDNN); off by default. Recorded in each row.
    #[arg(long)]
    pub tf32: bool,
}

impl MeasureArgs {
    /// The settings: these flags over `defaults`.
    pub fn settings(&self, defaults: MeasureSettings) -> Result<MeasureSettings, BadInput> {
        let mut s = defaults;
        if let Some(w) = self.warmup {
            s.warmup = w;
        }
        if let Some(r) = self.repeats {
            if r == 0 {
                return Err(BadInput::new("--repeats must be at least 1"));
            }
            s.repeats = r;
        }
        if let Some(m) = &self.timing_mode {
            s.timing_mode = parse::<TimingMode>("timing-mode", m)?;
        }
        if let Some(seed) = self.seed {
            s.seed = seed;
        }
        s.check = s.check && !self.no_check;
        s.tf32 = s.tf32 || self.tf32;
        if let Some((key, msg)) = s.bounds_error() {
            return Err(BadInput::new(format!("--{}: {msg}", key.replace('_', "-"))));
        }
        Ok(s)
    }
}
