//! `attnbench env`: versions, devices, CUDA/MPI availability, CPU (human, or `--json`).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct EnvArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EnvArgs) -> anyhow::Result<ExitCode> {
    let e = crate::envinfo::collect();
    if a.json {
        println!("{}", serde_json::to_string(&e)?);
        return Ok(ExitCode::SUCCESS);
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
    println!("host        {}", e.host);
    println!("git         {}", if e.git_sha.is_empty() { "-" } else { &e.git_sha });
    Ok(ExitCode::SUCCESS)
}
