//! A worker: one thread per NIC queue, pinned to one core, owning one [`Stack`] and one
//! [`Port`] and nothing else on the hot path.
//!
//! The loop is run-to-completion, one clock read per iteration:
//!
//! ```text
//! now ← monotonic clock
//! rx batches (≤ 16 × 64) → stack.ingress(now, frame in UMEM, tx) → frame back to the free list
//! ARP frames from the other workers → stack.ingress          (multi-queue only)
//! refill the fill ring
//! runtime hands the stack's events to the service (built-in or the user's)
//! stack.poll(now, tx)  — transmits what the service wrote, runs timers
//! flush: staged frames → tx ring, kick with sendto if the kernel needs it
//! reap completions → free list (flush and reap again, a few times, while frames wait)
//! idle? spin, or after SPIN_ROUNDS empty rounds sleep in poll(2) on the socket until a
//!       frame comes or the stack's or the services' next timer (at most MAX_SLEEP)
//! ```
//!
//! About once a millisecond the worker publishes its counters ([`crate::stats`]) with
//! relaxed stores, gives the XDP program its stack's SYN-cookie keys and pressure when
//! they changed (`control`), and takes the control thread's commands from its ring
//! (drain: stop accepting; sample: reply with some connections). It never waits on a ring: a full
//! reply ring drops the reply and counts it.
//!
//! When the stop flag is set the worker stops accepting, closes every connection with a
//! FIN (after the data already queued) and goes on serving until no connection is open
//! or closing, or the grace period ends: then it resets those left and leaves.
//!
//! # ARP across queues
//!
//! Each worker's stack has its own neighbour cache, but the NIC delivers an ARP reply on
//! whichever queue its hash picks — often not the queue of the worker that asked. So a
//! worker passes a copy of every ARP frame it receives to the others through bounded
//! channels (never blocking: full means dropped and counted), with the operation
//! rewritten to "reply" so that only the worker that received a request answers it and
//! the others just learn the sender's address.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use c10m_ebpf::Steering;
use c10m_stack::{Instant, ListenerId, Stack};

use crate::error::ParseError;
use crate::port::{MAX_RX_BATCH, Port};
use crate::service::Apps;
use crate::stats::LoopStats;

mod control;

use control::Control;
pub(crate) use control::Link;

/// Most rx batches per iteration: a loop that also fans out (a push fan-out step sends
/// up to 256 messages, each answered by an ACK), runs timers and transmits must still
/// read frames faster than they come, or the rx ring fills.
const RX_ROUNDS: u32 = 16;
/// Empty iterations before an adaptive worker sleeps.
const SPIN_ROUNDS: u32 = 256;
/// Longest sleep: bounds how late a worker notices the stop flag.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// Extra flush/kick/reap rounds per iteration while transmissions are in flight
/// ([`Port::push`]).
pub const KICK_ROUNDS: u32 = 8;
/// How often counters are published and commands taken.
const PUBLISH: c10m_stack::Duration = c10m_stack::Duration::from_millis(1);

/// Whether any connection is open or between a close and its end (TIME-WAIT excepted).
fn active(stack: &Stack) -> bool {
    use c10m_stack::State;
    let c = stack.counters();
    [
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
    ]
    .into_iter()
    .any(|s| c.in_state(s) > 0)
}

/// ARP frames that may wait for one worker.
pub(crate) const ARP_QUEUE: usize = 64;

/// What a worker does when there is no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idle {
    /// Spin a while, then sleep in `poll(2)` until a frame or a timer is due.
    #[default]
    Adaptive,
    /// Never sleep: lowest latency, one core at 100%.
    Spin,
}

impl std::str::FromStr for Idle {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "adaptive" => Ok(Idle::Adaptive),
            "spin" => Ok(Idle::Spin),
            _ => Err(ParseError::Idle(s.to_owned())),
        }
    }
}

