//! Communicators for context parallelism: one trait, three implementations.
//!
//! - [`local::LocalWorld`]: N ranks as threads of one process, messages through in-memory mailboxes
//!   (unit tests of every strategy without mpirun).
//! - `mpi::MpiComm` (feature `mpi`): Open MPI, CPU tensors (CUDA tensors are staged through host memory).
//! - `nccl::NcclComm` (feature `nccl`): NCCL through cudarc on the raw CUDA pointers of tch tensors; one
//!   rank per GPU, the unique id broadcast over MPI.
//!
//! The only primitive an implementation must provide is a *group* of point-to-point sends and receives
//! that starts at once and completes on [`Pending::wait`] (MPI `Isend/Irecv + Waitall`, NCCL
//! `ncclGroupStart; ncclSend…; ncclRecv…; ncclGroupEnd`). Every collective has a default written on top
//! of it (all-to-all as grouped send/recv, exactly like NCCL's own), so a strategy only uses this trait
//! and [`SubComm`] (from [`Comm::split`]) gives 2-D schemes their row/column communicators on any
//! implementation. Implementations override collectives with native ones where that is faster.

use std::ops::Range;

use tch::{Kind, Tensor};

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod streams;

/// A communication failure. One line; names the operation and the peer where there is one.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CommError {
    #[error("{op}: rank {peer} is outside the communicator of size {size}")]
    BadPeer { op: &'static str, peer: usize, size: usize },
    #[error("{op}: {msg}")]
    Failed { op: &'static str, msg: String },
    #[error("{0} is not available: {1}")]
    Unavailable(&'static str, String),
}

impl From<crate::measure::MeasureError> for CommError {
    fn from(e: crate::measure::MeasureError) -> Self {
        CommError::failed("timing", e.to_string())
    }
}

impl CommError {
    pub fn failed(op: &'static str, msg: impl Into<String>) -> Self {
        CommError::Failed { op, msg: msg.into() }
    }
}

/// Reduction operator of [`Comm::all_reduce`] and [`Comm::all_reduce_f64`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
}

/// A started group of sends and receives. `wait` completes all of them and returns the receive
/// buffers in the order they were posted.
pub trait Pending {
    fn wait(self: Box<Self>) -> Result<Vec<Tensor>, CommError>;
}

/// An already completed group (used by implementations whose sends are eager).
pub struct Ready(pub Vec<Tensor>);

impl Pending for Ready {
    fn wait(self: Box<Self>) -> Result<Vec<Tensor>, CommError> {
        Ok(self.0)
    }
}

/// A process group. Ranks are `0..size()`. All calls are collective in the SPMD sense: every rank of
/// the group issues the same sequence of groups/collectives (messages between a pair of ranks are
/// matched in the order they are posted).
pub trait Comm {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// `mpi`, `nccl` or `local` (goes into notes and the comm table header).
    fn backend_name(&self) -> &'static str;

    /// Starts sending each `(tensor, dst)` and receiving into each preallocated `(tensor, src)`.
    /// Tensors are sent as raw bytes (shape and dtype are the caller's contract: the receive buffer
    /// must have the sender's byte size). Returns at once; buffers stay owned by the handle.
    fn start_group(&self, sends: Vec<(Tensor, usize)>, recvs: Vec<(Tensor, usize)>) -> Result<Box<dyn Pending + '_>, CommError>;

    /// Bytes this rank has sent since creation or the last [`Comm::reset_bytes_sent`] (point-to-point
    /// payload, counted when a send is posted; sends to self are not counted).
    fn bytes_sent(&self) -> u64;
    fn reset_bytes_sent(&self);

    /// Kills the whole job (every rank) with `code` after `msg` was printed — for a rank that failed in
    /// the middle of a collective schedule, where the other ranks would otherwise wait forever.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }

    // ---- everything below has a default on top of `start_group` ----

    fn barrier(&self) -> Result<(), CommError> {
        self.all_reduce_f64(0.0, ReduceOp::Sum).map(|_| ())
    }

    fn send(&self, t: &Tensor, dst: usize) -> Result<(), CommError> {
        self.check_peer("send", dst)?;
        self.start_group(vec![(t.shallow_clone(), dst)], vec![])?.wait().map(|_| ())
    }

    /// Receives into a fresh tensor of `like`'s shape, dtype and device.
    fn recv(&self, like: &Tensor, src: usize) -> Result<Tensor, CommError> {
        self.check_peer("recv", src)?;
        let mut v = self.start_group(vec![], vec![(like.empty_like(), src)])?.wait()?;
        Ok(v.pop().expect("one receive"))
    }

    /// Non-blocking pair: send `send` to `dst` while receiving a tensor shaped like `recv_like` from
    /// `src` (a ring step). The received tensor is the single element of `wait()`.
    fn start_sendrecv(&self, send: &Tensor, dst: usize, recv_like: &Tensor, src: usize) -> Result<Box<dyn Pending + '_>, CommError> {
        self.check_peer("sendrecv", dst)?;
        self.check_peer("sendrecv", src)?;
        self.start_group(vec![(send.shallow_clone(), dst)], vec![(recv_like.empty_like(), src)])
    }

    /// All-to-all with per-peer tensors of any size: `sends[j]` goes to rank j; `recv_like[j]` gives the
    /// shape of what rank j sends here. Returns the received tensors indexed by source (own entry copied).
    fn all_to_all(&self, sends: &[Tensor], recv_like: &[Tensor]) -> Result<Vec<Tensor>, CommError> {
        let n = self.size();
        if sends.len() != n || recv_like.len() != n {
            return Err(CommError::failed("all_to_all", format!("need {n} send and receive buffers, got {} and {}", sends.len(), recv_like.len())));
        }
        let me = self.rank();
        let s: Vec<(Tensor, usize)> = (0..n).filter(|&j| j != me).map(|j| (sends[j].shallow_clone(), j)).collect();
        let r: Vec<(Tensor, usize)> = (0..n).filter(|&j| j != me).map(|j| (recv_like[j].empty_like(), j)).collect();
        let got = self.start_group(s, r)?.wait()?;
        let mut out = Vec::with_capacity(n);
        let mut it = got.into_iter();
        for j in 0..n {
            if j == me {
                out.push(sends[me].copy());
            } else {
                out.push(it.next().expect("one receive per peer"));
            }
        }
        Ok(out)
    }

    /// All-gather where rank j contributes a tensor shaped like `like[j]` (sizes may differ: allgatherv).
    fn all_gather_v(&self, t: &Tensor, like: &[Tensor]) -> Result<Vec<Tensor>, CommError> {
        let sends: Vec<Tensor> = (0..self.size()).map(|_| t.shallow_clone()).collect();
        self.all_to_all(&sends, like)
    }

    /// All-gather of equally shaped tensors.
    fn all_gather(&self, t: &Tensor) -> Result<Vec<Tensor>, CommError> {
        let like: Vec<Tensor> = (0..self.size()).map(|_| t.shallow_clone()).collect();
        self.all_gather_v(t, &like)
    }

    /// Reduce-scatter (sum) with per-destination parts of any size: `parts[j]` is this rank's
    /// contribution to rank j's result. Returns Σ over ranks of their `parts[me]`.
    fn reduce_scatter_v(&self, parts: &[Tensor]) -> Result<Tensor, CommError> {
        let me = self.rank();
        let like: Vec<Tensor> = (0..self.size()).map(|_| parts[me].shallow_clone()).collect();
        let got = self.all_to_all(parts, &like)?;
        let mut acc = got[0].copy();
        for g in &got[1..] {
            acc += g;
        }
        Ok(acc)
    }

    /// All-reduce of a tensor (every rank gets the elementwise sum or max).
    fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<Tensor, CommError> {
        let got = self.all_gather(t)?;
        let mut acc = got[0].copy();
        for g in &got[1..] {
            acc = match op {
                ReduceOp::Sum => acc + g,
                ReduceOp::Max => acc.maximum(g),
            };
        }
        Ok(acc)
    }

    /// All-reduce of one number (max-rank time, total bytes, error flags).
    fn all_reduce_f64(&self, x: f64, op: ReduceOp) -> Result<f64, CommError> {
        let t = Tensor::from_slice(&[x]);
        let r = self.all_reduce(&t, op)?;
        Ok(r.double_value(&[0]))
    }

    /// Broadcast of a tensor from `root` (shape known everywhere).
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor, CommError> {
        self.check_peer("broadcast", root)?;
        let me = self.rank();
        if me == root {
            let sends: Vec<(Tensor, usize)> = (0..self.size()).filter(|&j| j != me).map(|j| (t.shallow_clone(), j)).collect();
            self.start_group(sends, vec![])?.wait()?;
            Ok(t.shallow_clone())
        } else {
            self.recv(t, root)
        }
    }

    // ---- into preallocated buffers: the timed forms of `attnbench comm` (like nccl-tests, which
    // allocates its buffers once and times only the collective). The defaults post the receives
    // straight into the given buffers (MPI, NCCL) or copy there (the local mailboxes hand over fresh
    // tensors); MPI overrides them with its native collectives.

    /// All-reduce `src` into `dst` (same shape and kind).
    fn all_reduce_into(&self, src: &Tensor, dst: &Tensor, op: ReduceOp) -> Result<(), CommError> {
        let r = self.all_reduce(src, op)?;
        copy_if_other(dst, &r);
        Ok(())
    }

    /// All-to-all of equal chunks: `send` and `recv` are flat, `size()` chunks of `chunk` elements;
    /// chunk j of `send` goes to rank j and chunk j of `recv` comes from rank j.
    fn all_to_all_into(&self, send: &Tensor, recv: &Tensor, chunk: i64) -> Result<(), CommError> {
        let (n, me) = (self.size(), self.rank());
        let sends = (0..n).filter(|&j| j != me).map(|j| (send.narrow(0, j as i64 * chunk, chunk), j)).collect();
        let recvs: Vec<(Tensor, usize)> = (0..n).filter(|&j| j != me).map(|j| (recv.narrow(0, j as i64 * chunk, chunk), j)).collect();
        let views: Vec<Tensor> = recvs.iter().map(|(t, _)| t.shallow_clone()).collect();
        let got = self.start_group(sends, recvs)?.wait()?;
        for (v, g) in views.iter().zip(&got) {
            copy_if_other(v, g);
        }
        recv.narrow(0, me as i64 * chunk, chunk).copy_(&send.narrow(0, me as i64 * chunk, chunk));
        Ok(())
    }

    /// All-gather of `src` (flat, `chunk` elements) into `recv` (flat, `size()` chunks, rank j's at j).
    fn all_gather_into(&self, src: &Tensor, recv: &Tensor) -> Result<(), CommError> {
        let (n, me, chunk) = (self.size(), self.rank(), src.numel() as i64);
        let sends = (0..n).filter(|&j| j != me).map(|j| (src.shallow_clone(), j)).collect();
        let recvs: Vec<(Tensor, usize)> = (0..n).filter(|&j| j != me).map(|j| (recv.narrow(0, j as i64 * chunk, chunk), j)).collect();
        let views: Vec<Tensor> = recvs.iter().map(|(t, _)| t.shallow_clone()).collect();
        let got = self.start_group(sends, recvs)?.wait()?;
        for (v, g) in views.iter().zip(&got) {
            copy_if_other(v, g);
        }
        recv.narrow(0, me as i64 * chunk, chunk).copy_(src);
        Ok(())
    }

    /// Reduce-scatter (sum) of `send` (flat, `size()` chunks of `dst.numel()`) into `dst`.
    fn reduce_scatter_into(&self, send: &Tensor, dst: &Tensor) -> Result<(), CommError> {
        let chunk = dst.numel() as i64;
        let parts: Vec<Tensor> = (0..self.size()).map(|j| send.narrow(0, j as i64 * chunk, chunk)).collect();
        let r = self.reduce_scatter_v(&parts)?;
        copy_if_other(dst, &r);
        Ok(())
    }

    /// Sends `send` to `dst_rank` while receiving into `recv` from `src_rank` (a ring step).
    fn sendrecv_into(&self, send: &Tensor, dst_rank: usize, recv: &Tensor, src_rank: usize) -> Result<(), CommError> {
        self.check_peer("sendrecv", dst_rank)?;
        self.check_peer("sendrecv", src_rank)?;
        let got = self.start_group(vec![(send.shallow_clone(), dst_rank)], vec![(recv.shallow_clone(), src_rank)])?.wait()?;
        copy_if_other(recv, &got[0]);
        Ok(())
    }

    fn check_peer(&self, op: &'static str, peer: usize) -> Result<(), CommError> {
        if peer >= self.size() {
            return Err(CommError::BadPeer { op, peer, size: self.size() });
        }
        Ok(())
    }
}

