//! Collective benchmark behind `attnbench comm`, in the manner of nccl-tests: one harness owns timing,
//! checking and printing; each operation only supplies its element counts, bus-bandwidth factor, data
//! pattern, expected result and how to run it on a [`Comm`].
//!
//! Sizes follow nccl-tests' `size` column: the all-reduce buffer, the *gathered* buffer of all-gather,
//! the *input* buffer of reduce-scatter (n parts), the whole per-rank buffer of all-to-all, and the
//! message of send/recv. Elements are f32 holding small integers, so every sum is exact and the data
//! check (`wrong`, elements differing from the expected result, summed over ranks) is exact too.
//! Time is the mean over `iters` back-to-back operations of the slowest rank (µs), measured through
//! the one measurement path (`measure::run_back_to_back` with the rank-aware clock: barrier, host
//! clock, one device synchronisation at the end, max over ranks); algorithm bandwidth = bytes / time,
//! bus bandwidth = algorithm bandwidth × the operation's factor (see [`Op::bus_factor`]).
//! As in nccl-tests (src/common.cu: `AllocateBuffs` once per run, `startColl` in the timed loop), the
//! input and output buffers are allocated once per (operation, size) before warm-up and the timed loop
//! calls only the collective, writing into the preallocated output ([`Comm::all_reduce_into`] and
//! siblings; MPI maps them to MPI_Allreduce, MPI_Allgather, MPI_Reduce_scatter_block, MPI_Alltoall,
//! MPI_Sendrecv): no allocation, host copy or split per operation on CPU.

use std::str::FromStr;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::comm::{Comm, CommError, CommRanks, ReduceOp};
use crate::measure::clock::timeline_for;
use crate::measure::{run_back_to_back, HostClock};

/// Bytes per element (f32).
const ELT: u64 = 4;

/// A benchmarked collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    AllReduce,
    AllGather,
    ReduceScatter,
    AllToAll,
    /// Ring neighbour exchange: send to rank+1 while receiving from rank−1.
    SendRecv,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::AllReduce, Op::AllGather, Op::ReduceScatter, Op::AllToAll, Op::SendRecv];

    pub fn name(self) -> &'static str {
        match self {
            Op::AllReduce => "allreduce",
            Op::AllGather => "allgather",
            Op::ReduceScatter => "reducescatter",
            Op::AllToAll => "alltoall",
            Op::SendRecv => "sendrecv",
        }
    }

    /// nccl-tests' bus-bandwidth factor for `n` ranks: all-reduce 2(n−1)/n; all-gather,
    /// reduce-scatter and all-to-all (n−1)/n; send/recv 1.
    pub fn bus_factor(self, n: usize) -> f64 {
        let n = n.max(1) as f64;
        match self {
            Op::AllReduce => 2.0 * (n - 1.0) / n,
            Op::AllGather | Op::ReduceScatter | Op::AllToAll => (n - 1.0) / n,
            Op::SendRecv => 1.0,
        }
    }

    /// `(per-rank chunk elements, reported bytes)` for a requested size: counts are rounded down to
    /// whole f32 elements (and whole per-rank chunks), at least one element per chunk.
    pub fn counts(self, bytes: u64, n: usize) -> (u64, u64) {
        let n = n.max(1) as u64;
        match self {
            Op::AllReduce | Op::SendRecv => {
                let c = (bytes / ELT).max(1);
                (c, c * ELT)
            }
            Op::AllGather | Op::ReduceScatter | Op::AllToAll => {
                let c = (bytes / ELT / n).max(1);
                (c, c * n * ELT)
            }
        }
    }
}

impl FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Op, String> {
        let k = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        Op::ALL
            .into_iter()
            .find(|o| o.name() == k || (k == "p2p" && *o == Op::SendRecv))
            .ok_or_else(|| format!("unknown operation `{s}` (expected allreduce, allgather, reducescatter, alltoall, sendrecv)"))
    }
}

