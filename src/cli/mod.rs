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

/// Exit code when the NCCL world cannot be created: NCCL or the CUDA driver not loadable, or no GPU
/// visible, is the machine's setup (bad input, 2, with the one line `init` gave); a failure of NCCL
/// itself once loaded is a run failure (1).
pub fn nccl_init_exit_code(e: &crate::cp::comm::CommError) -> u8 {
    match e {
        crate::cp::comm::CommError::Unavailable(..) => 2,
        _ => 1,
    }
}

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
                Ok(ExitCode::from(nccl_init_exit_code(&e)))
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

#[cfg(test)]
mod tests {
    use crate::cp::comm::CommError;

    #[test]
    fn nccl_that_cannot_load_is_bad_input() {
        assert_eq!(super::nccl_init_exit_code(&CommError::Unavailable("nccl", "NCCL not found (libnccl.so.2)".into())), 2);
        assert_eq!(super::nccl_init_exit_code(&CommError::failed("ncclCommInitRank", "unhandled system error")), 1);
    }
}