/// The idle policy of a busy-polling loop over a [`Port`]: after each round, say whether
/// it did any work; after 256 empty rounds an [`Idle::Adaptive`] loop sleeps in `poll(2)`
/// on the socket (the kernel wakes it when a frame arrives, as with need_wakeup) until
/// the next deadline, at most 10 ms, or 100 µs while
/// transmissions are in flight (their completions do not wake `poll(2)`).
///
/// The workers use it, and so does any other loop that must idle exactly as they do
/// (`c10m-bench reflect`).
#[derive(Debug, Clone, Copy)]
pub struct Idler {
    idle: Idle,
    empty: u32,
}

impl Idler {
    /// A policy with no empty rounds yet.
    pub fn new(idle: Idle) -> Idler {
        Idler { idle, empty: 0 }
    }

    /// Ends a round: `work` says whether it received, sent or completed anything;
    /// `due_in` tells (asked only before a sleep, so a loop with nothing to do reads no
    /// clock for it) how soon the loop next has something to do on its own (a timer).
    /// Spins, or sleeps on `port`; returns whether it slept.
    pub fn rest(
        &mut self,
        work: bool,
        port: &Port,
        due_in: impl FnOnce() -> Option<Duration>,
    ) -> bool {
        if work {
            self.empty = 0;
            return false;
        }
        self.empty = self.empty.saturating_add(1);
        if self.idle == Idle::Spin || self.empty < SPIN_ROUNDS {
            std::hint::spin_loop();
            return false;
        }
        let mut sleep = MAX_SLEEP;
        if port.tx_in_flight() > 0 {
            sleep = Duration::from_micros(100);
        }
        if let Some(until) = due_in() {
            sleep = sleep.min(until);
        }
        let ms = sleep.as_millis() as i32;
        if ms == 0 {
            return false;
        }
        port.wait(ms);
        true
    }
}

/// The channels that carry ARP frames between workers.
#[derive(Debug)]
pub(crate) struct ArpMesh {
    pub(crate) inbox: Receiver<Box<[u8]>>,
    pub(crate) peers: Vec<SyncSender<Box<[u8]>>>,
}

/// Builds one mesh end per worker.
pub(crate) fn arp_mesh(workers: usize) -> Vec<ArpMesh> {
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| std::sync::mpsc::sync_channel(ARP_QUEUE))
        .unzip();
    inboxes
        .into_iter()
        .enumerate()
        .map(|(i, inbox)| ArpMesh {
            inbox,
            peers: senders
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, s)| s.clone())
                .collect(),
        })
        .collect()
}

/// An Ethernet ARP frame? (No VLAN: the steering program sees tags the NIC left.)
fn is_arp(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x08, 0x06]) && frame.len() >= 42
}

/// The monotonic clock, as the stack's `Instant`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(std::time::Instant);

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock(std::time::Instant::now())
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(self.0.elapsed().as_micros() as i64)
    }
}

