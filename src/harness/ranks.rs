//! The rank side of a CP job: every rank runs the job's cases in order ([`run_all`]), each through
//! [`super::cp::run_case`] ([`run_on`]: what a rank ends with, and the rules for failures), and rank
//! 0 hands each row to the job's [`RowSink`] (`attnbench cp`: append to `--out`, print). Also
//! [`run_local`]: one work item on a world of threads, for [`super::run`].
//!
//! Failures: agreed bad input (exit 2 on every rank, one message) and a rank failing mid-run (it says
//! so; under MPI/NCCL the whole job is aborted, since the other ranks are inside collectives) stop the
//! job; rows of the cases before stay written.

use crate::case::Case;
use crate::cp::comm::local::LocalWorld;
use crate::cp::comm::{Comm, CommError, ReduceOp};
use crate::measure::MeasureSettings;
use crate::results::{Row, Status};

use super::cp::{run_case, CpSpec};

/// What one rank ends a case with: the row (rank 0), nothing (other ranks), or the exit code of a
/// failure.
pub enum RankEnd {
    Row(Box<Row>),
    Quiet,
    Fail(u8),
}

/// Where rank 0's rows go.
pub trait RowSink {
    type Error: From<CommError>;
    /// On rank 0, before any case runs; an `Err` stops every rank (exit 2) before anything is computed.
    fn open(&mut self) -> Result<(), Self::Error>;
    /// One finished case's row, on rank 0.
    fn row(&mut self, row: &mut Row) -> Result<(), Self::Error>;
}

/// How a rank's job ended: its exit code (0; 1 when a case was not `ok` or a rank failed mid-run; 2 for
/// agreed bad input), and on rank 0 the rows written and how many were not `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobEnd {
    pub code: u8,
    pub rows: usize,
    pub not_ok: usize,
}

/// A fingerprint of the whole list of cases (what every rank must agree on).
pub fn fingerprint(specs: &[CpSpec]) -> u64 {
    specs.iter().fold(specs.len() as u64, |h, s| (h.wrapping_mul(1_000_003) ^ s.fingerprint()) & ((1 << 52) - 1))
}

/// Runs every case on this rank, in order; stops at the first failure (its code).
pub fn run_all<S: RowSink>(comm: &dyn Comm, specs: &[CpSpec], run_id: &str, device_name: &str, abort_on_error: bool, sink: &mut S) -> Result<JobEnd, S::Error> {
    // Rank 0 opens the sink (a results folder: locked, meta.json, this command as a segment). If it
    // cannot, every rank stops before computing anything.
    let open_failed = if comm.rank() == 0 { sink.open().err() } else { None };
    if comm.all_reduce_f64(if open_failed.is_some() { 1.0 } else { 0.0 }, ReduceOp::Max)? > 0.0 {
        return match open_failed {
            Some(e) => Err(e),
            None => Ok(JobEnd { code: 2, rows: 0, not_ok: 0 }),
        };
    }
    let (mut rows, mut not_ok) = (0, 0);
    for spec in specs {
        match run_on(comm, spec, run_id, device_name, abort_on_error) {
            RankEnd::Fail(code) => return Ok(JobEnd { code, rows, not_ok }),
            RankEnd::Quiet => {}
            RankEnd::Row(mut r) => {
                rows += 1;
                if r.status != Status::Ok {
                    not_ok += 1;
                }
                sink.row(&mut r)?;
            }
        }
    }
    Ok(JobEnd { code: if not_ok > 0 { 1 } else { 0 }, rows, not_ok })
}

/// Runs the case on `comm`; prints failures per the module's rules. Never returns on a mid-run
/// failure of an MPI/NCCL rank when `abort_on_error` (the job is aborted).
pub fn run_on(comm: &dyn Comm, spec: &CpSpec, run_id: &str, device_name: &str, abort_on_error: bool) -> RankEnd {
    match run_case(comm, spec, run_id, device_name) {
        Ok(Some(row)) => RankEnd::Row(Box::new(row)),
        Ok(None) => RankEnd::Quiet,
        Err(Ok(f)) => {
            if let Some(m) = f.message {
                eprintln!("error: {m}");
            }
            RankEnd::Fail(f.code)
        }
        Err(Err(e)) => {
            eprintln!("error: rank {}: {e}", comm.rank());
            if abort_on_error {
                comm.abort(1);
            }
            RankEnd::Fail(1)
        }
    }
}

