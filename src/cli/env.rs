//! `attnbench env`: versions, devices, CUDA/MPI availability, CPU, and the external-kernel adapters
//! available here (human, or `--json`). `--check-seed` also checks the seed contract of every available
//! worker that draws its own inputs (bitwise on the CPU, and on CUDA when there is a GPU).

use std::process::ExitCode;

use serde_json::json;

use crate::backend::external::adapters::availability;
use crate::backend::external::seed::{self, SeedOutcome};
use crate::backend::external::ExternalConfig;
use crate::case::DeviceKind;

#[derive(clap::Args, Debug)]
pub struct EnvArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Ask external workers that draw their own inputs to build them from a seed and compare them
    /// bitwise with attnbench's (CPU, plus CUDA when available); exit 1 if any differs. Without names:
    /// every available built-in adapter and every ATTNBENCH_WORKER_<NAME>.
    #[arg(long, num_args = 0.., value_name = "ext:NAME")]
    pub check_seed: Option<Vec<String>>,
    /// Seed for --check-seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub fn run(a: EnvArgs) -> anyhow::Result<ExitCode> {
    if a.check_seed.is_some() {
        crate::sys::ensure_cuda_loaded();
    }
    let e = crate::envinfo::collect();
    let cfg = ExternalConfig::default();
    let ext = availability(cfg.python_choice());
    let mut seeds: Vec<(String, SeedOutcome)> = Vec::new();
    if let Some(only) = &a.check_seed {
        let mut devices = vec![DeviceKind::Cpu];
        if e.cuda_available {
            devices.push(DeviceKind::Cuda);
        }
        let all = ext
            .adapters
            .iter()
            .filter(|s| s.available && s.inputs != "file")
            .map(|s| format!("ext:{}", s.name))
            .chain(ext.user_workers.iter().map(|(n, _)| n.clone()));
        let names: Vec<String> = if only.is_empty() { all.collect() } else { only.clone() };
        for name in names {
            if crate::backend::external::config::adapter_name(&name).is_none() {
                return Err(crate::error::BadInput::new(format!("--check-seed {name}: expected ext:NAME")).into());
            }
            seeds.push((name.clone(), seed::check(&name, &cfg, &devices, a.seed)));
        }
    }
    let differs = seeds.iter().any(|(_, o)| match o {
        SeedOutcome::Checked { checks } => checks.iter().any(|c| !c.equal),
        SeedOutcome::Failed { .. } => true,
        SeedOutcome::NotApplicable { .. } => false,
    });
    let code = if differs { ExitCode::from(1) } else { ExitCode::SUCCESS };
    if a.json {
        let mut v = serde_json::to_value(&e)?;
        v["external"] = serde_json::to_value(&ext)?;
        if a.check_seed.is_some() {
            v["seed_contract"] = json!(seeds.iter().map(|(n, o)| json!({"backend": n, "seed": a.seed, "result": o})).collect::<Vec<_>>());
        }
        println!("{v}");
        return Ok(code);
    }
    println!("attnbench   {}", e.attnbench_version);
    println!("torch       {} (tch {})", e.torch, e.tch);
    println!("CUDA        {}", if e.cuda_available { format!("available: {}", e.cuda_devices.join(", ")) } else { "not available".into() });
    println!(
        "MPI         {} (mpi feature {}, nccl feature {})",
        if e.mpirun.is_empty() { "mpirun not on PATH" } else { &e.mpirun },
        e.mpi_feature,
        e.nccl_feature
    );
    println!("CPU         {} ({} cores, {} torch threads)", e.cpu, e.cpu_cores, e.torch_threads);
    println!("Power       {}", e.power_sources);
    if !e.gpu_power.is_empty() {
        println!("GPU power   {}", crate::measure::power::nvml::settings_text(&e.gpu_power));
    }
    println!("host        {}", e.host);
    println!("git         {}", if e.git_sha.is_empty() { "-" } else { &e.git_sha });
    println!("external    {}{}", ext.python, if ext.python_version.is_empty() { String::new() } else { format!(" (Python {})", ext.python_version) });
    println!("  interpreter from {}; choose another with ATTNBENCH_PYTHON or [external] python", ext.python_source);
    for s in &ext.adapters {
        let state = if s.available { format!("available ({})", s.version) } else { format!("unavailable: {}", s.reason) };
        println!("  ext:{:<12} {state}", s.name);
    }
    for (name, cmd) in &ext.user_workers {
        println!("  {name:<16} user worker: {cmd}");
    }
    for (name, o) in &seeds {
        let text = match o {
            SeedOutcome::Checked { checks } => checks
                .iter()
                .map(|c| format!("{} {}: {}", c.device, c.dtype, if c.equal { "bitwise equal".to_string() } else { format!("DIFFERS ({})", c.detail) }))
                .collect::<Vec<_>>()
                .join("; "),
            SeedOutcome::NotApplicable { reason } => format!("not applicable: {reason}"),
            SeedOutcome::Failed { reason } => format!("FAILED: {reason}"),
        };
        println!("  seed {name}: {text}");
    }
    Ok(code)
}