/// Runs the loop until `stop` is set.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<S: c10m_apps::Service>(
    stack: &mut Stack,
    port: &mut Port,
    apps: &mut Apps<S>,
    mesh: &ArpMesh,
    clock: Clock,
    idle: Idle,
    stop: &AtomicBool,
    link: &mut Link,
    listeners: &[ListenerId],
    steering: &Steering,
) -> LoopStats {
    let mut stats = LoopStats::default();
    let mut idler = Idler::new(idle);
    let forward = !mesh.peers.is_empty();
    let mut stopping = false;
    let mut grace_until = None;
    let mut control = Control::new(steering);
    loop {
        stats.loops += 1;
        let now = clock.now();
        if now >= control.next {
            control.next = now + PUBLISH;
            control.serve(stack, port, apps, link, listeners, &stats, now);
        }
        if stop.load(Ordering::Relaxed) {
            if !stopping {
                stopping = true;
                control.drain(stack, listeners);
                apps.close_all(stack, now);
            }
            // The grace period counts from the last FIN of the paced close.
            if grace_until.is_none() && !apps.closing() {
                let grace = link.grace_ms.load(Ordering::Relaxed);
                grace_until = Some(now + c10m_stack::Duration::from_millis(grace));
            }
            if !active(stack) {
                control.serve(stack, port, apps, link, listeners, &stats, now);
                break;
            }
            if grace_until.is_some_and(|until| now >= until) {
                apps.abort_all(stack);
                stack.poll(now, &mut port.tx());
                port.flush();
                control.serve(stack, port, apps, link, listeners, &stats, now);
                break;
            }
        }
        let mut rx = 0;
        for _ in 0..RX_ROUNDS {
            let got = port.receive_batch(MAX_RX_BATCH as u32, |frames, tx| {
                if forward {
                    for frame in frames.iter().filter(|f| is_arp(f)) {
                        forward_arp(frame, &mesh.peers, &mut stats);
                    }
                }
                stack.ingress_batch(now, frames, tx);
            });
            rx += got;
            if got < MAX_RX_BATCH as u32 {
                break;
            }
        }
        let mut replayed = 0;
        if forward {
            while let Ok(frame) = mesh.inbox.try_recv() {
                replayed += 1;
                stack.ingress(now, &frame, &mut port.tx());
            }
            stats.arp_received += replayed;
        }
        port.refill();
        // Read as much as one iteration reads: more is waiting, so fan-outs slow down.
        apps.set_backlog(rx >= RX_ROUNDS * MAX_RX_BATCH as u32);
        apps.handle(stack, now);
        stack.poll(now, &mut port.tx());
        // Kick a few more times while frames wait, rather than one batch per round.
        let (sent, done) = port.push(KICK_ROUNDS);

        let work = rx > 0 || sent > 0 || done > 0 || replayed > 0;
        let due_in = || {
            let at = match (stack.poll_at(), apps.poll_at()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b)?,
            };
            Some(Duration::from_micros((at - now.min(at)).total_micros()))
        };
        if idler.rest(work, port, due_in) {
            stats.sleeps += 1;
        }
    }
    stats
}

/// Copies an ARP frame to every peer, as a reply (operation 2) so that peers only learn
/// from it.
fn forward_arp(frame: &[u8], peers: &[SyncSender<Box<[u8]>>], stats: &mut LoopStats) {
    let mut copy: Box<[u8]> = frame.into();
    copy[20..22].copy_from_slice(&[0, 2]);
    for peer in peers {
        match peer.try_send(copy.clone()) {
            Ok(()) => stats.arp_forwarded += 1,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => stats.arp_dropped += 1,
        }
    }
}

/// Pins the calling thread to `core`; logs (does not fail) if the core does not exist.
pub(crate) fn pin(core: usize) -> bool {
    let ok = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    if !ok {
        tracing::warn!("could not pin a worker to core {core}; it runs unpinned");
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_is_recognised_and_forwarded_as_a_reply() {
        let mut frame = [0u8; 42];
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        frame[20..22].copy_from_slice(&[0, 1]);
        assert!(is_arp(&frame));
        assert!(!is_arp(&frame[..30]), "too short for ARP");
        let mut mesh = arp_mesh(3);
        let mut stats = LoopStats::default();
        let first = mesh.remove(0);
        forward_arp(&frame, &first.peers, &mut stats);
        assert_eq!(stats.arp_forwarded, 2);
        for other in &mesh {
            let got = other.inbox.try_recv().unwrap();
            assert_eq!(&got[20..22], &[0, 2]);
        }
        assert!(first.inbox.try_recv().is_err(), "no copy to itself");
    }

    #[test]
    fn a_full_peer_drops_and_counts() {
        let mesh = arp_mesh(2);
        let mut frame = [0u8; 42];
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut stats = LoopStats::default();
        for _ in 0..ARP_QUEUE + 5 {
            forward_arp(&frame, &mesh[0].peers, &mut stats);
        }
        assert_eq!(stats.arp_forwarded, ARP_QUEUE as u64);
        assert_eq!(stats.arp_dropped, 5);
    }
}