/// A communicator's ranks as the measurement path needs them (barrier, max over ranks), for the
/// rank-aware clock of CP cases and `attnbench comm`.
pub struct CommRanks<'a>(pub &'a dyn Comm);

impl crate::measure::Ranks for CommRanks<'_> {
    fn barrier(&self) -> Result<(), crate::measure::MeasureError> {
        self.0.barrier().map_err(|e| crate::measure::MeasureError::Ranks(e.to_string()))
    }
    fn max(&self, x: f64) -> Result<f64, crate::measure::MeasureError> {
        self.0.all_reduce_f64(x, ReduceOp::Max).map_err(|e| crate::measure::MeasureError::Ranks(e.to_string()))
    }
}

/// Splits `comm` into sub-communicators: ranks with the same `color` form a group, ordered by `key`
/// (ties by parent rank). Collective over `comm`. The result is a view that maps ranks onto the
/// parent, so it works for every implementation; messages keep their per-pair order.
pub fn split<'a>(comm: &'a dyn Comm, color: usize, key: usize) -> Result<SubComm<'a>, CommError> {
    let mine = Tensor::from_slice(&[color as i64, key as i64]);
    let all = comm.all_gather(&mine)?;
    let mut members: Vec<(i64, usize)> = Vec::new();
    for (r, t) in all.iter().enumerate() {
        let v: Vec<i64> = Vec::<i64>::try_from(t).map_err(|e| CommError::failed("split", e.to_string()))?;
        if v[0] == color as i64 {
            members.push((v[1], r));
        }
    }
    members.sort();
    let members: Vec<usize> = members.into_iter().map(|(_, r)| r).collect();
    let rank = members.iter().position(|&r| r == comm.rank()).expect("a rank is in its own color");
    Ok(SubComm { parent: comm, members, rank })
}

