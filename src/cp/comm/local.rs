//! A world of N ranks inside one process: each rank is a thread, messages go through per-(src, dst)
//! FIFO mailboxes. Sends are eager (the payload is copied when posted), receives block in `wait`.
//! Used by the strategies' unit tests and by `attnbench cp --comm local` (no mpirun needed).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tch::Tensor;

use super::{tensor_bytes, Comm, CommError, Pending};

/// Messages keyed by (src, dst, sequence number of the pair): a receive is matched to the send with the
/// same number at *post* time — MPI's non-overtaking rule — even when handles are waited out of order.
struct Mailboxes {
    queues: Mutex<HashMap<(usize, usize, u64), Tensor>>,
    ready: Condvar,
}

/// One rank of a [`LocalWorld`].
pub struct LocalComm {
    rank: usize,
    size: usize,
    boxes: Arc<Mailboxes>,
    sent: std::cell::Cell<u64>,
    send_seq: std::cell::RefCell<HashMap<usize, u64>>,
    recv_seq: std::cell::RefCell<HashMap<usize, u64>>,
}

/// Runs `f` on `n` ranks (threads) and returns their results in rank order. A panic on any rank is
/// re-raised here after the others finish or time out.
pub struct LocalWorld;

/// How long a receive waits before declaring the peer dead (a strategy bug would otherwise hang a test).
const RECV_TIMEOUT: Duration = Duration::from_secs(120);

