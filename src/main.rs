//! The `attnbench` command line: parses arguments, calls the library, maps errors to exit codes
//! (0 ok, 1 a check failed or an unexpected failure, 2 bad input).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use attnbench::cli;

#[derive(Parser)]
#[command(name = "attnbench", version, about = "Benchmark attention kernels and context parallelism", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a suite (TOML): plan the cases, check and time each one, append rows to a CSV.
    Run(cli::run::RunArgs),
    /// Check and time one attention case on one device.
    Kernel(cli::kernel::KernelArgs),
    /// Mask patterns: exact area/density, or a picture.
    #[command(subcommand)]
    Mask(cli::mask::MaskCommand),
    /// One context-parallel case (run under mpirun: one process per rank).
    Cp(cli::cp::CpCommandArgs),
    /// Collective bus-bandwidth table (nccl-tests style), under mpirun.
    Comm(cli::comm::CommArgs),
    /// Plots from result CSVs.
    Plot(cli::plot::PlotArgs),
    /// Pivot tables (Markdown, LaTeX, CSV) from result CSVs.
    Table(cli::table::TableArgs),
    /// Compare two runs case by case; exit 1 on a regression beyond noise.
    Compare(cli::compare::CompareArgs),
    /// Self-contained HTML report of a run directory.
    Report(cli::report::ReportArgs),
    /// Project CP strategies to many GPUs: virtual ranks + a communication model.
    Simulate(cli::simulate::SimulateArgs),
    /// For masks, a shape and a GPU count: every kernel × CP layout ranked by predicted step time, with its evidence.
    Advise(cli::advise::AdviseArgs),
    /// Versions, devices, CUDA/MPI availability, CPU.
    Env(cli::env::EnvArgs),
    /// Mask patterns (with parameters and defaults), backends and strategies.
    List(cli::list::ListArgs),
    /// Internal: serve kernel cases to `attnbench run` over stdin/stdout (one JSON line each way).
    #[command(hide = true)]
    Worker,
}

/// Whether this rank (`rank`, of MPI_COMM_WORLD) is the first of an Open MPI app context other than
/// rank 0's, i.e. was started with a command line of its own (`OMPI_MCA_orte_app_num`,
/// `OMPI_APP_CTX_NUM_PROCS`). False when the launcher does not say.
fn first_of_other_app_context(rank: &str) -> bool {
    let (Ok(app), Ok(sizes), Ok(rank)) = (std::env::var("OMPI_MCA_orte_app_num"), std::env::var("OMPI_APP_CTX_NUM_PROCS"), rank.parse::<usize>()) else {
        return false;
    };
    let Ok(app) = app.parse::<usize>() else { return false };
    let sizes: Vec<usize> = sizes.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    app > 0 && app <= sizes.len() && sizes[..app].iter().sum::<usize>() == rank
}

impl Command {
    /// Commands whose only pipes are their own stdout/stderr: no worker or rank child is fed through
    /// a pipe, so a reader that goes away (`attnbench simulate … | head`) may end them as it ends `cat`.
    fn only_prints(&self) -> bool {
        matches!(
            self,
            Command::Mask(_)
                | Command::Plot(_)
                | Command::Table(_)
                | Command::Compare(_)
                | Command::Report(_)
                | Command::Simulate(_)
                | Command::Advise(_)
                | Command::List(_)
        )
    }
}

/// Rust ignores SIGPIPE, so `println!` to a closed pipe panics with a backtrace. For the commands
/// that only print, restore the default action: the process ends quietly, as Unix tools do. Commands
/// that feed children through pipes (run, kernel, env --check-seed, worker) keep it ignored, so a
/// dead worker is an error row, not the end of the sweep.
fn quiet_on_closed_stdout() {
    // SAFETY: called once on the main thread before any other thread exists; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    // Before any CUDA call: load libtorch_cuda.so, which `--as-needed` linking drops (see DESIGN.md).
    attnbench::sys::ensure_cuda_loaded();
    // Before any allocation-heavy work or thread: steady heap for CPU timings (measure::allocator).
    attnbench::measure::allocator::tune_for_timing();
    // attnbench's paths and values are UTF-8 (they go into CSV cells, meta.json and messages): a
    // non-UTF-8 argument is one line and exit 2 — `std::env::args` would panic on it later.
    if let Some((i, a)) = std::env::args_os().enumerate().skip(1).find(|(_, a)| a.to_str().is_none()) {
        let rank = ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"].iter().find_map(|v| std::env::var(v).ok());
        if rank.as_deref().is_none_or(|r| r == "0") {
            eprintln!("error: argument {i} is not valid UTF-8 ({}): give paths and values in UTF-8", a.to_string_lossy());
        }
        return ExitCode::from(2);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Under mpirun every rank parses the same bad command line: let rank 0 alone say so.
            let rank = ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"].iter().find_map(|v| std::env::var(v).ok());
            if let Some(r) = rank.filter(|r| r != "0") {
                // A rank started with its own command line (MPMD: `mpirun -np 1 A : -np 1 B`) says
                // why it stops — the first rank of its app context, once — since rank 0 may have parsed
                // fine and wait for it. Ranks sharing rank 0's command line stay quiet: rank 0 says it.
                if e.use_stderr() && first_of_other_app_context(&r) {
                    let first = e.render().to_string().lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_string();
                    eprintln!("{first} (rank {r})");
                    return ExitCode::from(e.exit_code() as u8);
                }
                // mpirun aborts the job at the first non-zero exit: give rank 0 time to print first.
                std::thread::sleep(std::time::Duration::from_millis(500));
                return ExitCode::from(e.exit_code() as u8);
            }
            e.exit()
        }
    };
    if cli.command.only_prints() {
        quiet_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Run(a) => cli::run::run(a),
        Command::Kernel(a) => cli::kernel::run(a),
        Command::Mask(c) => cli::mask::run(c),
        Command::Cp(a) => cli::cp::run(a),
        Command::Comm(a) => cli::comm::run(a),
        Command::Plot(a) => cli::plot::run(a),
        Command::Table(a) => cli::table::run(a),
        Command::Compare(a) => cli::compare::run(a),
        Command::Report(a) => cli::report::run(a),
        Command::Simulate(a) => cli::simulate::run(a),
        Command::Advise(a) => cli::advise::run(a),
        Command::Env(a) => cli::env::run(a),
        Command::List(a) => cli::list::run(a),
        Command::Worker => attnbench::suite::worker::serve().map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = attnbench::error::exit_code(&e);
            // One line: the outermost context and its causes joined, never a backtrace.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::from(code)
        }
    }
}
