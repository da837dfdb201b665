//! Stream ordering of a communicator that runs on its own device stream (NCCL), shared by the real
//! implementation and a recording fake so the order of event records / waits and communication calls
//! a rank issues is tested without a GPU.
//!
//! Why: with NCCL on torch's compute stream, a ring's "post the next block's send/recv, compute this
//! block, wait" cannot overlap — the send/recv sits in the same FIFO as the kernels, and is even queued
//! ahead of this step's compute. So each rank has a second, non-blocking *communication* stream, and
//! the two are ordered with events both ways:
//! 1. before communication is enqueued, the comm stream waits for an event recorded on the compute
//!    stream: the data it sends (and the receive buffers' earlier users) are ready;
//! 2. communication goes on the comm stream, and an event is recorded after it;
//! 3. on `wait`, the compute stream waits for that event: the received block is there before any
//!    kernel that reads it. The host never blocks.
//!
//! Kernels enqueued between 2 and 3 (this step's compute) run on the compute stream concurrently with
//! the transfer.

use tch::Tensor;

use super::CommError;

/// The rank's two device streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// libtorch's current stream, where every kernel runs.
    Compute,
    /// The communicator's own non-blocking stream.
    Comm,
}

/// Events on the two streams, and grouped point-to-point calls enqueued on the comm stream.
pub trait StreamDevice {
    type Event;
    /// Records an event on `on` (after everything enqueued there so far).
    fn record(&self, on: StreamKind) -> Result<Self::Event, CommError>;
    /// Makes stream `on` wait (on the device, not the host) until `ev` completed.
    fn wait(&self, on: StreamKind, ev: &Self::Event) -> Result<(), CommError>;
    /// `ncclGroupStart` / `ncclGroupEnd`.
    fn group_start(&self) -> Result<(), CommError>;
    fn group_end(&self) -> Result<(), CommError>;
    /// `ncclSend` / `ncclRecv` of a whole contiguous device tensor, on the comm stream.
    fn send(&self, t: &Tensor, peer: usize) -> Result<(), CommError>;
    fn recv(&self, t: &Tensor, peer: usize) -> Result<(), CommError>;
}

/// Enqueues `ops` on the comm stream after everything already enqueued on the compute stream (step 1
/// and 2 of the module doc). Returns the event that completes with them; hand it to [`compute_after`].
pub fn issue_after_compute<D: StreamDevice + ?Sized>(d: &D, ops: impl FnOnce() -> Result<(), CommError>) -> Result<D::Event, CommError> {
    let ready = d.record(StreamKind::Compute)?;
    d.wait(StreamKind::Comm, &ready)?;
    ops()?;
    d.record(StreamKind::Comm)
}

/// Step 3: the compute stream waits for communication that completes with `done`.
pub fn compute_after<D: StreamDevice + ?Sized>(d: &D, done: &D::Event) -> Result<(), CommError> {
    d.wait(StreamKind::Compute, done)
}