/// One CP case on its `world_size` ranks as threads of this process (the local communicator): rank
/// 0's row, or why there is none.
pub fn run_local(case: &Case, settings: &MeasureSettings, run_id: &str) -> Result<Row, String> {
    let spec = CpSpec::new(case.clone(), settings.clone());
    let (run_id, device) = (run_id.to_string(), case.device.name());
    let world = spec.case.world_size.max(1);
    let ends = LocalWorld::run(world, move |c| match run_case(c, &spec, &run_id, device) {
        Ok(row) => Ok(row),
        Err(Ok(f)) => Err(f.message.unwrap_or_default()),
        Err(Err(e)) => Err(format!("rank {}: {e}", c.rank())),
    });
    let mut why = Vec::new();
    for end in ends {
        match end {
            Ok(Some(row)) => return Ok(row),
            Ok(None) => {}
            Err(m) if !m.is_empty() => why.push(m),
            Err(_) => {}
        }
    }
    Err(if why.is_empty() { "the CP case gave no row".into() } else { why.join("; ") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::HeadLayout;
    use crate::cp::setup::fixtures::cp_case;
    use crate::flops::Pass;

    /// Rows kept by rank 0; `refuse`: the sink cannot open (a busy results folder).
    #[derive(Default)]
    struct Kept {
        refuse: bool,
        rows: Vec<String>,
    }

    #[derive(Debug)]
    struct Refused(String);

    impl From<CommError> for Refused {
        fn from(e: CommError) -> Self {
            Refused(e.to_string())
        }
    }

    impl RowSink for Kept {
        type Error = Refused;
        fn open(&mut self) -> Result<(), Refused> {
            if self.refuse {
                Err(Refused("busy".into()))
            } else {
                Ok(())
            }
        }
        fn row(&mut self, row: &mut Row) -> Result<(), Refused> {
            self.rows.push(format!("{} {}", row.strategy, row.status));
            Ok(())
        }
    }

    fn specs() -> Vec<CpSpec> {
        let settings = MeasureSettings { warmup: 0, repeats: 1, check: true, seed: 7, ..Default::default() };
        ["ring-p2p", "ulysses"].iter().map(|s| CpSpec::new(cp_case(s, "causal", &[], 32, 2, HeadLayout { q: 2, kv: 2 }, Pass::Fwd), settings.clone())).collect()
    }

    /// The rank side of a job, in the harness: every case in order on every rank, rank 0's rows to the
    /// sink; a sink rank 0 cannot open stops every rank before anything is computed.
    #[test]
    fn run_all_hands_rank_zeros_rows_to_the_sink_and_agrees_on_a_refused_sink() {
        let out = LocalWorld::run(2, |c| {
            let mut sink = Kept::default();
            let end = run_all(c, &specs(), "t", "cpu", false, &mut sink).map_err(|e| e.0);
            (end, sink.rows)
        });
        assert_eq!(out[0], (Ok(JobEnd { code: 0, rows: 2, not_ok: 0 }), vec!["ring-p2p ok".to_string(), "ulysses ok".to_string()]));
        assert_eq!(out[1], (Ok(JobEnd { code: 0, rows: 0, not_ok: 0 }), vec![]));
        let out = LocalWorld::run(2, |c| run_all(c, &specs(), "t", "cpu", false, &mut Kept { refuse: true, ..Default::default() }).map_err(|e| e.0));
        assert_eq!(out, [Err("busy".to_string()), Ok(JobEnd { code: 2, rows: 0, not_ok: 0 })]);
        assert_ne!(fingerprint(&specs()), fingerprint(&specs()[..1]));
    }
}