/// Parses a byte size: a number with an optional binary suffix K, M, G (also KB/KiB, …), e.g. `64M`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suf) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("expected a byte count such as 8, 64K or 256M, got `{s}`"))?;
    let mult: u64 = match suf.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("expected a byte count such as 8, 64K or 256M, got `{s}`")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("byte count `{s}` is too large"))
}

/// Requested sizes: `min`, `min·f`, `min·f²`, … up to and including `max`.
pub fn sizes(min: u64, max: u64, factor: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut s = min.max(1);
    while s <= max {
        out.push(s);
        match s.checked_mul(factor.max(2)) {
            Some(n) => s = n,
            None => break,
        }
    }
    out
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub ops: Vec<Op>,
    pub min_bytes: u64,
    pub max_bytes: u64,
    pub step_factor: u64,
    /// Untimed operations before each size.
    pub warmup: usize,
    /// Timed back-to-back operations per size.
    pub iters: usize,
    /// Where the buffers live (the rank's GPU for NCCL).
    pub device: Device,
    /// Times the whole table is measured (nccl-tests' `-N` run cycles): every (operation, size) is
    /// timed once per cycle and reported with its cycle number.
    pub cycles: usize,
}

/// One line of the table (and of the JSON `results`). Field names are read by the simulator's
/// α–β calibration: keep them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpResult {
    pub op: String,
    /// Reported size in bytes (see the module doc).
    pub bytes: u64,
    /// Mean time per operation of the slowest rank, µs.
    pub time_us: f64,
    /// bytes / time, GB/s (10⁹ bytes per second).
    pub algbw_gbps: f64,
    /// algbw × bus factor, GB/s.
    pub busbw_gbps: f64,
    /// Elements that differ from the expected result, summed over ranks.
    pub wrong: u64,
    /// Run cycle (0-based, see [`BenchConfig::cycles`]).
    pub cycle: usize,
}

/// The pattern value of element `i` of stream `s` (rank- and index-dependent), as an f32 tensor:
/// `(s·131 + i·7) mod 1021 + 1` — small integers, so sums over ranks are exact in f32.
fn pattern(stream: u64, start: u64, count: u64, dev: Device) -> Tensor {
    let i = Tensor::arange_start(start as i64, (start + count) as i64, (Kind::Int64, Device::Cpu));
    ((i * 7 + (stream as i64) * 131).remainder(1021) + 1).to_kind(Kind::Float).to_device(dev)
}

/// The buffers of one operation on one rank, allocated once before timing (as nccl-tests does): the
/// input, the output the collective writes into, and the result the output must hold. All flat; the
/// chunked operations lay rank j's chunk at `j·c`.
struct Prepared {
    input: Tensor,
    output: Tensor,
    expected: Tensor,
}

fn prepare(op: Op, rank: usize, n: usize, c: u64, dev: Device) -> Prepared {
    let (r, nn) = (rank as u64, n as u64);
    let cat = |ts: Vec<Tensor>| Tensor::cat(&ts, 0);
    let (input, expected) = match op {
        Op::AllReduce => {
            let mut sum = pattern(0, 0, c, dev);
            for q in 1..nn {
                sum += pattern(q, 0, c, dev);
            }
            (pattern(r, 0, c, dev), sum)
        }
        Op::AllGather => (pattern(r, 0, c, dev), cat((0..nn).map(|j| pattern(j, 0, c, dev)).collect())),
        Op::ReduceScatter => {
            let mut sum = pattern(0, r * c, c, dev);
            for q in 1..nn {
                sum += pattern(q, r * c, c, dev);
            }
            (cat((0..nn).map(|j| pattern(r, j * c, c, dev)).collect()), sum)
        }
        Op::AllToAll => (cat((0..nn).map(|j| pattern(r * nn + j, 0, c, dev)).collect()), cat((0..nn).map(|j| pattern(j * nn + r, 0, c, dev)).collect())),
        Op::SendRecv => (pattern(r, 0, c, dev), pattern((r + nn - 1) % nn, 0, c, dev)),
    };
    // NaN, so an element the collective never wrote is counted wrong.
    let output = expected.full_like(f64::NAN);
    Prepared { input, output, expected }
}