impl LocalWorld {
    pub fn run<T: Send + 'static>(n: usize, f: impl Fn(&LocalComm) -> T + Send + Sync + 'static) -> Vec<T> {
        let boxes = Arc::new(Mailboxes { queues: Mutex::new(HashMap::new()), ready: Condvar::new() });
        let f = Arc::new(f);
        let handles: Vec<_> = (0..n)
            .map(|rank| {
                let boxes = boxes.clone();
                let f = f.clone();
                std::thread::spawn(move || {
                    let comm = LocalComm { rank, size: n, boxes, sent: std::cell::Cell::new(0), send_seq: Default::default(), recv_seq: Default::default() };
                    f(&comm)
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        let mut panic = None;
        for h in handles {
            match h.join() {
                Ok(v) => out.push(v),
                Err(p) => panic = Some(p),
            }
        }
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
        out
    }
}

struct LocalPending<'a> {
    comm: &'a LocalComm,
    recvs: Vec<(Tensor, usize, u64)>,
}

impl Pending for LocalPending<'_> {
    fn wait(self: Box<Self>) -> Result<Vec<Tensor>, CommError> {
        let me = self.comm.rank;
        let mut out = Vec::with_capacity(self.recvs.len());
        for (buf, src, seq) in self.recvs {
            let got = {
                let mut q = self.comm.boxes.queues.lock().unwrap();
                loop {
                    if let Some(t) = q.remove(&(src, me, seq)) {
                        break t;
                    }
                    let (g, timeout) = self.comm.boxes.ready.wait_timeout(q, RECV_TIMEOUT).unwrap();
                    q = g;
                    if timeout.timed_out() {
                        return Err(CommError::failed("recv", format!("rank {me}: nothing from rank {src} after {}s", RECV_TIMEOUT.as_secs())));
                    }
                }
            };
            if tensor_bytes(&got) != tensor_bytes(&buf) || got.kind() != buf.kind() {
                return Err(CommError::failed(
                    "recv",
                    format!(
                        "rank {me}: message from rank {src} has {} bytes ({:?}), buffer has {} ({:?})",
                        tensor_bytes(&got),
                        got.kind(),
                        tensor_bytes(&buf),
                        buf.kind()
                    ),
                ));
            }
            out.push(got.reshape(buf.size()).to_device(buf.device()));
        }
        Ok(out)
    }
}

impl Comm for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn backend_name(&self) -> &'static str {
        "local"
    }
    fn start_group(&self, sends: Vec<(Tensor, usize)>, recvs: Vec<(Tensor, usize)>) -> Result<Box<dyn Pending + '_>, CommError> {
        for &(_, p) in sends.iter().chain(recvs.iter()) {
            self.check_peer("start_group", p)?;
        }
        if !sends.is_empty() {
            let mut q = self.boxes.queues.lock().unwrap();
            for (t, dst) in sends {
                if dst != self.rank {
                    self.sent.set(self.sent.get() + tensor_bytes(&t));
                }
                let mut seqs = self.send_seq.borrow_mut();
                let n = seqs.entry(dst).or_insert(0);
                q.insert((self.rank, dst, *n), t.detach().copy());
                *n += 1;
            }
            self.boxes.ready.notify_all();
        }
        let mut seqs = self.recv_seq.borrow_mut();
        let recvs = recvs
            .into_iter()
            .map(|(t, src)| {
                let n = seqs.entry(src).or_insert(0);
                *n += 1;
                (t, src, *n - 1)
            })
            .collect();
        Ok(Box::new(LocalPending { comm: self, recvs }))
    }
    fn bytes_sent(&self) -> u64 {
        self.sent.get()
    }
    fn reset_bytes_sent(&self) {
        self.sent.set(0)
    }
    fn abort(&self, code: i32) -> ! {
        panic!("rank {} aborted the local world (code {code})", self.rank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cp::comm::{split, ReduceOp};

    #[test]
    fn ring_exchange_and_collectives() {
        let out = LocalWorld::run(3, |c| {
            let me = c.rank() as f32;
            let n = c.size();
            let t = Tensor::from_slice(&[me, me + 0.5]);
            let got = c.start_sendrecv(&t, (c.rank() + 1) % n, &t, (c.rank() + n - 1) % n).unwrap().wait().unwrap();
            let prev = Vec::<f32>::try_from(&got[0]).unwrap();
            let sum = c.all_reduce_f64(me as f64, ReduceOp::Sum).unwrap();
            let max = c.all_reduce_f64(me as f64, ReduceOp::Max).unwrap();
            // uneven all-gather: rank j contributes j+1 elements
            let mine = Tensor::full([c.rank() as i64 + 1], me as f64, (tch::Kind::Float, tch::Device::Cpu));
            let like: Vec<Tensor> = (0..n).map(|j| Tensor::zeros([j as i64 + 1], (tch::Kind::Float, tch::Device::Cpu))).collect();
            let g = c.all_gather_v(&mine, &like).unwrap();
            let lens: Vec<i64> = g.iter().map(|t| t.size()[0]).collect();
            // reduce-scatter: every rank gives (rank+1) to each destination
            let parts: Vec<Tensor> = (0..n).map(|_| Tensor::from_slice(&[me + 1.0])).collect();
            let rs = c.reduce_scatter_v(&parts).unwrap().double_value(&[0]);
            (prev, sum, max, lens, rs, c.bytes_sent())
        });
        for (r, (prev, sum, max, lens, rs, sent)) in out.into_iter().enumerate() {
            let p = ((r + 2) % 3) as f32;
            assert_eq!(prev, vec![p, p + 0.5]);
            assert_eq!(sum, 3.0);
            assert_eq!(max, 2.0);
            assert_eq!(lens, vec![1, 2, 3]);
            assert_eq!(rs, 6.0);
            assert!(sent > 0);
        }
    }

    #[test]
    fn split_groups_by_color_and_key() {
        let out = LocalWorld::run(4, |c| {
            let sub = split(c, c.rank() % 2, c.rank()).unwrap();
            let s = sub.all_reduce_f64(c.rank() as f64, ReduceOp::Sum).unwrap();
            (sub.rank(), sub.size(), sub.members.clone(), s)
        });
        assert_eq!(out[0], (0, 2, vec![0, 2], 2.0));
        assert_eq!(out[3], (1, 2, vec![1, 3], 4.0));
    }

    #[test]
    fn wrong_size_message_is_an_error() {
        let out = LocalWorld::run(2, |c| {
            if c.rank() == 0 {
                c.send(&Tensor::from_slice(&[1f32, 2.0]), 1).unwrap();
                None
            } else {
                Some(c.recv(&Tensor::from_slice(&[0f32]), 0).unwrap_err().to_string())
            }
        });
        assert!(out[1].as_ref().unwrap().contains("bytes"), "{:?}", out[1]);
    }
}