/// A group of ranks of a parent communicator (see [`split`]).
pub struct SubComm<'a> {
    parent: &'a dyn Comm,
    /// Parent ranks of the members, in sub-rank order.
    pub members: Vec<usize>,
    rank: usize,
}

impl<'a> SubComm<'a> {
    /// A group whose members (parent ranks, in sub-rank order) every member already knows — no
    /// communication (strategies derive their groups from the rank layout). `rank` is this process's
    /// index in `members`.
    pub fn from_members(parent: &'a dyn Comm, members: Vec<usize>, rank: usize) -> SubComm<'a> {
        debug_assert_eq!(members[rank], parent.rank());
        SubComm { parent, members, rank }
    }
}

impl Comm for SubComm<'_> {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.members.len()
    }
    fn backend_name(&self) -> &'static str {
        self.parent.backend_name()
    }
    fn start_group(&self, sends: Vec<(Tensor, usize)>, recvs: Vec<(Tensor, usize)>) -> Result<Box<dyn Pending + '_>, CommError> {
        let n = self.members.len();
        for &(_, p) in sends.iter().chain(recvs.iter()) {
            if p >= n {
                return Err(CommError::BadPeer { op: "start_group", peer: p, size: n });
            }
        }
        let sends = sends.into_iter().map(|(t, p)| (t, self.members[p])).collect();
        let recvs = recvs.into_iter().map(|(t, p)| (t, self.members[p])).collect();
        self.parent.start_group(sends, recvs)
    }
    fn bytes_sent(&self) -> u64 {
        self.parent.bytes_sent()
    }
    fn reset_bytes_sent(&self) {
        self.parent.reset_bytes_sent()
    }
    fn abort(&self, code: i32) -> ! {
        self.parent.abort(code)
    }
}

