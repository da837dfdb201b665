//! One file per subcommand: its clap arguments and its `run`. `src/main.rs` only dispatches.

pub mod advise;
pub mod args;
pub mod comm;
pub mod compare;
pub mod cp;
pub mod env;
pub mod kernel;
pub mod list;
pub mod mask;
pub mod plot;
pub mod report;
pub mod run;
pub mod simulate;
pub mod table;

/// Runs `f` on an NCCL communicator bootstrapped over `mpi`, with the CUDA device NCCL bound this
/// rank to. Shared by the MPI-launched subcommands (`comm`, `cp`). NCCL failing to start: the rank
/// says why and the job exits 1; a build without the `nccl` feature: rank 0 says so, exit 2.
#[cfg(feature = "mpi")]
pub fn with_nccl(
    mpi: &crate::cp::comm::mpi::MpiComm,
    f: impl FnOnce(&dyn crate::cp::comm::Comm, tch::Device) -> anyhow::Result<std::process::ExitCode>,
) -> anyhow::Result<std::process::ExitCode> {
    use crate::cp::comm::Comm;
    use std::process::ExitCode;
    #[cfg(feature = "nccl")]
    {
        match crate::cp::comm::nccl::NcclComm::init(mpi) {
            Ok(n) => {
                let device = n.device();
                f(&n, device)
            }
            Err(e) => {
                eprintln!("error: rank {}: {e}", mpi.rank());
                Ok(ExitCode::from(1))
            }
        }
    }
    #[cfg(not(feature = "nccl"))]
    {
        let _ = f;
        if mpi.rank() == 0 {
            eprintln!("error: --comm nccl: this attnbench was built without the `nccl` feature (cargo build --features nccl)");
        }
        Ok(ExitCode::from(2))
    }
}
