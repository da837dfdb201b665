//! Open MPI communicator (feature `mpi`) on the raw C API of the `mpi` crate (`mpi::ffi`), so that a
//! group of `MPI_Isend`/`MPI_Irecv` can own its tensors until `MPI_Waitall` — the non-blocking ring
//! step the strategies overlap with compute. Tensors must be CPU tensors for MPI; CUDA tensors are
//! staged through host memory (use the NCCL communicator on GPUs).

use std::cell::Cell;
use std::os::raw::{c_int, c_void};

use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::Communicator;
use tch::{Device, Kind, Tensor};

use super::{tensor_bytes, Comm, CommError, Pending, ReduceOp};

/// Tag of every point-to-point message (ordering between a pair is MPI's non-overtaking rule).
const TAG: c_int = 7;
/// Largest single message; bigger buffers go as several messages (MPI counts are `int`).
const CHUNK: usize = 1 << 30;

/// `MPI_COMM_WORLD` of this process (initialises MPI; finalised when dropped).
pub struct MpiComm {
    _universe: mpi::environment::Universe,
    comm: ffi::MPI_Comm,
    rank: usize,
    size: usize,
    sent: Cell<u64>,
}

fn check(op: &'static str, rc: c_int) -> Result<(), CommError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(CommError::failed(op, format!("MPI error code {rc}")))
    }
}

impl MpiComm {
    /// Initialises MPI. Fails (instead of panicking) when MPI was already initialised in this process.
    pub fn init() -> Result<MpiComm, CommError> {
        let universe = mpi::initialize().ok_or_else(|| CommError::Unavailable("mpi", "MPI is already initialised in this process".into()))?;
        let world = universe.world();
        let comm = world.as_raw();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(MpiComm { _universe: universe, comm, rank, size, sent: Cell::new(0) })
    }

    /// True when this process was started by mpirun / srun (an MPI launcher set its rank variables).
    pub fn launched_by_mpi() -> bool {
        ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID"].iter().any(|v| std::env::var_os(v).is_some())
    }

    /// The MPI datatype of two buffers of one kind (the native collectives' element type).
    fn native_type(&self, op: &'static str, a: &Tensor, b: &Tensor) -> Result<ffi::MPI_Datatype, CommError> {
        if a.kind() != b.kind() {
            return Err(CommError::failed(op, format!("send and receive buffers differ in kind ({:?}, {:?})", a.kind(), b.kind())));
        }
        Self::datatype(a.kind()).ok_or_else(|| CommError::failed(op, format!("MPI collectives support f32, f64, i32, i64 tensors, not {:?}", a.kind())))
    }

    fn datatype(kind: Kind) -> Option<ffi::MPI_Datatype> {
        unsafe {
            match kind {
                Kind::Float => Some(ffi::RSMPI_FLOAT),
                Kind::Double => Some(ffi::RSMPI_DOUBLE),
                Kind::Int64 => Some(ffi::RSMPI_INT64_T),
                Kind::Int => Some(ffi::RSMPI_INT32_T),
                _ => None,
            }
        }
    }
}

fn host(t: &Tensor) -> Tensor {
    t.to_device(Device::Cpu).contiguous()
}

/// An element count as MPI's `int`, or an error naming the operation.
fn count(op: &'static str, n: usize) -> Result<c_int, CommError> {
    c_int::try_from(n).map_err(|_| CommError::failed(op, format!("{n} elements in one MPI call (at most {} per rank)", c_int::MAX)))
}

/// A buffer as MPI sees it: the tensor itself when it is a contiguous CPU tensor (the usual case, no
/// copy), else a host copy (CUDA tensors; copied back by [`Staged::finish`]).
struct Staged(Tensor);