/// Copies `got` into `dst` unless it already is `dst`'s memory (a receive posted into the buffer).
fn copy_if_other(dst: &Tensor, got: &Tensor) {
    if got.data_ptr() != dst.data_ptr() {
        dst.shallow_clone().copy_(&got.reshape(dst.size()));
    }
}

/// Payload bytes of a tensor (numel × element size).
pub fn tensor_bytes(t: &Tensor) -> u64 {
    (t.numel() * t.kind().elt_size_in_bytes()) as u64
}

/// Element kinds the communicators move; everything is bytes on the wire, but reductions need a type.
pub fn check_reducible(t: &Tensor) -> Result<(), CommError> {
    match t.kind() {
        Kind::Float | Kind::Double | Kind::Int64 | Kind::Int | Kind::Half | Kind::BFloat16 => Ok(()),
        k => Err(CommError::failed("all_reduce", format!("unsupported element type {k:?}"))),
    }
}

/// Splits `0..n` into `parts` contiguous ranges whose lengths differ by at most one (the first
/// `n % parts` get one more). Used for uneven sequence and buffer splits.
pub fn even_ranges(n: usize, parts: usize) -> Vec<Range<usize>> {
    let (q, r) = (n / parts, n % parts);
    let mut out = Vec::with_capacity(parts);
    let mut s = 0;
    for i in 0..parts {
        let len = q + usize::from(i < r);
        out.push(s..s + len);
        s += len;
    }
    out
}