/// One operation into the prepared buffers: the collective and nothing else (the timed call).
fn run_op(comm: &dyn Comm, op: Op, p: &Prepared, c: u64) -> Result<(), CommError> {
    let (me, n) = (comm.rank(), comm.size());
    match op {
        Op::AllReduce => comm.all_reduce_into(&p.input, &p.output, ReduceOp::Sum),
        Op::AllGather => comm.all_gather_into(&p.input, &p.output),
        Op::ReduceScatter => comm.reduce_scatter_into(&p.input, &p.output),
        Op::AllToAll => comm.all_to_all_into(&p.input, &p.output, c as i64),
        Op::SendRecv => comm.sendrecv_into(&p.input, (me + 1) % n, &p.output, (me + n - 1) % n),
    }
}

fn count_wrong(got: &Tensor, expected: &Tensor) -> u64 {
    if got.size() != expected.size() {
        return expected.numel() as u64;
    }
    // `ne` is true for NaN, so unwritten elements count.
    got.to_device(expected.device()).ne_tensor(expected).sum(Kind::Int64).int64_value(&[]) as u64
}

/// Runs every (operation, size) of `cfg` on `comm` (collective: every rank calls it with the same
/// config). Every rank returns the same results (times and counts are reduced over ranks).
pub fn run_bench(comm: &dyn Comm, cfg: &BenchConfig) -> Result<Vec<OpResult>, CommError> {
    let (rank, n) = (comm.rank(), comm.size());
    let dev = cfg.device;
    let timeline = timeline_for(dev);
    let ranks = CommRanks(comm);
    let mut out = Vec::new();
    for cycle in 0..cfg.cycles.max(1) {
        for &op in &cfg.ops {
            let mut last_bytes = None;
            for req in sizes(cfg.min_bytes, cfg.max_bytes, cfg.step_factor) {
                let (c, bytes) = op.counts(req, n);
                if last_bytes == Some(bytes) {
                    continue; // rounding made this size equal to the previous one
                }
                last_bytes = Some(bytes);
                let p = prepare(op, rank, n, c, dev);
                let mut clock = HostClock::ranked(timeline.as_ref(), &ranks);
                let ms = run_back_to_back(&mut clock, cfg.warmup, cfg.iters, &mut || run_op(comm, op, &p, c))?;
                let secs = ms * 1e-3;
                let wrong = comm.all_reduce_f64(count_wrong(&p.output, &p.expected) as f64, ReduceOp::Sum)? as u64;
                let algbw = bytes as f64 / secs / 1e9;
                out.push(OpResult {
                    op: op.name().to_string(),
                    bytes,
                    time_us: secs * 1e6,
                    algbw_gbps: algbw,
                    busbw_gbps: algbw * op.bus_factor(n),
                    wrong,
                    cycle,
                });
            }
        }
    }
    Ok(out)
}

/// The JSON object of `attnbench comm --json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub world_size: usize,
    pub device: String,
    /// Communicator: mpi, nccl or local.
    pub backend: String,
    pub dtype: &'static str,
    pub warmup: usize,
    pub iters: usize,
    pub results: Vec<OpResult>,
}