impl Staged {
    fn input(t: &Tensor) -> Staged {
        Staged(if t.device() == Device::Cpu && t.is_contiguous() { t.shallow_clone() } else { host(t) })
    }
    fn output(t: &Tensor) -> Staged {
        Staged(if t.device() == Device::Cpu && t.is_contiguous() { t.shallow_clone() } else { Tensor::empty(t.size(), (t.kind(), Device::Cpu)) })
    }
    fn ptr(&self) -> *mut c_void {
        self.0.data_ptr()
    }
    fn finish(self, dst: &Tensor) {
        if self.0.data_ptr() != dst.data_ptr() {
            dst.shallow_clone().copy_(&self.0);
        }
    }
}

struct MpiPending {
    reqs: Vec<ffi::MPI_Request>,
    _sends: Vec<Tensor>,
    recvs: Vec<(Tensor, Device)>,
    done: bool,
}

impl MpiPending {
    fn complete(&mut self) -> Result<(), CommError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        if self.reqs.is_empty() {
            return Ok(());
        }
        let rc = unsafe { ffi::MPI_Waitall(self.reqs.len() as c_int, self.reqs.as_mut_ptr(), ffi::RSMPI_STATUSES_IGNORE) };
        check("MPI_Waitall", rc)
    }
}

impl Pending for MpiPending {
    fn wait(mut self: Box<Self>) -> Result<Vec<Tensor>, CommError> {
        self.complete()?;
        Ok(std::mem::take(&mut self.recvs).into_iter().map(|(t, d)| if d == Device::Cpu { t } else { t.to_device(d) }).collect())
    }
}

impl Drop for MpiPending {
    /// MPI may still write into the buffers: never free them before the requests completed.
    fn drop(&mut self) {
        let _ = self.complete();
    }
}

