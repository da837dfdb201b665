//! What this machine is: versions, devices, CPU, MPI — for `attnbench env` and each run's `meta.json`.

use serde::Serialize;

use crate::results::RunMeta;

/// torch version this build targets (tch 0.24 ↔ libtorch 2.11.0).
pub const TORCH_VERSION: &str = "2.11.0";
/// tch crate version.
pub const TCH_VERSION: &str = "0.24";

#[derive(Debug, Clone, Serialize)]
pub struct EnvInfo {
    pub attnbench_version: String,
    pub tch: String,
    pub torch: String,
    pub cuda_available: bool,
    pub cuda_devices: Vec<String>,
    /// `mpirun --version` first line, or empty when not on PATH.
    pub mpirun: String,
    /// Whether this binary was built with the `mpi` feature.
    pub mpi_feature: bool,
    pub nccl_feature: bool,
    pub cpu: String,
    pub cpu_cores: usize,
    pub host: String,
    pub git_sha: String,
    pub torch_threads: i32,
    /// Issue 33: per GPU, power limit, application clocks and persistence mode (NVML; empty without).
    pub gpu_power: Vec<crate::measure::power::nvml::GpuPowerSettings>,
    /// Where power figures come from here: `gpu nvml|unavailable; cpu rapl|unavailable`.
    pub power_sources: String,
}

/// `gpu nvml; cpu unavailable`: the power source each kind of case gets on this machine.
pub fn power_sources() -> String {
    let gpu = if crate::measure::power::nvml::Api::get().is_some() { "nvml" } else { "unavailable" };
    let cpu = crate::measure::power::source_for(tch::Device::Cpu).name();
    format!("gpu {gpu}; cpu {cpu}")
}

fn first_line_of(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

/// CUDA device names via `nvidia-smi` (libtorch has no device-name API in tch); `cuda:N` when absent.
pub fn cuda_device_names() -> Vec<String> {
    if !crate::sys::cuda_available() {
        return vec![];
    }
    let out = std::process::Command::new("nvidia-smi").args(["--query-gpu=name", "--format=csv,noheader"]).output();
    let names: Vec<String> = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect(),
        _ => vec![],
    };
    if names.is_empty() {
        (0..tch::Cuda::device_count()).map(|i| format!("cuda:{i}")).collect()
    } else {
        names
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

pub fn collect() -> EnvInfo {
    EnvInfo {
        attnbench_version: env!("CARGO_PKG_VERSION").to_string(),
        tch: TCH_VERSION.into(),
        torch: TORCH_VERSION.into(),
        cuda_available: crate::sys::cuda_available(),
        cuda_devices: cuda_device_names(),
        mpirun: first_line_of("mpirun", &["--version"]),
        mpi_feature: cfg!(feature = "mpi"),
        nccl_feature: cfg!(feature = "nccl"),
        cpu: cpu_model(),
        cpu_cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        host: std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| first_line_of("hostname", &[])),
        git_sha: {
            // A run from a tree with uncommitted changes is not reproducible from the sha alone: say so.
            let sha = first_line_of("git", &["rev-parse", "HEAD"]);
            let dirty = std::process::Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no"])
                .output()
                .map(|o| o.status.success() && !o.stdout.is_empty())
                .unwrap_or(false);
            if dirty && !sha.is_empty() {
                format!("{sha}+dirty")
            } else {
                sha
            }
        },
        torch_threads: tch::get_num_threads(),
        gpu_power: crate::measure::power::nvml::gpu_settings(),
        power_sources: power_sources(),
    }
}

/// Fills the machine fields of a run's metadata (leaves run id, suite and settings to the runner).
pub fn fill_meta(meta: &mut RunMeta) {
    let e = collect();
    meta.attnbench_version = e.attnbench_version;
    meta.git_sha = e.git_sha;
    meta.host = e.host;
    meta.cpu = e.cpu;
    meta.cpu_cores = e.cpu_cores;
    meta.gpu = e.cuda_devices.join(", ");
    meta.driver = first_line_of("nvidia-smi", &["--query-gpu=driver_version", "--format=csv,noheader"]);
    meta.cuda = if e.cuda_available { "available".into() } else { "not available".into() };
    meta.torch = e.torch;
    meta.tch = e.tch;
    meta.mpi =
        if e.mpirun.is_empty() { format!("mpirun not found; mpi feature {}", e.mpi_feature) } else { format!("{}; mpi feature {}", e.mpirun, e.mpi_feature) };
    meta.host_allocator = crate::measure::allocator::in_effect().to_string();
    meta.gpu_power = e.gpu_power.clone();
    meta.power_sources = e.power_sources.clone();
    meta.clocks = if e.cuda_available {
        first_line_of("nvidia-smi", &["--query-gpu=clocks.sm,clocks.max.sm", "--format=csv,noheader"])
    } else {
        format!("{} torch threads", e.torch_threads)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_gets_machine_fields() {
        let mut m = RunMeta::default();
        fill_meta(&mut m);
        assert_eq!(m.torch, TORCH_VERSION);
        assert!(m.cpu_cores >= 1);
        assert!(!m.cpu.is_empty());
        assert!(!m.cuda.is_empty());
        // Issue 33: this CPU machine has no NVML; RAPL where the kernel exposes it.
        let cpu =
            if crate::measure::power::rapl::Rapl::open(std::path::Path::new(crate::measure::power::rapl::POWERCAP)).is_some() { "rapl" } else { "unavailable" };
        assert!(m.power_sources.ends_with(&format!("cpu {cpu}")), "{}", m.power_sources);
    }
}