/// One group of sends and receives, ordered as in the module doc; returns its completion event.
pub fn start_group_ordered<D: StreamDevice + ?Sized>(d: &D, sends: &[(Tensor, usize)], recvs: &[(Tensor, usize)]) -> Result<D::Event, CommError> {
    issue_after_compute(d, || {
        d.group_start()?;
        let mut res = Ok(());
        for (t, peer) in sends {
            res = res.and(d.send(t, *peer));
        }
        for (t, peer) in recvs {
            res = res.and(d.recv(t, *peer));
        }
        // The group is closed even after a failed call, so NCCL is never left inside a group.
        let end = d.group_end();
        res.and(end)
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! A recording fake: every call becomes one line, `<stream>: <what>`.
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    pub struct Recorder {
        pub log: RefCell<Vec<String>>,
        events: RefCell<usize>,
    }

    fn name(s: StreamKind) -> &'static str {
        match s {
            StreamKind::Compute => "compute",
            StreamKind::Comm => "comm",
        }
    }

    impl Recorder {
        fn push(&self, s: String) {
            self.log.borrow_mut().push(s)
        }
        /// A kernel enqueued on the compute stream (what a strategy does between start and wait).
        pub fn kernel(&self, what: &str) {
            self.push(format!("compute: kernel {what}"))
        }
    }

    impl StreamDevice for Recorder {
        type Event = usize;
        fn record(&self, on: StreamKind) -> Result<usize, CommError> {
            let mut n = self.events.borrow_mut();
            *n += 1;
            self.push(format!("{}: record e{}", name(on), *n));
            Ok(*n)
        }
        fn wait(&self, on: StreamKind, ev: &usize) -> Result<(), CommError> {
            self.push(format!("{}: wait e{ev}", name(on)));
            Ok(())
        }
        fn group_start(&self) -> Result<(), CommError> {
            self.push("comm: group start".into());
            Ok(())
        }
        fn group_end(&self) -> Result<(), CommError> {
            self.push("comm: group end".into());
            Ok(())
        }
        fn send(&self, t: &Tensor, peer: usize) -> Result<(), CommError> {
            self.push(format!("comm: send {} B to {peer}", super::super::tensor_bytes(t)));
            Ok(())
        }
        fn recv(&self, t: &Tensor, peer: usize) -> Result<(), CommError> {
            self.push(format!("comm: recv {} B from {peer}", super::super::tensor_bytes(t)));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Recorder;
    use super::*;

    #[test]
    fn ring_step_posts_next_on_the_comm_stream_computes_then_waits() {
        // One ring step as a strategy issues it: post the next block's send/recv, compute on the
        // current block, wait for the received block, compute on it.
        let d = Recorder::default();
        let block = Tensor::zeros([4, 8], (tch::Kind::Float, tch::Device::Cpu));
        let done = start_group_ordered(&d, &[(block.shallow_clone(), 1)], &[(block.empty_like(), 3)]).unwrap();
        d.kernel("attention on block 0");
        compute_after(&d, &done).unwrap();
        d.kernel("attention on block 1");
        let log = d.log.borrow().clone();
        assert_eq!(
            log,
            vec![
                // the data sent was produced by earlier compute: the comm stream waits for it
                "compute: record e1",
                "comm: wait e1",
                // every NCCL call on the comm stream, inside one group
                "comm: group start",
                "comm: send 128 B to 1",
                "comm: recv 128 B from 3",
                "comm: group end",
                "comm: record e2",
                // this step's compute is NOT behind the transfer: nothing on compute waits yet
                "compute: kernel attention on block 0",
                // the received block is read only after the transfer completed
                "compute: wait e2",
                "compute: kernel attention on block 1",
            ]
        );
    }

    #[test]
    fn a_failed_call_still_closes_the_group() {
        struct FailingSend(Recorder);
        impl StreamDevice for FailingSend {
            type Event = usize;
            fn record(&self, on: StreamKind) -> Result<usize, CommError> {
                self.0.record(on)
            }
            fn wait(&self, on: StreamKind, ev: &usize) -> Result<(), CommError> {
                self.0.wait(on, ev)
            }
            fn group_start(&self) -> Result<(), CommError> {
                self.0.group_start()
            }
            fn group_end(&self) -> Result<(), CommError> {
                self.0.group_end()
            }
            fn send(&self, _t: &Tensor, _peer: usize) -> Result<(), CommError> {
                Err(CommError::failed("ncclSend", "unhandled cuda error"))
            }
            fn recv(&self, t: &Tensor, peer: usize) -> Result<(), CommError> {
                self.0.recv(t, peer)
            }
        }
        let d = FailingSend(Recorder::default());
        let t = Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu));
        let e = start_group_ordered(&d, &[(t.shallow_clone(), 1)], &[]).expect_err("send failed");
        assert!(e.to_string().contains("ncclSend"));
        assert_eq!(d.0.log.borrow().last().map(String::as_str), Some("comm: group end"));
    }
}