/// Posts `MPI_Isend`/`MPI_Irecv` for `bytes` bytes at `ptr`, in chunks of at most [`CHUNK`].
unsafe fn post(send: bool, ptr: *mut c_void, bytes: usize, peer: usize, comm: ffi::MPI_Comm, reqs: &mut Vec<ffi::MPI_Request>) -> Result<(), CommError> {
    let mut off = 0;
    loop {
        let n = (bytes - off).min(CHUNK);
        let mut req: ffi::MPI_Request = ffi::RSMPI_REQUEST_NULL;
        let p = (ptr as *mut u8).add(off) as *mut c_void;
        let rc = if send {
            ffi::MPI_Isend(p, n as c_int, ffi::RSMPI_UINT8_T, peer as c_int, TAG, comm, &mut req)
        } else {
            ffi::MPI_Irecv(p, n as c_int, ffi::RSMPI_UINT8_T, peer as c_int, TAG, comm, &mut req)
        };
        check(if send { "MPI_Isend" } else { "MPI_Irecv" }, rc)?;
        reqs.push(req);
        off += n;
        if off >= bytes {
            return Ok(());
        }
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn backend_name(&self) -> &'static str {
        "mpi"
    }

    fn start_group(&self, sends: Vec<(Tensor, usize)>, recvs: Vec<(Tensor, usize)>) -> Result<Box<dyn Pending + '_>, CommError> {
        for &(_, p) in sends.iter().chain(recvs.iter()) {
            self.check_peer("start_group", p)?;
        }
        let mut pending = MpiPending { reqs: Vec::new(), _sends: Vec::new(), recvs: Vec::new(), done: false };
        // Receives first, so that a matching send from a peer finds its buffer posted.
        for (like, src) in recvs {
            let dev = like.device();
            let buf = if dev == Device::Cpu && like.is_contiguous() { like } else { Tensor::empty(like.size(), (like.kind(), Device::Cpu)) };
            unsafe { post(false, buf.data_ptr(), tensor_bytes(&buf) as usize, src, self.comm, &mut pending.reqs)? };
            pending.recvs.push((buf, dev));
        }
        for (t, dst) in sends {
            let buf = host(&t);
            if dst != self.rank {
                self.sent.set(self.sent.get() + tensor_bytes(&buf));
            }
            unsafe { post(true, buf.data_ptr(), tensor_bytes(&buf) as usize, dst, self.comm, &mut pending.reqs)? };
            pending._sends.push(buf);
        }
        Ok(Box::new(pending))
    }

    fn bytes_sent(&self) -> u64 {
        self.sent.get()
    }
    fn reset_bytes_sent(&self) {
        self.sent.set(0)
    }

    fn abort(&self, code: i32) -> ! {
        unsafe {
            ffi::MPI_Abort(self.comm, code);
        }
        std::process::exit(code)
    }

    fn barrier(&self) -> Result<(), CommError> {
        check("MPI_Barrier", unsafe { ffi::MPI_Barrier(self.comm) })
    }

    /// Native `MPI_Allreduce` for float/double/int tensors; other kinds fall back to gather + reduce.
    fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<Tensor, CommError> {
        let Some(dt) = Self::datatype(t.kind()) else {
            return Err(CommError::failed("all_reduce", format!("MPI all-reduce supports f32, f64, i32, i64 tensors, not {:?}", t.kind())));
        };
        let src = host(t);
        let dst = src.empty_like();
        let mop = unsafe {
            match op {
                ReduceOp::Sum => ffi::RSMPI_SUM,
                ReduceOp::Max => ffi::RSMPI_MAX,
            }
        };
        let rc = unsafe { ffi::MPI_Allreduce(src.data_ptr(), dst.data_ptr(), src.numel() as c_int, dt, mop, self.comm) };
        check("MPI_Allreduce", rc)?;
        // Ring all-reduce moves 2(n−1)/n of the buffer per rank.
        let n = self.size as u64;
        self.sent.set(self.sent.get() + 2 * (n - 1) * tensor_bytes(&src) / n.max(1));
        Ok(if t.device() == Device::Cpu { dst } else { dst.to_device(t.device()) })
    }

    /// Native `MPI_Allreduce` from `src` into `dst` (no allocation when both are contiguous CPU tensors).
    fn all_reduce_into(&self, src: &Tensor, dst: &Tensor, op: ReduceOp) -> Result<(), CommError> {
        let dt = self.native_type("all_reduce", src, dst)?;
        let mop = unsafe {
            match op {
                ReduceOp::Sum => ffi::RSMPI_SUM,
                ReduceOp::Max => ffi::RSMPI_MAX,
            }
        };
        let n = count("all_reduce", src.numel())?;
        let (s, d) = (Staged::input(src), Staged::output(dst));
        check("MPI_Allreduce", unsafe { ffi::MPI_Allreduce(s.ptr(), d.ptr(), n, dt, mop, self.comm) })?;
        d.finish(dst);
        let w = self.size as u64;
        self.sent.set(self.sent.get() + 2 * (w - 1) * tensor_bytes(src) / w.max(1));
        Ok(())
    }

    /// Native `MPI_Alltoall` of equal chunks.
    fn all_to_all_into(&self, send: &Tensor, recv: &Tensor, chunk: i64) -> Result<(), CommError> {
        let dt = self.native_type("all_to_all", send, recv)?;
        let n = count("all_to_all", chunk as usize)?;
        let (s, d) = (Staged::input(send), Staged::output(recv));
        check("MPI_Alltoall", unsafe { ffi::MPI_Alltoall(s.ptr(), n, dt, d.ptr(), n, dt, self.comm) })?;
        d.finish(recv);
        self.sent.set(self.sent.get() + (self.size as u64 - 1) * chunk as u64 * send.kind().elt_size_in_bytes() as u64);
        Ok(())
    }

    /// Native `MPI_Allgather` into a flat buffer.
    fn all_gather_into(&self, src: &Tensor, recv: &Tensor) -> Result<(), CommError> {
        let dt = self.native_type("all_gather", src, recv)?;
        let n = count("all_gather", src.numel())?;
        let (s, d) = (Staged::input(src), Staged::output(recv));
        check("MPI_Allgather", unsafe { ffi::MPI_Allgather(s.ptr(), n, dt, d.ptr(), n, dt, self.comm) })?;
        d.finish(recv);
        self.sent.set(self.sent.get() + (self.size as u64 - 1) * tensor_bytes(src));
        Ok(())
    }

    /// Native `MPI_Reduce_scatter_block` (sum).
    fn reduce_scatter_into(&self, send: &Tensor, dst: &Tensor) -> Result<(), CommError> {
        let dt = self.native_type("reduce_scatter", send, dst)?;
        let n = count("reduce_scatter", dst.numel())?;
        let (s, d) = (Staged::input(send), Staged::output(dst));
        check("MPI_Reduce_scatter_block", unsafe { ffi::MPI_Reduce_scatter_block(s.ptr(), d.ptr(), n, dt, ffi::RSMPI_SUM, self.comm) })?;
        d.finish(dst);
        self.sent.set(self.sent.get() + (self.size as u64 - 1) * tensor_bytes(dst));
        Ok(())
    }

    /// Native `MPI_Sendrecv`.
    fn sendrecv_into(&self, send: &Tensor, dst_rank: usize, recv: &Tensor, src_rank: usize) -> Result<(), CommError> {
        self.check_peer("sendrecv", dst_rank)?;
        self.check_peer("sendrecv", src_rank)?;
        let dt = self.native_type("sendrecv", send, recv)?;
        let (ns, nr) = (count("sendrecv", send.numel())?, count("sendrecv", recv.numel())?);
        let (s, d) = (Staged::input(send), Staged::output(recv));
        let rc =
            unsafe { ffi::MPI_Sendrecv(s.ptr(), ns, dt, dst_rank as c_int, TAG, d.ptr(), nr, dt, src_rank as c_int, TAG, self.comm, ffi::RSMPI_STATUS_IGNORE) };
        check("MPI_Sendrecv", rc)?;
        d.finish(recv);
        if dst_rank != self.rank {
            self.sent.set(self.sent.get() + tensor_bytes(send));
        }
        Ok(())
    }

    /// Native `MPI_Allgather` when every rank contributes the same shape.
    fn all_gather(&self, t: &Tensor) -> Result<Vec<Tensor>, CommError> {
        let src = host(t);
        let bytes = tensor_bytes(&src) as usize;
        if bytes > CHUNK {
            let like: Vec<Tensor> = (0..self.size).map(|_| t.shallow_clone()).collect();
            return self.all_gather_v(t, &like);
        }
        let mut shape = vec![self.size as i64];
        shape.extend(src.size());
        let dst = Tensor::empty(shape.as_slice(), (src.kind(), Device::Cpu));
        let rc =
            unsafe { ffi::MPI_Allgather(src.data_ptr(), bytes as c_int, ffi::RSMPI_UINT8_T, dst.data_ptr(), bytes as c_int, ffi::RSMPI_UINT8_T, self.comm) };
        check("MPI_Allgather", rc)?;
        self.sent.set(self.sent.get() + (self.size as u64 - 1) * bytes as u64);
        Ok((0..self.size as i64).map(|j| dst.get(j).to_device(t.device())).collect())
    }
}

#[cfg(test)]
mod tests {
    // MPI can be initialised once per process and needs a launcher for more than one rank: the
    // multi-rank behaviour is tested under mpirun in tests/cp_mpi.rs. Here: a world of one.
    use super::*;

    #[test]
    fn singleton_world_collectives() {
        let c = MpiComm::init().expect("MPI init as a singleton");
        assert_eq!(c.size(), 1);
        let t = Tensor::from_slice(&[1f32, 2.0, 3.0]);
        assert_eq!(Vec::<f32>::try_from(&c.all_reduce(&t, ReduceOp::Sum).unwrap()).unwrap(), vec![1.0, 2.0, 3.0]);
        let g = c.all_gather(&t).unwrap();
        assert_eq!(g.len(), 1);
        let got = c.start_sendrecv(&t, 0, &t, 0).unwrap().wait().unwrap();
        assert_eq!(Vec::<f32>::try_from(&got[0]).unwrap(), vec![1.0, 2.0, 3.0]);
        c.barrier().unwrap();
        assert!(MpiComm::init().is_err());
    }
}
