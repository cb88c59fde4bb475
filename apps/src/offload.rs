//! The offload pool (half-sync/half-async): handlers must return in microseconds, so work
//! that cannot (a slow computation, a blocking call) is handed to a small pool of threads
//! and its result comes back through a bounded queue that the runtime polls.
//!
//! The asynchronous half is the service on its worker: a handler
//! [`submit`](Offload::submit)s a job tagged with its connection's [`Handle`] and
//! returns. The synchronous half is the pool's threads, which run jobs one at a time and
//! may block. Results are taken in [`Service::on_poll`](crate::Service::on_poll), which
//! the runtime calls once per loop iteration, with [`Offload::complete`]: each result is
//! handed to its connection (results of connections that are gone are dropped).
//!
//! Bounded: at most `queue` jobs may be outstanding; beyond that `submit` hands the job
//! back, and the service decides (answer "busy", close, or retry on the next readable
//! event).
//!
//! ```
//! use c10m_apps::offload::Offload;
//!
//! let mut pool = Offload::new(2, 16, |n: u64| (1..=n).product::<u64>()).unwrap();
//! # let _ = &mut pool;
//! assert_eq!(pool.pending(), 0);
//! ```

use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::{Conn, Conns, Handle};

/// A pool of threads running jobs of type `J` into results of type `R`.
pub struct Offload<J, R> {
    jobs: Option<SyncSender<(Handle, J)>>,
    results: Receiver<(Handle, R)>,
    pending: usize,
    queue: usize,
    threads: Vec<JoinHandle<()>>,
}

impl<J, R> std::fmt::Debug for Offload<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("threads", &self.threads.len())
            .field("pending", &self.pending)
            .field("queue", &self.queue)
            .finish()
    }
}

impl<J: Send + 'static, R: Send + 'static> Offload<J, R> {
    /// Starts `threads` threads (at least one) running `work`; at most `queue` jobs (at
    /// least one) may be outstanding.
    pub fn new(
        threads: usize,
        queue: usize,
        work: impl Fn(J) -> R + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let queue = queue.max(1);
        let (jobs, job_rx) = mpsc::sync_channel::<(Handle, J)>(queue);
        // Room for every outstanding job's result: a pool thread never waits on it.
        let (result_tx, results) = mpsc::sync_channel(queue);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let work = Arc::new(work);
        let mut spawned = Vec::new();
        for i in 0..threads.max(1) {
            let (rx, tx, work) = (job_rx.clone(), result_tx.clone(), work.clone());
            let t = std::thread::Builder::new()
                .name(format!("c10m-offload-{i}"))
                .spawn(move || {
                    loop {
                        let next = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((handle, job)) = next else { return };
                        if tx.send((handle, work(job))).is_err() {
                            return;
                        }
                    }
                })?;
            spawned.push(t);
        }
        Ok(Offload {
            jobs: Some(jobs),
            results,
            pending: 0,
            queue,
            threads: spawned,
        })
    }

    /// Queues `job` for the connection `handle`, without waiting; hands the job back if
    /// `queue` jobs are already outstanding.
    pub fn submit(&mut self, handle: Handle, job: J) -> Result<(), J> {
        if self.pending >= self.queue {
            return Err(job);
        }
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        match jobs.try_send((handle, job)) {
            Ok(()) => {
                self.pending += 1;
                Ok(())
            }
            Err(mpsc::TrySendError::Full((_, j)) | mpsc::TrySendError::Disconnected((_, j))) => {
                Err(j)
            }
        }
    }

    /// Jobs submitted whose results were not taken yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Takes the next finished result, without waiting.
    pub fn try_result(&mut self) -> Option<(Handle, R)> {
        match self.results.try_recv() {
            Ok(r) => {
                self.pending -= 1;
                Some(r)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// Hands every finished result to its connection through `deliver`; results whose
    /// connection is gone (or closing) are dropped. Returns how many were taken.
    pub fn complete<T>(
        &mut self,
        conns: &mut Conns<'_, T>,
        mut deliver: impl FnMut(&mut Conn<'_>, &mut T, R),
    ) -> usize {
        let mut n = 0;
        while let Some((handle, result)) = self.try_result() {
            n += 1;
            conns.with(handle, |conn, state| deliver(conn, state, result));
        }
        n
    }
}

impl<J, R> Drop for Offload<J, R> {
    fn drop(&mut self) {
        self.jobs = None; // the threads see the queue closed once it is empty
        // Results no one will take: drain so that no thread waits on a full queue.
        while self.results.try_recv().is_ok() {}
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    const H: Handle = Handle {
        slot: 0,
        generation: 0,
    };

    #[test]
    fn the_queue_is_bounded_and_results_come_back_in_order_of_completion() {
        let gate = Arc::new(Barrier::new(2));
        let g = gate.clone();
        let mut pool = Offload::new(1, 2, move |n: u32| {
            if n == 0 {
                g.wait();
            }
            n + 1
        })
        .unwrap();
        assert!(pool.submit(H, 0).is_ok());
        assert!(pool.submit(H, 1).is_ok());
        assert_eq!(pool.submit(H, 2), Err(2), "full: the job comes back");
        assert_eq!(pool.pending(), 2);
        gate.wait();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 2 && Instant::now() < deadline {
            match pool.try_result() {
                Some((h, r)) => {
                    assert_eq!(h, H);
                    got.push(r);
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert_eq!(got, vec![1, 2]);
        assert_eq!(pool.pending(), 0);
        assert!(pool.submit(H, 5).is_ok(), "room again");
        drop(pool); // joins its thread, dropping the unread result
    }
}
