//! Messages to every worker: the one cross-worker channel of both stack and kernel
//! backends.
//!
//! A [`Fanout`] holds one bounded queue per worker. [`Fanout::publish`] puts a clone of a
//! [`Service::Command`](crate::Service::Command) on each of them, without ever waiting,
//! and each worker hands what its queue holds to its service's
//! [`on_command`](crate::Service::on_command) once per loop iteration, where the service
//! reaches its own connections through [`Conns`](crate::Conns). Anyone may publish: the
//! control path, another thread, or a handler on any worker (the worker's own queue
//! included), so a message that arrives on one worker's connection can reach connections
//! on every worker. Each backend makes one fanout for its workers and hands it to the
//! service factory ([`kernel::Server::start`](crate::kernel::Server::start), and
//! `c10m_dataplane::run_service`).
//!
//! A full queue (a worker that has [`QUEUE`] messages waiting) does not take the message:
//! `publish` says how many workers it reached and [`Fanout::dropped`] counts the
//! messages that did not reach a worker.
//!
//! A kernel-backend worker is woken at once; a dataplane worker takes its queue on its
//! next loop iteration, which is at most 10 ms away while it sleeps.
//!
//! ```
//! use c10m_apps::Fanout;
//!
//! let (fanout, inboxes) = Fanout::<String>::new(2);
//! assert_eq!(fanout.publish("hello".to_string()), 2);
//! for inbox in &inboxes {
//!     assert_eq!(inbox.try_recv().as_deref(), Some("hello"));
//!     assert_eq!(inbox.try_recv(), None);
//! }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};

/// Messages that may wait for one worker.
pub const QUEUE: usize = 4096;

/// One worker's queue, as the publishers see it.
#[derive(Debug)]
struct Queue<C> {
    tx: SyncSender<C>,
    waker: Option<Arc<mio::Waker>>,
}

/// Publishes a message to every worker's service (see the [module docs](self)). Cheap to
/// clone; every clone reaches the same workers.
#[derive(Debug)]
pub struct Fanout<C> {
    queues: Arc<[Queue<C>]>,
    dropped: Arc<AtomicU64>,
}

impl<C> Clone for Fanout<C> {
    fn clone(&self) -> Self {
        Fanout {
            queues: self.queues.clone(),
            dropped: self.dropped.clone(),
        }
    }
}

/// One worker's end of a [`Fanout`]: what its loop takes and gives to
/// [`on_command`](crate::Service::on_command).
#[derive(Debug)]
pub struct Inbox<C> {
    rx: Receiver<C>,
}

impl<C> Inbox<C> {
    /// The next waiting message, if any; never waits.
    pub fn try_recv(&self) -> Option<C> {
        self.rx.try_recv().ok()
    }
}

impl<C: Clone> Fanout<C> {
    /// A fanout to `workers` workers, each with a queue of [`QUEUE`] messages, and the
    /// workers' ends, by worker index. For backends: a service is given its backend's.
    pub fn new(workers: usize) -> (Fanout<C>, Vec<Inbox<C>>) {
        Self::with_wakers((0..workers).map(|_| None).collect())
    }

    /// One worker per waker, woken after each publish (the kernel backend's reactors).
    pub(crate) fn with_wakers(wakers: Vec<Option<Arc<mio::Waker>>>) -> (Self, Vec<Inbox<C>>) {
        let (queues, inboxes) = wakers
            .into_iter()
            .map(|waker| {
                let (tx, rx) = mpsc::sync_channel(QUEUE);
                (Queue { tx, waker }, Inbox { rx })
            })
            .unzip::<_, _, Vec<_>, Vec<_>>();
        let fanout = Fanout {
            queues: queues.into(),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (fanout, inboxes)
    }

    /// Queues `cmd` for every worker and wakes them; never waits. Returns how many
    /// workers it reached: fewer than [`workers`](Self::workers) when some queue was full
    /// (counted in [`dropped`](Self::dropped)) or its worker has stopped.
    pub fn publish(&self, cmd: C) -> usize {
        let mut reached = 0;
        for q in self.queues.iter() {
            match q.tx.try_send(cmd.clone()) {
                Ok(()) => {
                    reached += 1;
                    if let Some(w) = &q.waker {
                        let _ = w.wake();
                    }
                }
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        reached
    }

    /// How many workers it reaches.
    pub fn workers(&self) -> usize {
        self.queues.len()
    }

    /// Messages that did not reach a worker because its queue was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_and_the_others_still_get_it() {
        let (fanout, inboxes) = Fanout::<u32>::new(2);
        for i in 0..QUEUE as u32 {
            assert_eq!(fanout.publish(i), 2);
        }
        assert_eq!(inboxes[0].try_recv(), Some(0), "worker 0 takes one");
        assert_eq!(fanout.publish(7), 1, "worker 1's queue is full");
        assert_eq!(fanout.dropped(), 1);
        let mut last = None;
        while let Some(m) = inboxes[0].try_recv() {
            last = Some(m);
        }
        assert_eq!(last, Some(7), "worker 0 got it, in order");
        drop(inboxes);
        assert_eq!(
            fanout.publish(8),
            0,
            "stopped workers are not counted as drops"
        );
        assert_eq!(fanout.dropped(), 1);
    }
}