impl BenchReport {
    /// An nccl-tests style table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "# attnbench comm: backend {}, world {}, device {}, {}, warmup {}, iters {}\n# time = mean per op of the slowest rank; algbw = bytes/time; busbw = algbw x factor\n",
            self.backend, self.world_size, self.device, self.dtype, self.warmup, self.iters
        );
        s += &format!("{:>14} {:>12} {:>12} {:>12} {:>12} {:>8}\n", "op", "size(B)", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong");
        let mut prev = "";
        let cycles = self.results.iter().map(|r| r.cycle).max().unwrap_or(0);
        let mut prev_cycle = None;
        for r in &self.results {
            if !prev.is_empty() && prev != r.op {
                s.push('\n');
            }
            if cycles > 0 && prev_cycle != Some(r.cycle) {
                s += &format!("# cycle {} of {}\n", r.cycle + 1, cycles + 1);
                prev_cycle = Some(r.cycle);
            }
            prev = &r.op;
            s += &format!("{:>14} {:>12} {:>12.2} {:>12.3} {:>12.3} {:>8}\n", r.op, r.bytes, r.time_us, r.algbw_gbps, r.busbw_gbps, r.wrong);
        }
        let bad: u64 = self.results.iter().map(|r| r.wrong).sum();
        s += &format!("# out of bounds values: {bad} {}\n", if bad == 0 { "OK" } else { "WRONG" });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cp::comm::local::LocalWorld;

    #[test]
    fn bus_factors_match_nccl_tests() {
        assert_eq!(Op::AllReduce.bus_factor(4), 1.5);
        assert_eq!(Op::AllGather.bus_factor(4), 0.75);
        assert_eq!(Op::ReduceScatter.bus_factor(2), 0.5);
        assert_eq!(Op::AllToAll.bus_factor(8), 0.875);
        assert_eq!(Op::SendRecv.bus_factor(8), 1.0);
        assert_eq!(Op::AllReduce.bus_factor(1), 0.0);
    }

    #[test]
    fn sizes_counts_and_parsing() {
        assert_eq!(sizes(8, 64, 2), vec![8, 16, 32, 64]);
        assert_eq!(sizes(8, 100, 4), vec![8, 32]);
        assert_eq!(Op::AllGather.counts(8, 3), (1, 12));
        assert_eq!(Op::AllToAll.counts(1024, 3), (85, 1020));
        assert_eq!(Op::AllReduce.counts(10, 3), (2, 8));
        assert_eq!(parse_bytes("64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("8").unwrap(), 8);
        assert!(parse_bytes("8X").is_err());
        assert!(parse_bytes("-1").is_err());
        assert_eq!("all-reduce".parse::<Op>().unwrap(), Op::AllReduce);
        assert!("bcast".parse::<Op>().is_err());
    }

    #[test]
    fn every_op_is_exact_on_a_local_world_of_three() {
        let cfg = BenchConfig { ops: Op::ALL.to_vec(), min_bytes: 8, max_bytes: 4096, step_factor: 4, warmup: 1, iters: 2, device: Device::Cpu, cycles: 2 };
        let out = LocalWorld::run(3, move |c| run_bench(c, &cfg).unwrap());
        assert_eq!(out[0], out[2], "every rank reports the same table");
        assert_eq!(out[0].len(), 2 * 5 * 5, "sizes 8, 32, 128, 512, 2048 for each op, two cycles");
        assert_eq!(out[0].iter().filter(|r| r.cycle == 1).count(), 25);
        for r in &out[0] {
            assert_eq!(r.wrong, 0, "{r:?}");
            assert!(r.time_us > 0.0);
        }
    }

    #[test]
    fn a_wrong_result_is_counted() {
        let p = prepare(Op::AllReduce, 0, 2, 5, Device::Cpu);
        let bad = p.expected.copy();
        let _ = bad.get(3).fill_(-1.0);
        assert_eq!(count_wrong(&bad, &p.expected), 1);
        assert_eq!(count_wrong(&p.output, &p.expected), 5, "an unwritten output is all wrong");
        // the pattern really depends on rank and index
        let a = Vec::<f32>::try_from(&pattern(0, 0, 3, Device::Cpu)).unwrap();
        let b = Vec::<f32>::try_from(&pattern(1, 0, 3, Device::Cpu)).unwrap();
        assert_eq!(a, vec![1.0, 8.0, 15.0]);
        assert_ne!(a, b);
    }
}
